#include "migration/incoming_migration.h"

#include <span>

#include "common/log.h"
#include "migration/page_writer.h"
#include "migration/stream_hello.h"
#include "proto/migration.pb.h"

namespace keel::migration {

namespace mpb = ::keel::migration::v1;
namespace st = ::keel::state::v1;

namespace {

constexpr auto kStreamTimeout = std::chrono::seconds(30);

}  // namespace

IncomingMigration::IncomingMigration(const VmmOptions& options) : options_(options) {
  const TcpEndpoint endpoint = parse_tcp_endpoint(options.incoming, "--incoming");
  listener_ = listen_tcp(endpoint);
  const std::string text = endpoint.text;
  address_ = text.substr(0, text.rfind(':') + 1) + std::to_string(local_port(listener_.get()));
}

void IncomingMigration::refuse(const std::string& why) {
  refuse_stream(*channel_, why);
}

std::unique_ptr<Machine> IncomingMigration::build(std::span<const uint8_t> hello) {
  auto machine = machine_for_hello(options_, hello, false);
  // Now, not once the guest is here: a socket that cannot be served must
  // refuse the migration, not strand a guest that already left its source.
  machine->open_control();
  return machine;
}

void IncomingMigration::receive_memory(Machine& machine) {
  PageWriter writer(machine.guest_memory());
  for (;;) {
    FrameChannel::Frame frame = channel_->receive();
    switch (frame.type) {
      case FrameType::kPages: {
        const PageBatchCounts counts = writer.write(frame.payload);
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

  std::unique_ptr<Machine> machine =
      answer_hello(*channel_, [this](std::span<const uint8_t> hello) { return build(hello); });
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
