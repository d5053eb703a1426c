#include "cluster/host_vms.h"

#include <signal.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include "cluster/agent_client.h"
#include "cluster/agent_error.h"
#include "cluster/cluster_event_log.h"
#include "cluster/cluster_keys.h"
#include "cluster/etcd_records.h"
#include "cluster/vmm_launch.h"
#include "common/error.h"
#include "common/log.h"
#include "common/tcp_endpoint.h"
#include "control/control_client.h"
#include "storage/json_record.h"
#include "storage/vm_runtime.h"

namespace keel::cluster {

namespace api = keel::agent::v1;
namespace fs = std::filesystem;

namespace {

constexpr auto kStopGrace = std::chrono::seconds(10);
constexpr size_t kFileChunk = 256 << 10;
// Fetching a VM's boot files (tens of MiB) from its storage host.
constexpr auto kFetchTimeout = std::chrono::seconds(120);
// What a storage host may send: a kernel and an initrd are tens of MiB;
// more is a broken or hostile peer filling this host's state directory.
constexpr uint64_t kMaxSettingsBytes = uint64_t{1} << 20;
constexpr uint64_t kMaxBootFilesBytes = uint64_t{1} << 30;

storage::VmSpec spec_of(const api::VmCreateRequest& r) {
  storage::VmSpec spec;
  spec.name = r.name();
  spec.image = r.image();
  if (r.cpus() != 0) spec.cpus = r.cpus();
  if (r.memory_bytes() != 0) spec.memory_bytes = r.memory_bytes();
  spec.disk_bytes = r.disk_bytes();
  spec.hostname = r.hostname();
  spec.address = r.address();
  spec.gateway = r.gateway();
  spec.ssh_keys.assign(r.ssh_keys().begin(), r.ssh_keys().end());
  if (r.user_data_given()) spec.user_data = r.user_data();
  spec.tap = r.tap();
  return spec;
}

}  // namespace

HostVms::HostVms(HostVmsContext context, std::optional<storage::VmStore> store)
    : context_(std::move(context)), store_(std::move(store)) {
  supervisor_ =
      std::make_unique<VmmSupervisor>([this](const VmmSupervisor::Ended& e) { ended(e); });
  if (store_) health_.emplace(store_->pool().path().string(), context_.pool_min_free);
  relay_ = std::make_unique<VmmEventRelay>(
      [this](api::ClusterEvent event) { context_.tell(std::move(event)); });
}

HostVms::~HostVms() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (keeper_.joinable()) keeper_.join();
  relay_.reset();  // the keeper started the relays
  if (replica_watch_.joinable()) replica_watch_.join();
  // A switchover under way ends within its own limit.
  if (handover_.joinable()) handover_.join();
  // A first sync may take long: ended, so that the agent stops at once
  // (its successor protects the VM again).
  for (auto& [name, thread] : protecting_) {
    try {
      stop_replication(name);
    } catch (const std::exception&) {
      // Not answering: the thread's own call times out.
    }
    thread.join();
  }
  if (nbd_) nbd_->stop();
  if (nbd_thread_.joinable()) nbd_thread_.join();
  supervisor_.reset();
}

void HostVms::serve_nbd(const std::string& address) {
  if (!store_) return;
  if (nbd_) nbd_->stop();
  if (nbd_thread_.joinable()) nbd_thread_.join();
  nbd_.reset();
  std::shared_ptr<ClusterNbdCatalog> catalog;
  {
    std::lock_guard lock(mutex_);
    if (!catalog_) {
      catalog_ = std::make_shared<ClusterNbdCatalog>(*store_, [this] { return owner_addresses(); });
    }
    catalog = catalog_;
  }
  nbd_ = std::make_unique<storage::NbdServer>(
      catalog, parse_host_port(host_port(address, kNbdPort), "the NBD address"));
  nbd_thread_ = std::thread([server = nbd_.get()] { server->run(); });
  log::info("serving this pool's VM disks over NBD at " + host_port(address, kNbdPort) +
            " to their owners");
}

