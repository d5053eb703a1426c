#include "migration/incoming_migration.h"

#include <fcntl.h>

#include <span>

#include "common/log.h"
#include "proto/migration.pb.h"

namespace keel::migration {

namespace mpb = ::keel::migration::v1;
namespace st = ::keel::state::v1;

namespace {

constexpr auto kStreamTimeout = std::chrono::seconds(30);

// Zero-page markers punch holes in the memory file, a run at a time: the
// page reads zero again and gives its memory back.
class ZeroRuns {
 public:
  ZeroRuns(int fd) : fd_(fd) {}
  ~ZeroRuns() {
    try {
      flush();
    } catch (...) {
    }
  }
  void add(uint64_t page) {
    if (count_ != 0 && page == start_ + count_) {
      ++count_;
      return;
    }
    flush();
    start_ = page;
    count_ = 1;
  }
  void flush() {
    if (count_ == 0) return;
    if (::fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                    static_cast<off_t>(start_ * kPageSize),
                    static_cast<off_t>(count_ * kPageSize)) != 0) {
      throw_errno("zeroing guest pages");
    }
    count_ = 0;
  }

 private:
  int fd_;
  uint64_t start_ = 0;
  uint64_t count_ = 0;
};

}  // namespace

IncomingMigration::IncomingMigration(const VmmOptions& options) : options_(options) {
  const TcpEndpoint endpoint = parse_tcp_endpoint(options.incoming, "--incoming");
  listener_ = listen_tcp(endpoint);
  const std::string text = endpoint.text;
  address_ = text.substr(0, text.rfind(':') + 1) + std::to_string(local_port(listener_.get()));
}

void IncomingMigration::refuse(const std::string& why) {
  try {
    mpb::Verdict verdict;
    verdict.set_ok(false);
    verdict.set_message(why);
    channel_->send(FrameType::kVerdict, verdict);
  } catch (const std::exception&) {
    // The source is gone: it learns nothing, and needs nothing.
  }
}

std::unique_ptr<Machine> IncomingMigration::build(const std::string& hello_bytes) {
  mpb::Hello hello;
  if (!hello.ParseFromString(hello_bytes)) throw StreamError("hello frame does not parse");
  if (hello.protocol_version() != kProtocolVersion) {
    throw InputError("the source speaks migration protocol " +
                     std::to_string(hello.protocol_version()) + ", this keel-vmm " +
                     std::to_string(kProtocolVersion));
  }
  if (hello.page_size() != kPageSize)
    throw InputError("the source's page size is " + std::to_string(hello.page_size()));
  VmmOptions shape = options_;
  shape.config = config_for_restore(options_, hello.config(), "migrating VM");
  auto machine = Machine::shape_only(shape);
  if (hello.memory_bytes() != machine->guest_memory().size()) {
    throw InputError("the source's guest memory is " + std::to_string(hello.memory_bytes()) +
                     " bytes, its configuration makes " +
                     std::to_string(machine->guest_memory().size()));
  }
  st::VmState fit;
  fit.set_schema_version(hello.state_schema_version());
  *fit.mutable_config() = hello.config();
  *fit.mutable_cpu() = hello.cpu();
  machine->check_shape_fits(fit);
  // Now, not once the guest is here: a socket that cannot be served must
  // refuse the migration, not strand a guest that already left its source.
  machine->open_control();
  return machine;
}

