#include "cluster/vmm_event_relay.h"

#include <chrono>
#include <fstream>
#include <optional>

#include "common/log.h"
#include "control/event_connection.h"
#include "storage/vm_runtime.h"

namespace keel::cluster {

namespace api = ::keel::agent::v1;
namespace pb = ::keel::api::v1;

namespace {

struct Relayed {
  uint64_t stream = 0;
  uint64_t seq = 0;
};

std::filesystem::path relayed_path(const std::string& vm) {
  return storage::vm_run_dir(vm) / "events.relayed";
}

std::optional<Relayed> read_relayed(const std::string& vm) {
  std::ifstream in(relayed_path(vm));
  Relayed r;
  if (in >> r.stream >> r.seq) return r;
  return std::nullopt;
}

void write_relayed(const std::string& vm, const Relayed& r) {
  const auto path = relayed_path(vm);
  const auto temporary = path.string() + ".new";
  {
    std::ofstream out(temporary, std::ios::trunc);
    out << r.stream << ' ' << r.seq << '\n';
    if (!out) return;  // the run directory went with its VMM
  }
  std::error_code ignored;
  std::filesystem::rename(temporary, path, ignored);
}

}  // namespace

VmmEventRelay::VmmEventRelay(std::function<void(api::ClusterEvent)> tell)
    : tell_(std::move(tell)) {}

VmmEventRelay::~VmmEventRelay() {
  stopping_ = true;
  std::map<std::string, std::thread> relays;
  {
    std::lock_guard lock(mutex_);
    relays.swap(relays_);
  }
  for (auto& [vm, thread] : relays) thread.join();
}

void VmmEventRelay::relay(const std::string& vm) {
  std::lock_guard lock(mutex_);
  if (stopping_) return;
  for (const auto& done : finished_) {
    if (auto it = relays_.find(done); it != relays_.end()) {
      it->second.join();
      relays_.erase(it);
    }
  }
  finished_.clear();
  if (relays_.count(vm)) return;
  relays_.emplace(vm, std::thread([this, vm] { run(vm); }));
}

void VmmEventRelay::run(const std::string& vm) {
  try {
    pb::EventsSubscribe subscribe;
    subscribe.set_from_oldest(true);
    EventConnection events(storage::vm_api_socket(vm).string(), subscribe, std::chrono::seconds(5));
    Relayed relayed{events.subscribed().stream(), 0};
    // The same process as before an agent's restart: what it told then
    // was relayed then.
    if (auto before = read_relayed(vm); before && before->stream == relayed.stream) {
      relayed.seq = before->seq;
    }
    pb::Event event;
    while (!stopping_) {
      if (!events.wait_for(event, std::chrono::seconds(1))) {
        if (!events.open()) break;
        continue;
      }
      if (event.seq() <= relayed.seq) continue;
      api::ClusterEvent told;
      told.set_type(api::CLUSTER_EVENT_VM_MACHINE);
      told.set_vm(vm);
      told.set_detail(event.detail());
      told.set_duration_us(event.duration_us());
      told.set_peer(event.peer());
      *told.mutable_machine() = event;
      tell_(std::move(told));
      relayed.seq = event.seq();
      write_relayed(vm, relayed);
    }
  } catch (const std::exception& e) {
    // Not listening yet, or gone: the keeper asks again while it runs.
    log::debug("VM " + vm + ": its events not relayed: " + e.what());
  }
  std::lock_guard lock(mutex_);
  finished_.insert(vm);
}

}  // namespace keel::cluster
