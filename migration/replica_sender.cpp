#include "migration/replica_sender.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <exception>
#include <future>

#include "common/log.h"
#include "migration/event_loop_call.h"
#include "migration/micros.h"
#include "migration/page_sender.h"
#include "migration/stream_hello.h"
#include "migration/vcpu_throttle.h"
#include "proto/migration.pb.h"

namespace keel::migration {

namespace pb = ::keel::api::v1;
namespace mpb = ::keel::migration::v1;
using Clock = std::chrono::steady_clock;

namespace {

constexpr auto kConnectTimeout = std::chrono::seconds(10);
// Once the passive holds a copy: an acknowledgement this late ends the
// replication (the guest waits from the end of its permit on; a passive
// that is gone costs it this long, one that is slow keeps it protected).
constexpr auto kAckTimeout = std::chrono::seconds(3);
// While it waits for an acknowledgement, the active sends a keepalive this
// often: with bytes in flight, TCP's user timeout (the passive's own
// silence limit, set on the socket once the passive holds a copy) tells a
// passive host gone or cut off from one that is only slow.
constexpr auto kKeepaliveEvery = std::chrono::milliseconds(100);
constexpr auto kPauseTimeout = std::chrono::seconds(5);
// A passive told the replication ended closes the stream as it drops its
// copy; one that does not within this long may still run it.
constexpr auto kDropConfirmTimeout = std::chrono::seconds(5);
// The share of the guest's time a checkpoint's pause may take before the
// epochs grow (the guest's slowdown), and below which they shrink again.
constexpr double kPauseShareHigh = 0.05;
constexpr double kPauseShareLow = 0.02;

// The passive's answer to an epoch: its first byte within kAckTimeout,
// keepalives sent meanwhile (a dead or cut-off passive host ends the wait
// within the stream's unacked limit instead), the rest within the
// channel's own time limit.
FrameChannel::Frame await_answer(FrameChannel& channel) {
  const auto until = Clock::now() + kAckTimeout;
  while (!channel.readable_within(kKeepaliveEvery)) {
    if (Clock::now() >= until) {
      throw StreamError("the passive did not answer an epoch within " +
                        std::to_string(std::chrono::milliseconds(kAckTimeout).count()) + " ms");
    }
    channel.send(FrameType::kKeepalive);
  }
  return channel.receive();
}

}  // namespace

ReplicaSender::ReplicaSender(MigratableMachine& machine, ReplicaSettings settings)
    : machine_(machine), settings_(std::move(settings)), target_(settings_.epoch) {
  info_.set_role(pb::REPLICA_ROLE_ACTIVE);
  info_.set_phase(pb::REPLICA_PHASE_CONNECTING);
  info_.set_peer(settings_.to.text);
  info_.set_epoch_target_ms(static_cast<uint32_t>(target_.count()));
}

pb::ReplicaInfo ReplicaSender::info() const {
  std::lock_guard guard(mutex_);
  pb::ReplicaInfo copy = info_;
  const auto now = Clock::now();
  if (started_ != Clock::time_point{}) copy.set_elapsed_ms(micros(now - started_) / 1000);
  if (last_ack_ != Clock::time_point{}) copy.set_last_ack_age_ms(micros(now - last_ack_) / 1000);
  copy.set_run_permit_ms(static_cast<uint32_t>(settings_.run_permit.count()));
  if (channel_) copy.set_bytes_sent(channel_->bytes_sent());
  return copy;
}

void ReplicaSender::set_phase(pb::ReplicaPhase phase) {
  std::lock_guard guard(mutex_);
  info_.set_phase(phase);
}

std::string ReplicaSender::stop() {
  std::lock_guard guard(mutex_);
  switch (info_.phase()) {
    case pb::REPLICA_PHASE_FAILED:
    case pb::REPLICA_PHASE_STOPPED:
      return "no replication under way";
    default:
      break;
  }
  stopping_.store(true);
  stop_changed_.notify_all();
  return "";
}

std::string ReplicaSender::run_on() {
  MigratableMachine& machine = machine_;
  // Unprotected from here: the permit ended, the held output let go.
  const auto run_here = [this, &machine] {
    if (permit_) permit_->end();
    machine.post([&machine] {
      machine.hold_output(false);
      machine.track_disk_writes(false);
      machine.resume();
    });
  };
  bool uncertain = false;
  {
    std::lock_guard guard(mutex_);
    uncertain = info_.phase() == pb::REPLICA_PHASE_UNCERTAIN;
  }
  if (uncertain) {
    // The operator's word that the passive's copy never ran (nothing
    // automatic asks this). On the event loop (a control request): the
    // images, let go at Go, are this process's again first; outside the
    // lock, since devices call into this sender holding theirs. The
    // permit: Go may have come before hand_over ended it.
    try {
      machine.claim_disks();
    } catch (const std::exception& e) {
      return std::string("the disk images could not be taken back: ") + e.what();
    }
    {
      std::lock_guard guard(mutex_);
      info_.set_phase(pb::REPLICA_PHASE_FAILED);
      info_.set_error(info_.error() + "; run on here by replica-stop --run-on, unprotected");
    }
    run_here();
    log::warning("replica: an uncertain switchover's guest runs on here (replica-stop --run-on)");
    return "";
  }
  {
    std::lock_guard guard(mutex_);
    if (!held_) {
      return info_.phase() == pb::REPLICA_PHASE_FAILED ? "the guest runs on here already"
                                                       : "no failed replication holds the guest";
    }
    held_ = false;
    info_.set_guest_held(false);
    info_.set_error(info_.error() + "; it runs on here, unprotected (replica-stop --run-on)");
  }
  run_here();
  log::info("replica: the guest runs on here, unprotected");
  return "";
}

void ReplicaSender::hold_guest(const std::string& why) {
  permit_->revoke();
  std::lock_guard guard(mutex_);
  held_ = true;
  info_.set_phase(pb::REPLICA_PHASE_FAILED);
  info_.set_guest_held(true);
  info_.set_error(why + "; the guest is paused here (the passive may run it from epoch " +
                  std::to_string(info_.epoch()) +
                  "): once it surely does not, replica-stop --run-on runs it on here unprotected");
}

void ReplicaSender::resume_if_permitted() {
  MigratableMachine& machine = machine_;
  RunPermit& permit = *permit_;
  on_event_loop<bool>(machine, [&machine, &permit] {
    return permit.resume_if_valid([&machine] { machine.resume(); });
  });
}

bool ReplicaSender::passive_dropped_copy() {
  if (!channel_ || channel_->is_shut_down()) return false;
  return channel_->wait_closed(
      std::chrono::duration_cast<std::chrono::milliseconds>(kDropConfirmTimeout));
}

std::vector<uint64_t> ReplicaSender::open_disks() {
  MigratableMachine& machine = machine_;
  const state::v1::VmConfig config =
      on_event_loop<state::v1::VmConfig>(machine, [&machine] { return machine.shape().config(); });
  std::vector<uint64_t> sizes;
  for (int i = 0; i < config.disks_size(); ++i) {
    const auto& disk = config.disks(i);
    if (disk.readonly()) {
      sizes.push_back(0);
      continue;
    }
    if (disk.path().empty())
      throw InputError("disk " + std::to_string(i) + " is on NBD: replicating it is not built yet");
    UniqueFd image(::open(disk.path().c_str(), O_RDONLY | O_CLOEXEC));
    if (!image.valid()) throw_errno("opening " + disk.path() + " to replicate it");
    struct stat st {};
    if (::fstat(image.get(), &st) != 0) throw_errno("stat " + disk.path());
    const auto bytes = static_cast<uint64_t>(st.st_size);
    if (bytes % kPageSize != 0) {
      throw InputError("disk " + disk.path() + " is " + std::to_string(bytes) +
                       " bytes, not whole 4 KiB blocks: it cannot be replicated");
    }
    sizes.push_back(bytes);
    disks_.push_back({static_cast<uint64_t>(i), std::move(image), bytes / kPageSize, {}});
  }
  return sizes;
}

// A disk whole, its data extents in chunks of 4 MiB (holes read as zeros
// on the passive's side already: its copy starts as a file of that size).
void ReplicaSender::copy_disk(Disk& disk) {
  constexpr uint64_t kChunk = 1024;  // blocks
  std::vector<uint64_t> bitmap((disk.blocks + 63) / 64, 0);
  const auto end = static_cast<off_t>(disk.blocks * kPageSize);
  off_t at = 0;
  while (at < end) {
    const off_t data = ::lseek(disk.image.get(), at, SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) break;
      throw_errno("SEEK_DATA in a disk image");
    }
    const off_t hole = std::min(end, ::lseek(disk.image.get(), data, SEEK_HOLE));
    if (hole < 0) throw_errno("SEEK_HOLE in a disk image");
    for (uint64_t first = static_cast<uint64_t>(data) / kPageSize;
         first * kPageSize < static_cast<uint64_t>(hole); first += kChunk) {
      const uint64_t last = std::min<uint64_t>(
          first + kChunk, (static_cast<uint64_t>(hole) + kPageSize - 1) / kPageSize);
      for (uint64_t b = first; b < last; ++b) bitmap[b / 64] |= uint64_t{1} << (b % 64);
      disk.staged.stage_file(disk.image.get(), disk.blocks, bitmap);
      disk.staged.send(*channel_, disk.index);
      for (uint64_t b = first; b < last; ++b) bitmap[b / 64] &= ~(uint64_t{1} << (b % 64));
      if (stopping_.load()) throw StreamError("stopped");
    }
    at = hole;
  }
}