ClusterNbdCatalog::Holders HostVms::owner_addresses() {
  auto etcd = context_.etcd();
  std::map<std::string, std::string> address;
  for (const auto& kv : etcd->list(kHostsPrefix)) {
    api::Host host;
    if (from_json(kv.value, &host)) address[host.name()] = host.cluster_address();
  }
  ClusterNbdCatalog::Holders out;
  for (const auto& kv : etcd->list(kOwnersPrefix)) {
    api::Owner owner;
    if (!from_json(kv.value, &owner)) continue;
    auto& holders = out[kv.key.substr(kOwnersPrefix.size())];
    holders.insert(address[owner.host()]);
    if (!owner.migrating_to().empty()) holders.insert(address[owner.migrating_to()]);
  }
  return out;
}

std::string HostVms::address_of(const std::string& name) {
  auto host = read_record<api::Host>(*context_.etcd(), kHostsPrefix + name, nullptr);
  if (!host) throw refused("no host named '" + name + "' in the cluster");
  return host->cluster_address();
}

void HostVms::send_files(const api::VmFilesRequest& request,
                         const std::function<bool(const api::VmFileChunk&)>& each) {
  const std::string& name = request.name();
  require_store();
  store_->get(name);  // InputError when it is not a VM of this pool
  const fs::path current = store_->current(name);
  std::vector<std::string> files{"vm.json", "kernel", "initrd"};
  if (request.seed()) files.push_back("seed.img");
  for (const std::string& file : files) {
    std::ifstream in(current / file, std::ios::binary);
    if (!in) {
      if (file == "initrd") continue;
      throw AgentError(AgentError::Code::kInternal,
                       "VM " + name + ": cannot read its " + file + " in this pool");
    }
    std::string buffer(kFileChunk, '\0');
    bool last = false;
    while (!last) {
      in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
      const auto got = static_cast<size_t>(in.gcount());
      last = got < buffer.size();
      api::VmFileChunk chunk;
      chunk.set_file(file);
      chunk.set_data(buffer.data(), got);
      chunk.set_last(last);
      if (!each(chunk)) throw AgentError(AgentError::Code::kUnavailable, "the receiver went away");
    }
  }
}

std::set<std::string> HostVms::download_files(const std::string& name,
                                              const std::string& storage_address,
                                              const fs::path& into, bool seed,
                                              keel::pool::v1::Vm* vm) {
  fs::remove_all(into);
  fs::create_directories(into);
  std::map<std::string, std::ofstream> out;
  std::set<std::string> whole;
  uint64_t received = 0, settings = 0;
  AgentClient client(host_port(storage_address, kAgentPort), kFetchTimeout, context_.peer_tls());
  api::VmFilesRequest request;
  request.set_name(name);
  request.set_seed(seed);
  client.host_vm_files(request, [&](const api::VmFileChunk& chunk) {
    const std::string& file = chunk.file();
    if (file != "vm.json" && file != "kernel" && file != "initrd" &&
        (!seed || file != "seed.img")) {
      throw AgentError(AgentError::Code::kInternal, "the storage host sent a file '" + file + "'");
    }
    if (whole.count(file)) {
      throw AgentError(AgentError::Code::kInternal,
                       "the storage host sent " + file + " again after its last chunk");
    }
    received += chunk.data().size();
    if (file == "vm.json") settings += chunk.data().size();
    if (settings > kMaxSettingsBytes || received > kMaxBootFilesBytes) {
      throw AgentError(AgentError::Code::kInternal,
                       "VM " + name + ": its storage host sent more than " +
                           (settings > kMaxSettingsBytes ? "1 MiB of settings (vm.json)"
                                                         : "1 GiB of boot files") +
                           ": refused");
    }
    auto& stream = out[file];
    if (!stream.is_open()) stream.open(into / file, std::ios::binary | std::ios::trunc);
    stream.write(chunk.data().data(), static_cast<std::streamsize>(chunk.data().size()));
    if (!stream) throw std::runtime_error("cannot write " + (into / file).string());
    if (chunk.last()) {
      stream.close();
      whole.insert(file);
    }
  });
  if (!whole.count("vm.json") || !whole.count("kernel") || (seed && !whole.count("seed.img"))) {
    throw AgentError(AgentError::Code::kInternal,
                     "VM " + name + ": its storage host sent no whole vm.json and kernel" +
                         (seed ? " and seed disk" : ""));
  }
  storage::read_json_record(into / "vm.json", vm);
  if (vm->name() != name) {
    throw AgentError(AgentError::Code::kInternal, "VM " + name + ": its vm.json names another");
  }
  return whole;
}

