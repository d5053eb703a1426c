#include "migration/replica_receiver.h"

#include <future>

#include "common/log.h"
#include "migration/event_loop_call.h"
#include "migration/page_writer.h"
#include "migration/run_permit.h"
#include "migration/stream_hello.h"
#include "proto/migration.pb.h"
#include "vmm/jail/syscall_filter.h"

namespace keel::migration {

namespace pb = ::keel::api::v1;
namespace mpb = ::keel::migration::v1;
namespace st = ::keel::state::v1;
using Clock = std::chrono::steady_clock;

namespace {

// Until the first epoch: silence this long means the active is gone or cut
// off (there is nothing to take over yet).
constexpr auto kStreamTimeout = std::chrono::seconds(10);
uint64_t ms_since(Clock::time_point t) {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count());
}

}  // namespace

ReplicaReceiver::ReplicaReceiver(const VmmOptions& options) : options_(options) {
  if (options.jail) {
    throw InputError(
        "--replica-of does not run jailed yet (--jail): the takeover opens files and sockets");
  }
  const TcpEndpoint endpoint = parse_tcp_endpoint(options.replica_of, "--replica-of");
  listener_ = listen_tcp(endpoint);
  const std::string text = endpoint.text;
  address_ = text.substr(0, text.rfind(':') + 1) + std::to_string(local_port(listener_.get()));
}

ReplicaReceiver::~ReplicaReceiver() {
  if (channel_) channel_->shutdown();
  if (thread_.joinable()) thread_.join();
}

void ReplicaReceiver::refuse(const std::string& why) {
  refuse_stream(*channel_, why);
}

std::unique_ptr<Machine> ReplicaReceiver::accept(const std::atomic<bool>& stop,
                                                 const std::function<void(Machine&)>& built) {
  UniqueFd socket = accept_tcp(listener_.get(), stop, &peer_);
  if (!socket.valid()) return nullptr;
  listener_.reset();  // one active: nobody else gets in
  log::info("replica stream from " + peer_ + " coming in");
  channel_ = std::make_unique<FrameChannel>(std::move(socket), "the active", kStreamTimeout);
  channel_->expect_magic();
  std::unique_ptr<Machine> machine =
      answer_hello(*channel_, [this](std::span<const uint8_t> hello) {
        auto made = machine_for_hello(options_, hello, true);
        open_disks(hello, *made);
        made->open_control();
        return made;
      });
  if (built) built(*machine);
  // Takeover runs apply_state: run it once now, before the guest is here.
  machine->rehearse_incoming();
  machine->start_vcpus_parked();
  machine->hold_as_replica();
  return machine;
}

// The copies this host keeps of the active's writable disks: this command
// line's --disk files, each the active's size, held (image lock) from now
// on: a passive given the active's own image (shared storage) is refused
// here, since applying epochs to it would undo the active's writes.
void ReplicaReceiver::open_disks(std::span<const uint8_t> hello_bytes, Machine& machine) {
  migration::v1::Hello hello;
  hello.ParseFromArray(hello_bytes.data(), static_cast<int>(hello_bytes.size()));
  takeover_after_ = passive_silence_limit(hello.run_permit_ms());
  const auto& disks = machine.config().disks();
  if (hello.disk_bytes_size() != disks.size()) {
    throw StreamError("the hello names " + std::to_string(hello.disk_bytes_size()) +
                      " disk sizes for " + std::to_string(disks.size()) + " disks");
  }
  for (int i = 0; i < disks.size(); ++i) {
    const uint64_t bytes = hello.disk_bytes(i);
    disk_blocks_.push_back(bytes / kPageSize);
    if (bytes == 0) {
      disks_.push_back(nullptr);
      continue;
    }
    if (bytes % kPageSize != 0) throw StreamError("a disk size that is not whole 4 KiB blocks");
    if (disks[i].path().empty()) {
      throw InputError("the passive's disk " + std::to_string(i) +
                       " is on NBD: a replica keeps its own copy in a file");
    }
    disks_.push_back(std::make_unique<DiskBlockWriter>(disks[i].path(), bytes));
  }
  try {
    machine.claim_disks();
  } catch (const InputError& e) {
    throw InputError(std::string(e.what()) +
                     ": a replica keeps its own copy of each disk, not the active's image");
  }
}

PageBatchCounts ReplicaReceiver::write_disk_blocks(std::span<const uint8_t> payload) {
  const DiskBlocks blocks = split_disk_blocks(payload, disks_.size());
  if (!disks_[blocks.disk]) throw StreamError("disk blocks for a disk not replicated");
  return disks_[blocks.disk]->write(blocks.batch);
}