void ReplicaSender::connect_and_copy() {
  UniqueFd socket = connect_tcp(settings_.to, kConnectTimeout);
  {
    std::lock_guard guard(mutex_);
    channel_ = std::make_unique<FrameChannel>(std::move(socket), "the passive", kStreamTimeout);
  }
  send_hello(*channel_, machine_, true, open_disks(),
             static_cast<uint32_t>(settings_.run_permit.count()));
  // The checkpoints run code this process may not have run yet.
  machine_.rehearse_state();
  set_phase(pb::REPLICA_PHASE_SYNCING);
  // What the guest writes from here on is in the first epoch; the disks'
  // copies read what is there now.
  MigratableMachine& machine = machine_;
  on_event_loop<bool>(machine, [&machine] {
    machine.track_disk_writes(true);
    return true;
  });
  for (Disk& disk : disks_) copy_disk(disk);
  GuestMemory& memory = machine_.guest_memory();
  dirty_log_ = machine_.start_dirty_log();
  // Everything the VMM wrote before now is in memory, which goes whole;
  // what anyone writes from here on is in the first epoch.
  memory.dirty().harvest();
  PageSender pages(*channel_, memory.host_base(), memory.size(), 0);
  pages.set_cancel_check(&stopping_);
  pages.add_all(memory.fd());
  channel_->send(FrameType::kSync);
  FrameChannel::Frame answer = channel_->receive();
  if (answer.type != FrameType::kSynced) {
    throw StreamError(std::string("expected synced from the passive, got ") +
                      frame_name(answer.type));
  }
  bitmap_.assign(memory.dirty().words(), 0);
  channel_->set_timeout(std::chrono::duration_cast<std::chrono::milliseconds>(kAckTimeout));
}