storage::VmFiles HostVms::fetch_files(const std::string& name, const std::string& storage_address,
                                      keel::pool::v1::Vm* vm) {
  const fs::path dir = fs::path(context_.vms_dir) / name;
  const fs::path incoming = dir / ".incoming";
  fs::create_directories(dir);
  ::chmod(dir.c_str(), 0700);
  // What came is not kept when the fetch fails.
  struct Scratch {
    fs::path path;
    ~Scratch() {
      std::error_code ignored;
      fs::remove_all(path, ignored);
    }
  } scratch{incoming};
  const std::set<std::string> whole = download_files(name, storage_address, incoming, false, vm);
  fs::create_directories(dir / "boot");
  fs::remove(dir / "boot" / "initrd");
  for (const auto& file : whole) fs::rename(incoming / file, dir / "boot" / file);
  storage::VmFiles files;
  files.kernel = (dir / "boot" / "kernel").string();
  if (whole.count("initrd")) files.initrd = (dir / "boot" / "initrd").string();
  const std::string nbd = "nbd=tcp:" + host_port(storage_address, kNbdPort) + "/";
  files.disk = nbd + name;
  files.seed = nbd + name + "/seed";
  files.console = dir / "console.log";
  files.memory_root = dir / "memory";
  return files;
}

std::map<std::string, pid_t> HostVms::running() const {
  return supervisor_->running();
}

void HostVms::require_store() const {
  if (!store_) throw refused("host " + context_.host + " has no pool (keel-agent --pool)");
}

api::ClusterVm HostVms::create(const api::VmCreateRequest& request) {
  require_store();
  auto etcd = context_.etcd();
  const std::string key = kVmsPrefix + request.name();
  if (etcd->get(key)) throw refused("a VM named '" + request.name() + "' exists in the cluster");
  auto made = store_->create(spec_of(request));
  api::ClusterVm vm;
  vm.set_name(made.name());
  vm.set_storage_host(context_.host);
  vm.set_image(made.image());
  vm.set_cpus(made.cpus());
  vm.set_memory_bytes(made.memory_bytes());
  vm.set_created_at(made.created_at());
  etcdserverpb::TxnRequest txn;
  *txn.add_compare() = EtcdClient::key_absent(key);
  *txn.add_success() = EtcdClient::put_op(key, to_json(vm));
  bool stored = false;
  try {
    stored = etcd->txn(txn).succeeded();
  } catch (...) {
    // Unknown whether it went in: the pool's VM stays only if it did.
    try {
      auto kv = etcd->get(key);
      api::ClusterVm there;
      if (kv && from_json(kv->value, &there) && there.storage_host() == context_.host &&
          there.created_at() == vm.created_at()) {
        return there;
      }
      store_->remove(vm.name());
    } catch (const std::exception& e) {
      log::error("VM " + vm.name() + ": left in the pool, not known in etcd: " + e.what());
    }
    throw;
  }
  if (!stored) {
    store_->remove(vm.name());
    throw refused("a VM named '" + request.name() + "' exists in the cluster");
  }
  log::info("VM " + vm.name() + " created in this host's pool");
  return vm;
}