void ReplicaReceiver::start(Machine& machine) {
  machine_ = &machine;
  {
    std::lock_guard guard(mutex_);
    receiving_ = true;
  }
  thread_ = std::thread([this] {
    jail::confine_thread(jail::ThreadKind::kWorker, "replica");
    keep_copy();
  });
}

bool ReplicaReceiver::runs_guest() const {
  std::lock_guard guard(mutex_);
  return phase_ == pb::REPLICA_PHASE_TAKEN_OVER;
}

pb::ReplicaInfo ReplicaReceiver::info() const {
  std::lock_guard guard(mutex_);
  pb::ReplicaInfo info;
  info.set_role(pb::REPLICA_ROLE_PASSIVE);
  info.set_phase(phase_);
  info.set_peer(peer_);
  info.set_epoch(epoch_);
  if (epoch_ != 0) info.set_last_ack_age_ms(ms_since(committed_at_));
  info.set_takeover_after_ms(static_cast<uint32_t>(takeover_after_.count()));
  if (channel_ && channel_->last_received() != Clock::time_point{})
    info.set_silent_ms(ms_since(channel_->last_received()));
  info.set_last_epoch_us(last_epoch_us_);
  info.set_last_epoch_pages(last_epoch_pages_);
  info.set_error(error_);
  return info;
}

bool ReplicaReceiver::commit_epoch(EpochAssembler& epochs, PageWriter& memory,
                                   std::span<const uint8_t> payload) {
  EpochAssembler::Epoch epoch = epochs.complete(payload);
  // The first epoch's pages and blocks went straight into memory and the
  // disks (there was no copy to keep whole yet); a later one's waited for
  // this. A write that fails halfway leaves a copy of no epoch: it must
  // never run.
  try {
    for (const auto& frame : epoch.frames) {
      if (frame.type == FrameType::kPages) {
        memory.write(frame.bytes);
      } else {
        write_disk_blocks(frame.bytes);
      }
    }
  } catch (const std::exception& e) {
    std::lock_guard guard(mutex_);
    damaged_ =
        "applying epoch " + std::to_string(epoch.number) + " failed halfway (" + e.what() + ")";
    committed_state_.reset();
    throw;
  }
  {
    std::lock_guard guard(mutex_);
    committed_state_ = std::move(epoch.state);
    epoch_ = epoch.number;
    committed_at_ = Clock::now();
    last_epoch_us_ = epoch.length_us;
    last_epoch_pages_ = epoch.pages;
    phase_ = pb::REPLICA_PHASE_PROTECTED;
  }
  epochs.committed();
  // A copy that may run: the active's silence from now on is a fault;
  // after a switchover's last epoch its guest stays stopped until Go.
  if (epoch.last) {
    channel_->set_timeout(std::chrono::duration_cast<std::chrono::milliseconds>(kStreamTimeout));
  } else if (epoch.number == 1) {
    channel_->set_timeout(takeover_after_);
  }
  mpb::EpochAck ack;
  ack.set_epoch(epoch.number);
  channel_->send(FrameType::kEpochAck, ack);
  if (epoch.number == 1) log::info("replica: the first epoch is applied; the copy can take over");
  return epoch.last;
}

// The active flushes its disks and sends Go meanwhile, so Go only lets the
// vCPUs go, as a migration's destination restores before it is ready. The
// vCPUs stay parked: a copy that never runs loses nothing by it, and its
// clocks run on from here as they would have in transit. Posted, not
// waited for, so that Go is read meanwhile: on the event loop, as run_copy
// runs, so whichever comes first applies the state, and only once.
void ReplicaReceiver::prepare_copy() {
  auto state = std::make_shared<st::VmState>();
  uint64_t epoch;
  {
    std::lock_guard guard(mutex_);
    if (!committed_state_) return;
    *state = *committed_state_;
    epoch = epoch_;
  }
  machine_->post([this, state, epoch] {
    {
      std::lock_guard guard(mutex_);
      if (phase_ == pb::REPLICA_PHASE_TAKEN_OVER || epoch_ != epoch || applied_epoch_ == epoch)
        return;
    }
    try {
      machine_->apply_state(*state);
    } catch (const std::exception& e) {
      log::warning(std::string("replica: the last epoch's state did not go in ahead of go (") +
                   e.what() + "); tried again at go");
      return;
    }
    log::debug("switchover: the last epoch's state is in");
    std::lock_guard guard(mutex_);
    applied_epoch_ = epoch;
  });
}