Clock::time_point ReplicaSender::checkpoint(uint64_t epoch, bool last) {
  MigratableMachine& machine = machine_;
  GuestMemory& memory = machine.guest_memory();
  // A switchover's throttle stops the vCPUs in turn with this pause; a
  // checkpoint that fails ends it before letting it go on (it would resume
  // a guest the failure leaves paused).
  std::unique_lock<std::mutex> throttle_off;
  if (throttle_) throttle_off = throttle_->hold_off();
  struct HaltOnFailure {
    VcpuThrottle* throttle;
    int exceptions = std::uncaught_exceptions();
    ~HaltOnFailure() {
      if (throttle && std::uncaught_exceptions() > exceptions) throttle->halt();
    }
  } halt_on_failure{throttle_};
  const auto asked = Clock::now();
  auto parked = std::make_shared<std::promise<Clock::time_point>>();
  std::future<Clock::time_point> parked_future = parked->get_future();
  machine.request_pause([parked] { parked->set_value(Clock::now()); });
  // Waited in slices: a machine that stops meanwhile never parks its vCPUs.
  while (parked_future.wait_for(std::chrono::milliseconds(50)) != std::future_status::ready) {
    if (stopping_.load() || Clock::now() - asked > kPauseTimeout) {
      if (permit_) {
        // The pause asked for stays: the end of the replication lifts it
        // (stopped) or holds the guest (failed).
        permit_->keep_paused();
      } else {
        on_event_loop<bool>(machine, [&machine] {
          machine.resume();
          return true;
        });
      }
      if (stopping_.load()) throw StreamError("stopped");
      throw std::runtime_error("a vCPU did not stop within 5 s");
    }
  }
  const Clock::time_point stopped = parked_future.get();
  // The passive can run nothing before this checkpoint's epoch, which it
  // receives after now.
  if (!permit_) {
    permit_ = std::make_unique<RunPermit>([&machine] { machine.request_pause([] {}); },
                                          settings_.run_permit);
    permit_->grant_from(stopped);
  }
  RunPermit& permit = *permit_;
  // On the event loop, in one go: the devices quiesce and save (what they
  // write meanwhile is in the VMM's marks), then the pages written since
  // the last checkpoint are harvested and copied, then the guest runs on.
  EpochPages& staged = staged_;
  std::vector<uint64_t>& bitmap = bitmap_;
  kvm::DirtyLog& log = *dirty_log_;
  std::vector<Disk>& disks = disks_;
  std::vector<uint64_t>& carried = carried_;
  state::v1::VmState state = on_event_loop<state::v1::VmState>(machine, [&] {
    state::v1::VmState captured;
    try {
      captured = machine.capture_state();
      // What converge_for_switchover's look took (the VMM's marks left
      // with it).
      if (carried.empty()) {
        std::fill(bitmap.begin(), bitmap.end(), 0);
      } else {
        bitmap.swap(carried);
        carried.clear();
      }
      log.peek_into(bitmap);
      log.reprotect_peeked();
      // The last epoch's pages go from guest memory itself after this: the
      // guest stays stopped.
      if (!last) staged.stage(memory.host_base(), memory.size() / kPageSize, bitmap);
      std::vector<std::vector<uint64_t>> written = machine.harvest_disk_writes();
      for (Disk& disk : disks) {
        if (disk.index < written.size())
          disk.staged.stage_file(disk.image.get(), disk.blocks, written[disk.index]);
      }
      // Output commit: what the guest sent until now is this epoch's; from
      // the first checkpoint on, output waits for its epoch's ack.
      machine.close_output_epoch(epoch);
      if (epoch == 1) {
        machine.hold_output(true);
        // Weak: the hook outlives this sender in the devices.
        machine.on_output_held([weak = weak_from_this()] {
          if (auto sender = weak.lock()) sender->output_held();
        });
      }
      {
        std::lock_guard guard(mutex_);
        output_waiting_ = false;  // the devices' next first frame tells again
      }
    } catch (...) {
      permit.keep_paused();  // held, as after any failure
      throw;
    }
    // Past its permit the guest waits for the acknowledgement.
    if (!last) permit.resume_if_valid([&machine] { machine.resume(); });
    return captured;
  });
  paused_ = last;
  if (throttle_off.owns_lock()) throttle_off.unlock();
  if (last) switchover_step(stopped, "state captured, disks' blocks staged");
  const auto resumed = Clock::now();
  const auto pause = resumed - stopped;
  // The guest's time goes on between the checkpoint and a takeover.
  state.mutable_clock()->set_advance_by_wall_time(true);

  const uint64_t sent_before = channel_->bytes_sent();
  channel_->hold(true);
  uint64_t pages = 0, zero_pages = 0;
  if (last) {
    PageSender direct(*channel_, memory.host_base(), memory.size(), 0);
    direct.add_marked(bitmap_);
    pages = direct.pages();
    zero_pages = direct.zero_pages();
  } else {
    staged_.send(*channel_);
    pages = staged_.pages();
    zero_pages = staged_.zero_pages();
  }
  uint64_t blocks = 0, zero_blocks = 0;
  for (const Disk& disk : disks_) {
    disk.staged.send(*channel_, disk.index);
    blocks += disk.staged.pages();
    zero_blocks += disk.staged.zero_pages();
  }
  channel_->send(FrameType::kState, state);
  channel_->hold(false);
  mpb::Epoch end;
  end.set_epoch(epoch);
  end.set_pages(pages);
  end.set_zero_pages(zero_pages);
  end.set_disk_blocks(blocks);
  end.set_zero_disk_blocks(zero_blocks);
  end.set_length_us(last_checkpoint_ == Clock::time_point{} ? 0
                                                            : micros(stopped - last_checkpoint_));
  end.set_last(last);
  // The passive receives this frame after now: from its ack on, the guest
  // may run until now plus the permit.
  const auto heard = Clock::now();
  channel_->send(FrameType::kEpoch, end);
  if (last) {
    // Go follows at once, as a migration's last pages are followed by its
    // state: the passive reads it only once it applied and acknowledged
    // this epoch, and never after refusing it. A round trip less in the
    // pause; the passive may run the guest from here on.
    {
      std::lock_guard guard(mutex_);
      go_sent_ = true;
    }
    channel_->send(FrameType::kGo);
  }
  // The link's rate, of an epoch big enough to measure it: how long a
  // switchover's last epoch would take to send.
  const uint64_t bytes = channel_->bytes_sent() - sent_before;
  if (bytes >= (1u << 20)) {
    send_rate_ = static_cast<double>(bytes) /
                 std::max(1e-6, std::chrono::duration<double>(Clock::now() - resumed).count());
  }
  if (last) {
    switchover_step(stopped, "last epoch and go sent (" + std::to_string(pages) + " pages, " +
                                 std::to_string(zero_pages) + " of zeros)");
  }

  // The last epoch's Go is already on its way: nothing may follow it.
  FrameChannel::Frame answer = last ? channel_->receive() : await_answer(*channel_);
  if (answer.type == FrameType::kVerdict) {
    mpb::Verdict verdict;
    verdict.ParseFromArray(answer.payload.data(), static_cast<int>(answer.payload.size()));
    if (last) {
      // It refused the epoch, so it never read Go: it cannot run the guest
      // from this epoch, as after any failed checkpoint.
      std::lock_guard guard(mutex_);
      go_sent_ = false;
    }
    throw InputError("the passive refused epoch " + std::to_string(epoch) + ": " +
                     peer_says(verdict.message()));
  }
  if (answer.type != FrameType::kEpochAck) {
    throw StreamError(std::string("expected an epoch ack from the passive, got ") +
                      frame_name(answer.type));
  }
  mpb::EpochAck ack;
  if (!ack.ParseFromArray(answer.payload.data(), static_cast<int>(answer.payload.size())) ||
      ack.epoch() != epoch) {
    throw StreamError("the passive acknowledged epoch " + std::to_string(ack.epoch()) +
                      ", expected " + std::to_string(epoch));
  }
  const auto acked = Clock::now();
  if (last) switchover_step(stopped, "last epoch acknowledged");
  machine.post([&machine, epoch] { machine.release_output(epoch); });
  if (permit.grant_from(heard) && !last) resume_if_permitted();
  {
    std::lock_guard guard(mutex_);
    info_.set_epoch(epoch);
    if (last_checkpoint_ != Clock::time_point{})
      info_.set_last_epoch_us(micros(stopped - last_checkpoint_));
    info_.set_last_pause_us(micros(pause));
    info_.set_max_pause_us(std::max<uint64_t>(info_.max_pause_us(), micros(pause)));
    info_.set_last_epoch_pages(pages + zero_pages);
    // Smoothed: one epoch's transfer is short and noisy.
    const double rate = static_cast<double>(bytes) / std::max(1e-6, micros(acked - resumed) / 1e6);
    const double before = static_cast<double>(info_.bandwidth_bytes_per_s());
    info_.set_bandwidth_bytes_per_s(
        static_cast<uint64_t>(before == 0 ? rate : 0.8 * before + 0.2 * rate));
    paused_total_ += pause;
    if (epoch == 1) first_checkpoint_ = stopped;  // the share counts from there
    const double ran = std::chrono::duration<double>(acked - first_checkpoint_).count();
    if (ran > 0)
      info_.set_paused_percent(100.0 * std::chrono::duration<double>(paused_total_).count() / ran);
    last_ack_ = acked;
  }
  last_checkpoint_ = stopped;
  early_gap_ = std::max<Clock::duration>(settings_.min_epoch, pause * 20);
  adapt_target(pause);
  return stopped;
}