void HostVms::remove(const std::string& name) {
  require_store();
  auto etcd = context_.etcd();
  int64_t revision = 0;
  auto vm = read_record<api::ClusterVm>(*etcd, kVmsPrefix + name, &revision);
  if (!vm) throw refused("no VM named '" + name + "' in the cluster");
  if (vm->storage_host() != context_.host) {
    throw refused("VM " + name + " is stored on host " + vm->storage_host() + ", not here");
  }
  etcdserverpb::TxnRequest txn;
  *txn.add_compare() = EtcdClient::key_absent(kOwnersPrefix + name);
  *txn.add_compare() = EtcdClient::key_absent(kIncomingPrefix + name);
  *txn.add_compare() = EtcdClient::key_mod_revision(kVmsPrefix + name, revision);
  *txn.add_success() = EtcdClient::delete_op(kVmsPrefix + name);
  if (!etcd->txn(txn).succeeded()) {
    if (auto owner = read_record<api::Owner>(*etcd, kOwnersPrefix + name, nullptr)) {
      throw refused("VM " + name + " runs on host " + owner->host() + ": stop it first");
    }
    if (auto mark = read_record<api::Owner>(*etcd, kIncomingPrefix + name, nullptr)) {
      throw refused("VM " + name + " is arriving on host " + mark->host() +
                    " (a live migration under way)");
    }
    throw refused("VM " + name + " changed meanwhile: try again");
  }
  store_->remove(name);
  log::info("VM " + name + " deleted");
}

uint64_t HostVms::claim(const std::string& name) {
  const int64_t lease = context_.lease();
  if (lease == 0) throw refused("host " + context_.host + " holds no lease yet");
  auto etcd = context_.etcd();
  int64_t revision = 0;
  auto vm = read_record<api::ClusterVm>(*etcd, kVmsPrefix + name, &revision);
  if (!vm) throw refused("no VM named '" + name + "' in the cluster");
  api::Owner owner;
  owner.set_host(context_.host);
  owner.set_generation(vm->generation() + 1);
  owner.set_since(storage::utc_now());
  vm->set_generation(owner.generation());
  vm->set_last_host(context_.host);
  // A migration's destination holds the VM until its guest runs there or
  // it gives up; only that host takes it (its own mark goes then).
  const std::string incoming_key = kIncomingPrefix + name;
  int64_t incoming_revision = 0;
  auto arriving = read_record<api::Owner>(*etcd, incoming_key, &incoming_revision);
  auto refuse_arriving = [&](const api::Owner& at) {
    return refused("VM " + name + " is arriving on host " + at.host() +
                   " (a live migration under way)");
  };
  if (arriving && arriving->host() != context_.host) throw refuse_arriving(*arriving);
  etcdserverpb::TxnRequest txn;
  *txn.add_compare() = EtcdClient::key_absent(kOwnersPrefix + name);
  *txn.add_compare() = EtcdClient::key_mod_revision(kVmsPrefix + name, revision);
  *txn.add_compare() = arriving ? EtcdClient::key_mod_revision(incoming_key, incoming_revision)
                                : EtcdClient::key_absent(incoming_key);
  *txn.add_success() = EtcdClient::put_op(kVmsPrefix + name, to_json(*vm));
  *txn.add_success() = EtcdClient::put_op(kOwnersPrefix + name, to_json(owner), lease);
  if (arriving) *txn.add_success() = EtcdClient::delete_op(incoming_key);
  if (etcd->txn(txn).succeeded()) return owner.generation();
  if (auto holder = read_record<api::Owner>(*etcd, kOwnersPrefix + name, nullptr)) {
    throw refused("VM " + name + " runs on host " + holder->host() + " (generation " +
                  std::to_string(holder->generation()) + ")");
  }
  if (auto at = read_record<api::Owner>(*etcd, incoming_key, nullptr);
      at && at->host() != context_.host) {
    throw refuse_arriving(*at);
  }
  throw refused("VM " + name + " changed meanwhile: try again");
}

bool HostVms::migration_over(const std::string& name) {
  {
    std::lock_guard lock(mutex_);
    if (migrating_out_.count(name)) return false;
  }
  return !context_.etcd()->get(kIncomingPrefix + name);
}