ReplicaReceiver::Ending ReplicaReceiver::receive_epochs(PageWriter& direct,
                                                        EpochAssembler& epochs) {
  const auto write_now = [&direct](std::span<const uint8_t> payload) {
    return direct.write(payload);
  };
  const auto write_disk_now = [this](std::span<const uint8_t> payload) {
    return write_disk_blocks(payload);
  };
  bool last = false;
  for (;;) {
    FrameChannel::Frame frame = channel_->receive();
    switch (frame.type) {
      case FrameType::kPages:
        epochs.add_pages(frame.payload, write_now);
        break;
      case FrameType::kDiskBlocks:
        epochs.add_disk_blocks(frame.payload, write_disk_now);
        break;
      case FrameType::kSync:
        if (!frame.payload.empty()) throw StreamError("sync frame with a payload");
        epochs.end_first_copy();
        channel_->send(FrameType::kSynced);
        break;
      case FrameType::kState:
        try {
          machine_->check_state_fits(epochs.add_state(frame.payload));
        } catch (const StreamError&) {
          throw;
        } catch (const InputError& e) {
          refuse(std::string("state refused: ") + e.what());
          throw;
        }
        break;
      case FrameType::kEpoch:
        try {
          last = commit_epoch(epochs, direct, frame.payload);
        } catch (const std::exception& e) {
          // Said, so that the active knows this copy will not run from it
          // (a switchover's Go behind it is never read): an ordinary
          // failed checkpoint there, not an uncertain one.
          refuse(std::string("epoch refused: ") + e.what());
          throw;
        }
        if (last) {
          log::debug("switchover: the last epoch is applied and acknowledged");
          prepare_copy();
        }
        break;
      case FrameType::kKeepalive:
        // The active waits for an acknowledgement; its bytes alone matter.
        if (!frame.payload.empty()) throw StreamError("keepalive frame with a payload");
        break;
      case FrameType::kGo:
        if (epochs.last_epoch() == 0 || epochs.mid_epoch())
          throw StreamError("go with no complete epoch to run from");
        log::debug("switchover: go heard");
        return Ending::kSwitchover;
      case FrameType::kCancel: {
        mpb::Verdict why;
        why.ParseFromArray(frame.payload.data(), static_cast<int>(frame.payload.size()));
        std::lock_guard guard(mutex_);
        error_ = peer_says(why.message());
        return Ending::kCancelled;
      }
      default:
        throw StreamError(std::string("unexpected ") + frame_name(frame.type) +
                          " frame in a replica stream");
    }
  }
}

void ReplicaReceiver::keep_copy() {
  Ending ending = Ending::kFailed;
  std::string failure;
  // Every write to memory goes through `direct`. Both outlive the stream:
  // an epoch's buffers are many and big, and freeing them is no work for a
  // switchover's pause.
  PageWriter direct(machine_->guest_memory());
  EpochAssembler epochs(direct.memory_pages(), disk_blocks_);
  try {
    ending = receive_epochs(direct, epochs);
  } catch (const std::exception& e) {
    failure = e.what();
  }
  std::unique_lock lock(mutex_);
  receiving_ = false;
  // A takeover asked for while the stream ran, and the stream ended
  // otherwise: its answer.
  ControlHandler::Reply pending_takeover;
  if (taking_over_ && ending != Ending::kFailed) {
    taking_over_ = false;
    pending_takeover = std::move(takeover_reply_);
  }
  if (ending == Ending::kCancelled) {
    phase_ = pb::REPLICA_PHASE_STOPPED;
    const std::string why = error_;
    lock.unlock();
    if (pending_takeover) {
      pending_takeover(error_response(pb::ERROR_CODE_INVALID_STATE,
                                      "the active ended the replication: its guest runs there"));
    }
    machine_->drop_replica("the active ended the replication (" + why + ")");
    return;
  }
  if (ending == Ending::kSwitchover) {
    lock.unlock();
    std::string why;
    try {
      why = on_event_loop<std::string>(*machine_, [this] { return run_copy(); });
    } catch (const std::exception& e) {
      why = e.what();  // not begun: it never will be
    }
    if (pending_takeover) {
      pending_takeover(why.empty() ? error_response(pb::ERROR_CODE_INVALID_STATE,
                                                    "a switchover brought the guest here already")
                                   : error_response(pb::ERROR_CODE_FAILED, why));
    }
    try {
      if (why.empty()) {
        log::debug("switchover: the vCPUs run");
        channel_->send(FrameType::kRunning);
      } else {
        refuse("the passive could not run the guest: " + why);
      }
    } catch (const std::exception& e) {
      log::warning(std::string("could not tell the active about the switchover: ") + e.what());
    }
    return;
  }
  if (taking_over_) {
    lock.unlock();
    machine_->post([this] {
      const std::string why = run_copy();
      ControlHandler::Reply reply;
      pb::Response response;
      {
        std::lock_guard guard(mutex_);
        taking_over_ = false;
        reply = std::move(takeover_reply_);
        response.set_ok(true);
        response.mutable_takeover()->set_role(pb::REPLICA_ROLE_PASSIVE);
        response.mutable_takeover()->set_phase(phase_);
        response.mutable_takeover()->set_epoch(epoch_);
        response.mutable_takeover()->set_peer(peer_);
      }
      if (!why.empty()) return reply(error_response(pb::ERROR_CODE_FAILED, why));
      reply(std::move(response));
    });
    return;
  }
  if (epoch_ == 0 || !damaged_.empty()) {
    phase_ = pb::REPLICA_PHASE_FAILED;
    error_ = damaged_.empty() ? failure : damaged_;
    const std::string why = damaged_.empty()
                                ? "the replica stream failed before its first epoch: " + failure
                                : "the copy is damaged: " + damaged_;
    lock.unlock();
    machine_->drop_replica(why, true);
    return;
  }
  phase_ = pb::REPLICA_PHASE_FAILED;
  error_ = failure;
  log::warning("replica stream lost (" + failure + "); the copy of epoch " +
               std::to_string(epoch_) + " waits for takeover or kill");
}