void IncomingMigration::receive_memory(Machine& machine) {
  GuestMemory& memory = machine.guest_memory();
  const std::span<uint8_t> ram = memory.host_all_for_write();
  // That marked every page the VMM's; nobody needs those marks. Dropped
  // now, not in the pause (they are a fresh bitmap's worth of memory).
  memory.dirty().harvest();
  const uint64_t memory_pages = memory.size() / kPageSize;
  ZeroRuns zeros(memory.fd());
  for (;;) {
    FrameChannel::Frame frame = channel_->receive();
    switch (frame.type) {
      case FrameType::kPages: {
        auto counts =
            decode_page_batch(frame.payload, memory_pages, [&](uint64_t page, const uint8_t* data) {
              if (data == nullptr) return zeros.add(page);
              std::memcpy(ram.data() + page * kPageSize, data, kPageSize);
            });
        zeros.flush();
        pages_ += counts.pages;
        zero_pages_ += counts.zero_pages;
        break;
      }
      case FrameType::kSync:
        if (!frame.payload.empty()) throw StreamError("sync frame with a payload");
        channel_->send(FrameType::kSynced);
        break;
      case FrameType::kTotals: {
        mpb::Totals totals;
        if (!totals.ParseFromArray(frame.payload.data(), static_cast<int>(frame.payload.size())))
          throw StreamError("totals frame does not parse");
        if (totals.pages_sent() != pages_ || totals.zero_pages_sent() != zero_pages_) {
          throw StreamError("the source sent " + std::to_string(totals.pages_sent()) + "+" +
                            std::to_string(totals.zero_pages_sent()) + " pages, " +
                            std::to_string(pages_) + "+" + std::to_string(zero_pages_) +
                            " arrived");
        }
        pause_began_ = std::chrono::steady_clock::now();
        step("totals checked");
        return;
      }
      case FrameType::kCancel: {
        mpb::Verdict why;
        why.ParseFromArray(frame.payload.data(), static_cast<int>(frame.payload.size()));
        throw StreamError("the source cancelled the migration: " + peer_says(why.message()));
      }
      default:
        throw StreamError(std::string("unexpected ") + frame_name(frame.type) +
                          " frame while receiving memory");
    }
  }
}

std::unique_ptr<Machine> IncomingMigration::receive(const std::atomic<bool>& stop,
                                                    const std::function<void(Machine&)>& built) {
  std::string peer;
  UniqueFd socket = accept_tcp(listener_.get(), stop, &peer);
  if (!socket.valid()) return nullptr;
  listener_.reset();  // one migration: nobody else gets in
  log::info("migration from " + peer + " coming in");
  channel_ = std::make_unique<FrameChannel>(std::move(socket), "the source", kStreamTimeout);
  channel_->expect_magic();

  std::unique_ptr<Machine> machine;
  {
    FrameChannel::Frame frame = channel_->receive();
    if (frame.type != FrameType::kHello)
      throw StreamError(std::string("expected hello, got ") + frame_name(frame.type));
    try {
      machine = build(std::string(frame.payload.begin(), frame.payload.end()));
    } catch (const InputError& e) {
      refuse(e.what());
      throw;
    }
    mpb::Verdict yes;
    yes.set_ok(true);
    channel_->send(FrameType::kVerdict, yes);
  }
  if (built) built(*machine);
  // The pause's code run once beforehand, on this machine before the
  // guest is here.
  machine->rehearse_incoming();
  machine->start_vcpus_parked();

  receive_memory(*machine);

  FrameChannel::Frame frame = channel_->receive();
  if (frame.type == FrameType::kCancel)
    throw StreamError("the source cancelled the migration after its memory");
  if (frame.type != FrameType::kState)
    throw StreamError(std::string("expected state, got ") + frame_name(frame.type));
  st::VmState state;
  if (!state.ParseFromArray(frame.payload.data(), static_cast<int>(frame.payload.size())))
    throw StreamError("state frame does not parse");
  step("state received");
  try {
    machine->apply_state(state);
  } catch (const InputError& e) {
    refuse(std::string("state refused: ") + e.what());
    throw;
  }
  step("state applied");
  channel_->send(FrameType::kReady);
  frame = channel_->receive();
  step("go received");
  if (frame.type == FrameType::kCancel)
    throw StreamError("the source cancelled the migration before the handover");
  if (frame.type != FrameType::kGo)
    throw StreamError(std::string("expected go, got ") + frame_name(frame.type));
  // The source let go of the images; another holder means the guest must
  // not run here (the source, not told it runs, stays paused).
  machine->claim_disks();
  machine->release_parked_vcpus();
  step("disks claimed, vCPUs released");
  return machine;
}

void IncomingMigration::step(const char* what) const {
  if (!log::enabled(log::Level::kDebug)) return;  // no message made for nobody
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(
      std::chrono::steady_clock::now() - pause_began_);
  log::debug(std::string("incoming pause: ") + what + " at " + std::to_string(us.count()));
}

void IncomingMigration::confirm_running() {
  step("vCPUs started");
  try {
    channel_->send(FrameType::kRunning);
  } catch (const std::exception& e) {
    // The source let go at "go": the guest runs here either way.
    log::warning(std::string("could not tell the source the guest runs: ") + e.what());
  }
  channel_.reset();
}

}  // namespace keel::migration