bool HostVms::release(const std::string& name, uint64_t generation) {
  auto etcd = context_.etcd();
  int64_t revision = 0;
  auto owner = read_record<api::Owner>(*etcd, kOwnersPrefix + name, &revision);
  if (!owner || owner->host() != context_.host || owner->generation() != generation) return true;
  // A migration under way, or its destination may still run the guest:
  // the record goes to the destination, or back to plain ownership, first.
  if (!owner->migrating_to().empty() && !migration_over(name)) return false;
  etcdserverpb::TxnRequest txn;
  *txn.add_compare() = EtcdClient::key_mod_revision(kOwnersPrefix + name, revision);
  *txn.add_success() = EtcdClient::delete_op(kOwnersPrefix + name);
  return etcd->txn(txn).succeeded();
}

api::VmStartResponse HostVms::start(const std::string& name) {
  if (context_.fenced()) {
    throw refused("host " + context_.host + " is fenced (its lease is not being renewed)");
  }
  auto record = read_record<api::ClusterVm>(*context_.etcd(), kVmsPrefix + name, nullptr);
  if (!record) throw refused("no VM named '" + name + "' in the cluster");
  const bool vmm_here = running().count(name) > 0;  // adopted, not yet looked at
  {
    std::lock_guard lock(mutex_);
    if (vmm_here || generations_.count(name) || starting_.count(name) || incoming_.count(name)) {
      throw refused("VM " + name + " runs on this host already");
    }
    starting_.insert(name);
  }
  struct Done {
    HostVms* self;
    std::string name;
    ~Done() {
      std::lock_guard lock(self->mutex_);
      self->starting_.erase(name);
    }
  } done{this, name};
  auto [vm, files, log] = prepare(*record);
  const uint64_t generation = claim(name);
  {
    std::lock_guard lock(mutex_);
    generations_[name] = generation;
    to_release_.erase(name);
  }
  try {
    remember_generation(name, generation);
    std::shared_ptr<ClusterNbdCatalog> catalog;
    {
      std::lock_guard lock(mutex_);
      catalog = catalog_;
    }
    if (catalog && record->storage_host() == context_.host) {
      // Its disks opened here, not over NBD: whoever had them over NBD
      // writes no more, now rather than at the keeper's next look.
      catalog->revoke_all(name);
    }
    std::vector<std::string> argv{vmm_program()};
    for (auto& a : storage::vmm_arguments(vm, files)) argv.push_back(std::move(a));
    argv.push_back("--fence-file");
    argv.push_back(context_.fence_file);
    const pid_t pid = supervisor_->start({name, argv, log, {}});
    if (!vm.resume_from().empty()) store_->forget_resume_state(name);
    log::info("VM " + name + " started (keel-vmm " + std::to_string(pid) + ", generation " +
              std::to_string(generation) + ")");
    context_.tell(cluster_event(api::CLUSTER_EVENT_VM_STARTED, name,
                                "VM " + name + " started on host " + context_.host +
                                    (vm.resume_from().empty() ? "" : " from its saved state")));
    api::VmStartResponse out;
    out.set_host(context_.host);
    out.set_generation(generation);
    out.set_pid(static_cast<uint32_t>(pid));
    out.set_socket(storage::vm_api_socket(name).string());
    return out;
  } catch (...) {
    {
      std::lock_guard lock(mutex_);
      generations_.erase(name);
    }
    try {
      if (!release(name, generation)) log::error("VM " + name + ": owner record left behind");
    } catch (const std::exception& e) {
      std::lock_guard lock(mutex_);
      to_release_[name] = generation;
    }
    throw;
  }
}

api::VmStatus HostVms::status(const std::string& name) {
  if (!running().count(name)) throw refused("VM " + name + " is not running on this host");
  keel::api::v1::Request ask;
  ask.mutable_status();
  api::VmStatus out;
  try {
    auto answer = call_vmm(name, ask, std::chrono::seconds(2));
    if (!answer.ok()) {
      out.set_state("not known: " + answer.error().message());
      return out;
    }
    const auto& s = answer.status();
    out.set_pid(s.pid());
    out.set_uptime_ms(s.uptime_ms());
    switch (s.state()) {
      case keel::api::v1::RUN_STATE_RUNNING:
        out.set_state("running");
        break;
      case keel::api::v1::RUN_STATE_PAUSED:
        out.set_state(s.paused_by_fence() ? "paused by its host's fence" : "paused");
        break;
      case keel::api::v1::RUN_STATE_SHUTTING_DOWN:
        out.set_state("shutting down");
        break;
      case keel::api::v1::RUN_STATE_STOPPED:
        out.set_state("stopped (" + s.stop_reason() + ")");
        break;
      default:
        out.set_state("starting");
    }
  } catch (const ControlClientError& e) {
    out.set_state(std::string("not known: its keel-vmm did not answer: ") + e.what());
  }
  return out;
}