void ReplicaSender::output_held() {
  {
    std::lock_guard guard(mutex_);
    output_waiting_ = true;
  }
  stop_changed_.notify_all();
}

void ReplicaSender::wait_for_checkpoint() {
  std::unique_lock lock(mutex_);
  const auto latest = last_checkpoint_ + target_;
  const auto earliest = last_checkpoint_ + early_gap_;
  for (;;) {
    if (stopping_.load() || switching_.load()) return;
    const auto now = Clock::now();
    if (now >= latest || (output_waiting_ && now >= earliest)) return;
    stop_changed_.wait_until(lock, output_waiting_ ? std::min(latest, earliest) : latest);
  }
}

void ReplicaSender::adapt_target(Clock::duration pause) {
  const double share = std::chrono::duration<double>(pause).count() /
                       std::max(1e-3, std::chrono::duration<double>(target_).count());
  auto next = target_;
  if (share > kPauseShareHigh) {
    next = std::min(settings_.max_epoch, target_ * 3 / 2);
  } else if (share < kPauseShareLow && target_ > settings_.epoch) {
    next = std::max(settings_.epoch, target_ * 2 / 3);
  }
  if (next == target_) return;
  target_ = next;
  std::lock_guard guard(mutex_);
  info_.set_epoch_target_ms(static_cast<uint32_t>(target_.count()));
}