std::string ReplicaReceiver::run_copy() {
  st::VmState state;
  uint64_t epoch;
  Clock::time_point at;
  bool applied;
  {
    std::lock_guard guard(mutex_);
    // Once only: a second run would apply the state under a running guest.
    if (phase_ == pb::REPLICA_PHASE_TAKEN_OVER) return "the guest runs here already";
    if (phase_ == pb::REPLICA_PHASE_STOPPED) return "the active ended the replication";
    if (!committed_state_) return "no epoch applied yet";
    epoch = epoch_;
    at = committed_at_;
    applied = applied_epoch_ == epoch_;
    if (!applied) state = *committed_state_;
  }
  log::debug(applied ? "run copy: on the event loop, its state in"
                     : "run copy: on the event loop, its state to apply");
  try {
    machine_->refuse_if_fenced();
    if (!applied) machine_->apply_state(state);
    machine_->take_over_replica();
  } catch (const std::exception& e) {
    return e.what();
  }
  log::debug("run copy: vCPUs released");
  machine_->announce_network();
  {
    std::lock_guard guard(mutex_);
    phase_ = pb::REPLICA_PHASE_TAKEN_OVER;
  }
  log::info("replica: the guest runs here from epoch " + std::to_string(epoch) + " (applied " +
            std::to_string(ms_since(at)) + " ms ago)");
  return "";
}

void ReplicaReceiver::takeover(ControlHandler::Reply reply) {
  std::unique_lock lock(mutex_);
  if (phase_ == pb::REPLICA_PHASE_TAKEN_OVER)
    return reply(error_response(pb::ERROR_CODE_INVALID_STATE, "the guest runs here already"));
  if (phase_ == pb::REPLICA_PHASE_STOPPED) {
    return reply(error_response(pb::ERROR_CODE_INVALID_STATE,
                                "the active ended the replication: its guest runs there"));
  }
  if (taking_over_) return reply(error_response(pb::ERROR_CODE_BUSY, "a takeover is under way"));
  if (!damaged_.empty())
    return reply(error_response(pb::ERROR_CODE_INVALID_STATE, "the copy is damaged: " + damaged_));
  if (epoch_ == 0) {
    return reply(error_response(pb::ERROR_CODE_INVALID_STATE,
                                "nothing to take over yet: no epoch has been applied"));
  }
  if (receiving_) {
    // The thread finishes the epoch it applies, if any, sees the stream
    // end and runs the copy.
    taking_over_ = true;
    takeover_reply_ = std::move(reply);
    lock.unlock();
    channel_->shutdown();
    return;
  }
  lock.unlock();
  const std::string why = run_copy();
  if (!why.empty()) return reply(error_response(pb::ERROR_CODE_FAILED, why));
  pb::Response response;
  response.set_ok(true);
  *response.mutable_takeover() = info();
  reply(std::move(response));
}

}  // namespace keel::migration