HostVms::Prepared HostVms::prepare(const api::ClusterVm& record) {
  const std::string& name = record.name();
  Prepared out;
  if (record.storage_host() == context_.host) {
    require_store();
    out.vm = store_->get(name);
    out.files = storage::local_vm_files(*store_, out.vm);
    out.log = store_->path(name) / "keel-vmm.log";
  } else {
    // Its boot files from its storage host; its disks over NBD from there,
    // opened once this host owns the VM.
    out.files = fetch_files(name, address_of(record.storage_host()), &out.vm);
    if (!out.vm.resume_from().empty()) {
      throw refused("VM " + name + " resumes from a memory snapshot kept on host " +
                    record.storage_host() + ": start it there");
    }
    out.log = fs::path(context_.vms_dir) / name / "keel-vmm.log";
  }
  fs::create_directories(out.files.memory_root);
  ::chmod(out.files.memory_root.c_str(), 0700);
  return out;
}

void HostVms::stop(const api::VmStopRequest& request) {
  const auto all = running();
  auto it = all.find(request.name());
  if (it == all.end()) throw refused("VM " + request.name() + " is not running on this host");
  // No new replica starts while it stops.
  NameHold stopping(*this, stopping_vms_, request.name());
  if (!stopping.held()) throw refused("VM " + request.name() + " is being stopped already");
  // An HA VM's replica ends first: keel-vmm shuts down no replicated guest,
  // and the passive drops a copy whose active ended it on purpose.
  if (!request.force()) {
    try {
      end_replication(request.name());
    } catch (const AgentError&) {
      throw;
    } catch (const std::exception&) {
      // Not answering, or stopping already: the shutdown below finds out.
    }
  }
  keel::api::v1::Request vmm_request;
  const uint32_t timeout_ms = request.timeout_ms() != 0 ? request.timeout_ms() : 60000;
  if (request.force()) {
    vmm_request.mutable_kill();
  } else {
    vmm_request.mutable_shutdown()->set_timeout_ms(timeout_ms);
  }
  try {
    // A replication that just ended keeps the machine busy for a moment.
    const auto busy_until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    for (;;) {
      auto response =
          call_vmm(request.name(), vmm_request, std::chrono::milliseconds(timeout_ms) + kStopGrace);
      if (response.ok()) break;
      if (response.error().code() != keel::api::v1::ERROR_CODE_BUSY ||
          std::chrono::steady_clock::now() > busy_until) {
        throw refused("VM " + request.name() + ": " + response.error().message());
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      // A protection that was past its last look when the stop began.
      if (!request.force()) {
        try {
          end_replication(request.name());
        } catch (const std::exception&) {
          // Tried again with the shutdown.
        }
      }
    }
  } catch (const ControlClientError& e) {
    // A VMM that does not answer is ended the hard way.
    log::warning("VM " + request.name() + ": " + e.what() + "; killing its keel-vmm");
    ::kill(it->second, SIGKILL);
  }
  // The answer comes as the machine stops; the process ends right after.
  const auto until = std::chrono::steady_clock::now() + kStopGrace;
  while (running().count(request.name()) && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (running().count(request.name())) {
    throw AgentError(AgentError::Code::kInternal, "keel-vmm " + std::to_string(it->second) +
                                                      " of VM " + request.name() + " still runs " +
                                                      std::to_string(kStopGrace.count()) +
                                                      " s after it was told to stop");
  }
  context_.tell(cluster_event(api::CLUSTER_EVENT_VM_STOPPED, request.name(),
                              "VM " + request.name() + " stopped on host " + context_.host +
                                  (request.force() ? " (killed)" : "")));
}

}  // namespace keel::cluster