pb::ReplicaInfo ReplicaSender::run(std::function<void(const pb::ReplicaInfo&)> first) {
  {
    std::lock_guard guard(mutex_);
    started_ = Clock::now();
  }
  bool told = false;
  bool ended = false;  // on purpose (stop()), the passive told
  // The guest held (hold_guest): the stream goes, the outcome is told.
  auto held_outcome = [&] {
    dirty_log_.reset();
    if (channel_) channel_->shutdown();
    pb::ReplicaInfo outcome = info();
    if (!told) first(outcome);
    return outcome;
  };
  try {
    connect_and_copy();
    for (uint64_t epoch = 1;; ++epoch) {
      if (epoch > 1) wait_for_checkpoint();
      if (stopping_.load()) break;
      const bool last = switching_.load();
      if (last) epoch = converge_for_switchover(epoch);
      const Clock::time_point stopped = checkpoint(epoch, last);
      if (last) {
        hand_over(epoch, stopped);
        dirty_log_.reset();
        channel_->shutdown();
        const pb::ReplicaInfo done = info();
        machine_.hand_over("the guest runs at " + settings_.to.text + " (switchover, paused " +
                           std::to_string(done.switchover_pause_us() / 1000.0) + " ms)");
        return done;
      }
      if (epoch == 1) {
        // From now on the passive may take over once this side is silent
        // for its silence limit; bytes its host leaves unacknowledged that
        // long mean it is gone or cut off (the guest waits meanwhile). Not
        // during the first copy: a passive that stops reading while it
        // writes its disk would look the same, and nothing waits for it.
        channel_->set_unacked_limit(
            passive_silence_limit(static_cast<uint32_t>(settings_.run_permit.count())));
        set_phase(pb::REPLICA_PHASE_PROTECTED);
        log::info("replica at " + settings_.to.text + " protects the guest");
        first(info());
        told = true;
      }
    }
    try {
      mpb::Verdict why;
      why.set_message("the active ended the replication");
      channel_->send(FrameType::kCancel, why);
    } catch (const std::exception& e) {
      log::warning(std::string("could not tell the passive the replication ended: ") + e.what());
    }
    ended = true;
  } catch (const std::exception& e) {
    const bool stopped = stopping_.load();
    const std::string message = e.what();
    if (go_sent_) {
      // The passive may run the guest: never here as well.
      dirty_log_.reset();
      if (channel_) channel_->shutdown();
      std::lock_guard guard(mutex_);
      info_.set_phase(pb::REPLICA_PHASE_UNCERTAIN);
      info_.set_error(
          "the passive was told to run the guest and did not confirm (" + message +
          "): the guest stays paused here, and keel-agent moves the VM's record to "
          "the passive's host if its copy runs; if that copy is surely gone and "
          "never ran, replica-stop --run-on runs the guest on here, else kill this one");
      pb::ReplicaInfo copy = info_;
      if (!told) first(copy);
      return copy;
    }
    // After the first checkpoint the passive may run the guest: it waits
    // here (before the passive can see the stream end) until told.
    const bool hold = permit_ && !stopped;
    if (hold) hold_guest(message);
    if (channel_ && !channel_->is_shut_down()) {
      try {
        mpb::Verdict why;
        why.set_message(stopped ? "the active ended the replication" : message);
        channel_->hold(false);
        channel_->send(FrameType::kCancel, why);
      } catch (const std::exception&) {
        // The passive is gone already.
      }
    }
    if (hold) return held_outcome();
    ended = stopped;
    if (!stopped) {
      std::lock_guard guard(mutex_);
      info_.set_phase(pb::REPLICA_PHASE_FAILED);
      info_.set_error(message + "; the guest runs on here, unprotected");
    }
  }
  // Ended on purpose after the passive held a copy: the guest runs on only
  // once the passive dropped it (a cut-off passive never heard the end).
  if (ended && permit_ && !passive_dropped_copy()) {
    hold_guest("the replication was ended, and the passive did not close the stream within 5 s");
    return held_outcome();
  }
  if (ended) set_phase(pb::REPLICA_PHASE_STOPPED);
  dirty_log_.reset();
  if (channel_) channel_->shutdown();
  // Ended on purpose (the passive was told), or before the passive held a
  // copy: the guest runs on, also if its permit had paused it.
  if (permit_ && (permit_->end() || paused_)) {
    try {
      resume_if_permitted();
    } catch (const std::exception& e) {
      log::error(std::string("could not resume the guest after the replication: ") + e.what());
    }
  }
  // Unprotected from here: the output held goes, and goes on unheld.
  MigratableMachine& machine = machine_;
  machine.post([&machine] {
    machine.hold_output(false);
    machine.track_disk_writes(false);
  });
  pb::ReplicaInfo outcome = info();
  if (!told) first(outcome);
  return outcome;
}

}  // namespace keel::migration
