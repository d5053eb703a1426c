#include "migration/migration_sender.h"

#include <atomic>
#include <future>
#include <optional>
#include <thread>

#include "common/log.h"
#include "migration/event_loop_call.h"
#include "migration/micros.h"
#include "migration/page_sender.h"
#include "migration/stream_hello.h"
#include "migration/vcpu_throttle.h"
#include "proto/migration.pb.h"
#include "vmm/jail/syscall_filter.h"
#include "vmm/kvm/dirty_log.h"

namespace keel::migration {

namespace pb = ::keel::api::v1;
namespace mpb = ::keel::migration::v1;
using Clock = std::chrono::steady_clock;

namespace {

constexpr auto kConnectTimeout = std::chrono::seconds(10);
// Silence from the destination this long ends the migration (it is dead
// or stuck); the guest runs on here.
constexpr auto kStreamTimeout = std::chrono::seconds(30);
constexpr auto kPauseTimeout = std::chrono::seconds(5);
// Rounds before throttling starts, and the steps it takes (QEMU's
// auto-converge takes the same shape: 20%, then +10% per round).
constexpr uint32_t kRoundsBeforeThrottle = 4;
constexpr uint32_t kThrottleStart = 20;
constexpr uint32_t kThrottleStep = 10;
constexpr uint32_t kThrottleMax = 99;
// A guest that still does not fit after this many rounds is moved anyway,
// with a longer pause, and the progress says so.
constexpr uint32_t kMaxRounds = 60;
constexpr size_t kRoundsKept = 64;
constexpr double kAssumedBandwidth = 125e6;  // bytes per second: 1 Gbit/s

}  // namespace

MigrationSender::MigrationSender(MigratableMachine& machine, MigrationSettings settings)
    : machine_(machine), settings_(std::move(settings)) {
  info_.set_phase(pb::MIGRATION_PHASE_CONNECTING);
  info_.set_to(settings_.to.text);
  info_.set_memory_bytes(machine_.guest_memory().size());
  info_.set_downtime_target_ms(static_cast<uint32_t>(settings_.downtime.count()));
}

pb::MigrationInfo MigrationSender::info() const {
  std::lock_guard guard(mutex_);
  pb::MigrationInfo copy = info_;
  copy.set_elapsed_ms(started_ == Clock::time_point{} ? 0 : micros(Clock::now() - started_) / 1000);
  if (channel_) copy.set_bytes_sent(channel_->bytes_sent());
  return copy;
}

void MigrationSender::set_phase(pb::MigrationPhase phase) {
  std::lock_guard guard(mutex_);
  info_.set_phase(phase);
}

void MigrationSender::add_round(pb::MigrationRound round) {
  std::lock_guard guard(mutex_);
  if (static_cast<size_t>(info_.rounds_size()) >= kRoundsKept)
    info_.mutable_rounds()->DeleteSubrange(0, 1);
  *info_.add_rounds() = round;
  info_.set_rounds_total(round.round() + 1);
  info_.set_pages_sent(info_.pages_sent() + round.pages());
  info_.set_zero_pages_sent(info_.zero_pages_sent() + round.zero_pages());
  info_.set_throttle_percent(round.throttle_percent());
}

std::string MigrationSender::cancel() {
  std::lock_guard guard(mutex_);
  if (go_sent_) return "too late: the destination was told to run the guest";
  switch (info_.phase()) {
    case pb::MIGRATION_PHASE_COMPLETED:
    case pb::MIGRATION_PHASE_FAILED:
    case pb::MIGRATION_PHASE_CANCELLED:
    case pb::MIGRATION_PHASE_UNCERTAIN:
      return "no migration under way";
    default:
      break;
  }
  // Page batches and rounds check the flag, and the destination is told;
  // a sender stuck waiting on the destination is cut off (run's watchdog).
  cancelled_.store(true);
  cancel_changed_.notify_all();
  return "";
}

// The destination builds the machine's shape from the Hello and answers
// whether it can run it: nothing moves before that.
void MigrationSender::connect_and_check() {
  UniqueFd socket = connect_tcp(settings_.to, kConnectTimeout);
  {
    std::lock_guard guard(mutex_);
    channel_ = std::make_unique<FrameChannel>(std::move(socket), "the destination", kStreamTimeout);
  }
  if (cancelled_.load()) throw StreamError("cancelled");
  send_hello(*channel_, machine_, false);
}

void MigrationSender::first_pass() {
  set_phase(pb::MIGRATION_PHASE_FIRST_PASS);
  GuestMemory& memory = machine_.guest_memory();
  dirty_log_ = machine_.start_dirty_log();
  log_started_ = Clock::now();
  // Everything the VMM wrote before now is in memory, which goes whole.
  memory.dirty().harvest();
  const auto begin = Clock::now();
  const uint64_t sent_before = channel_->bytes_sent();
  PageSender pages(*channel_, memory.host_base(), memory.size(), settings_.bandwidth);
  pages.set_cancel_check(&cancelled_);
  pages.add_all(memory.fd());
  sync();
  const auto took = Clock::now() - begin;
  const uint64_t bytes = channel_->bytes_sent() - sent_before;
  // A first pass of a mostly untouched guest moves little: its time is
  // round trips, not bandwidth. Below 1 MiB assume a 1 Gbit/s link until a
  // round measures better (else an idle guest's few dirty pages look slow
  // to send and get it throttled).
  bandwidth_ = bytes >= (1u << 20) ? static_cast<double>(bytes) / std::max(1e-6, micros(took) / 1e6)
                                   : kAssumedBandwidth;
  pb::MigrationRound round;
  round.set_round(0);
  round.set_pages(pages.pages());
  round.set_zero_pages(pages.zero_pages());
  round.set_bytes(bytes);
  round.set_duration_us(micros(took));
  round.set_bandwidth_bytes_per_s(static_cast<uint64_t>(bandwidth_));
  add_round(round);
}

// Waits until the destination has everything sent so far in guest memory:
// a round's time (and so the bandwidth) counts until then, and the pause
// never waits on a backlog in socket buffers.
void MigrationSender::sync() {
  const auto begin = Clock::now();
  channel_->send(FrameType::kSync);
  FrameChannel::Frame answer = channel_->receive();
  if (answer.type != FrameType::kSynced) {
    throw StreamError(std::string("expected synced from the destination, got ") +
                      frame_name(answer.type));
  }
  last_sync_ = Clock::now() - begin;
}

// Rounds until the pages left would go within the pause allowed; returns
// those pages (unsent).
std::vector<uint64_t> MigrationSender::dirty_rounds() {
  set_phase(pb::MIGRATION_PHASE_DIRTY_ROUNDS);
  GuestMemory& memory = machine_.guest_memory();
  VcpuThrottle throttle(machine_);
  auto last_harvest = log_started_;
  uint32_t round_number = 1;
  uint64_t previous_dirty = UINT64_MAX;
  uint32_t not_shrinking = 0;
  for (;; ++round_number) {
    if (cancelled_.load()) throw StreamError("cancelled");
    // Peeked: if these pages fit in the pause, the guest stops next and
    // need not fault on every page it writes until then (re-protected
    // below only for another round).
    std::vector<uint64_t> dirty = dirty_log_->peek();
    const auto now = Clock::now();
    const uint64_t dirty_pages = kvm::DirtyLog::count(dirty);
    const double since = std::max(1e-6, micros(now - last_harvest) / 1e6);
    last_harvest = now;
    // The pages, and what the pause holds besides: the state, the
    // destination's ready and the go/running round trip, about two syncs.
    // Only the pages shrink with more rounds or throttling: they decide
    // (a slow link's round trips alone must not throttle an idle guest).
    const double pages_s = dirty_pages * kPageSize / std::max(bandwidth_, 1.0);
    const double fixed_s = 2 * std::chrono::duration<double>(last_sync_).count();
    const double expected_s = pages_s + fixed_s;
    const auto expected = std::chrono::microseconds(static_cast<uint64_t>(expected_s * 1e6));
    const bool fits = expected <= settings_.downtime ||
                      std::chrono::duration<double>(pages_s) <= settings_.downtime / 4;

    {
      std::lock_guard guard(mutex_);
      if (info_.rounds_size() > 0) {
        // The harvest closes the round before: what the guest wrote while it went.
        auto* r = info_.mutable_rounds(info_.rounds_size() - 1);
        r->set_dirty_rate_bytes_per_s(static_cast<uint64_t>(dirty_pages * kPageSize / since));
        r->set_dirty_pages_left(dirty_pages);
        r->set_expected_downtime_us(static_cast<uint64_t>(expected_s * 1e6));
      }
    }
    if (fits) return dirty;
    if (round_number > kMaxRounds) {
      log::warning("migration did not converge in " + std::to_string(kMaxRounds) +
                   " rounds; moving the guest with an expected pause of " +
                   std::to_string(expected.count() / 1000) + " ms");
      return dirty;
    }
    // Not converging: the guest writes about as fast as the link sends.
    not_shrinking = dirty_pages * 10 >= previous_dirty * 9 ? not_shrinking + 1 : 0;
    previous_dirty = dirty_pages;
    if (round_number > kRoundsBeforeThrottle && not_shrinking >= 1) {
      const uint32_t now_percent = throttle.percent();
      const uint32_t next = throttle.raise(kThrottleStart, kThrottleStep, kThrottleMax);
      if (next != now_percent) {
        log::info(
            "migration: the guest writes memory faster than it can be sent; vCPUs "
            "throttled to " +
            std::to_string(100 - next) + "% of their time");
      }
    }

    dirty_log_->reprotect_peeked();  // before the copies: later writes are logged again
    const auto begin = Clock::now();
    const uint64_t sent_before = channel_->bytes_sent();
    PageSender pages(*channel_, memory.host_base(), memory.size(), settings_.bandwidth);
    pages.set_cancel_check(&cancelled_);
    pages.add_marked(dirty);
    sync();
    const auto took = Clock::now() - begin;
    const uint64_t bytes = channel_->bytes_sent() - sent_before;
    // Small rounds measure latency, not bandwidth: keep the estimate then.
    if (bytes >= (1u << 20))
      bandwidth_ = static_cast<double>(bytes) / std::max(1e-6, micros(took) / 1e6);
    pb::MigrationRound round;
    round.set_round(round_number);
    round.set_pages(pages.pages());
    round.set_zero_pages(pages.zero_pages());
    round.set_bytes(bytes);
    round.set_duration_us(micros(took));
    round.set_bandwidth_bytes_per_s(static_cast<uint64_t>(bandwidth_));
    round.set_throttle_percent(throttle.percent());
    add_round(round);
  }
}

// The pause: vCPUs stopped and devices quiesced on the event loop, the last
// pages (those left plus what the guest wrote since), the totals and the
// state; then the destination's ready, our go, its running. The last pages
// go out while the event loop captures the state: once the vCPUs are out of
// KVM_RUN nothing adds to KVM's log (KVM writes guest memory only on a
// vCPU's entry or exit), and what the devices write while they quiesce is
// in the VMM's marks, taken again after the capture.
void MigrationSender::stop_and_copy(std::vector<uint64_t> dirty) {
  set_phase(pb::MIGRATION_PHASE_STOP_AND_COPY);
  // Paused means paused until the handover or a resume here, whatever
  // the capture does: a failed capture resumes the guest itself.
  MigratableMachine& machine = machine_;
  // What the pause writes into is made before it: in an emulated host the
  // first touch of a fresh page costs about a tenth of a millisecond.
  GuestMemory& memory = machine_.guest_memory();
  const uint64_t sent_before = channel_->bytes_sent();
  PageSender pages(*channel_, memory.host_base(), memory.size(), 0);
  std::vector<uint64_t> device_marks(dirty.size(), 0);
  const auto asked = Clock::now();
  auto stop = std::make_shared<std::promise<Clock::time_point>>();
  auto capture = std::make_shared<std::promise<state::v1::VmState>>();
  std::future<Clock::time_point> stopped_future = stop->get_future();
  std::future<state::v1::VmState> captured_future = capture->get_future();
  // The kicks go out from here, not from the event loop (which may wait
  // for a CPU while the guest keeps one busy); the vCPU that parks last
  // wakes this thread for the last pages and hands the capture to the
  // event loop. After kPauseTimeout the guest runs on, and a capture
  // that comes late does nothing.
  auto abandoned = std::make_shared<std::atomic<bool>>(false);
  machine.request_pause([&machine, stop, capture, abandoned] {
    stop->set_value(Clock::now());
    machine.post([&machine, capture, abandoned] {
      try {
        if (abandoned->load()) throw std::runtime_error("the pause was given up");
        capture->set_value(machine.capture_state());
      } catch (...) {
        if (!abandoned->load()) machine.resume();
        capture->set_exception(std::current_exception());
      }
    });
  });
  if (stopped_future.wait_for(kPauseTimeout) != std::future_status::ready) {
    abandoned->store(true);
    on_event_loop<bool>(machine, [&machine] {
      machine.resume();
      return true;
    });
    throw std::runtime_error("a vCPU did not stop within 5 s");
  }
  const Clock::time_point stopped = stopped_future.get();
  const bool debug = log::enabled(log::Level::kDebug);
  auto step = [stopped, debug](const char* what) {
    if (!debug) return;
    log::debug(std::string("migration pause: ") + what + " at " +
               std::to_string(micros(Clock::now() - stopped)));
  };
  if (debug) {
    log::debug("migration pause: vCPUs stopped " + std::to_string(micros(stopped - asked)) +
               " us after the request");
  }

  std::optional<state::v1::VmState> captured;
  // The last pages, the totals and the state leave as one push.
  channel_->hold(true);
  try {
    dirty_log_->peek_into(dirty);  // the log ends here
    pages.add_marked(dirty);
    step("last dirty pages queued");
    captured = from_event_loop(captured_future);
  } catch (...) {
    // The stream broke while the capture ran: the guest stays paused only
    // if the capture succeeded, and run() resumes it then.
    if (captured_future.valid() &&
        captured_future.wait_for(std::chrono::seconds(10)) == std::future_status::ready) {
      try {
        captured_future.get();
        paused_ = true;
      } catch (...) {
      }
    }
    throw;
  }
  paused_ = true;
  step("state captured");
  // What the devices wrote while they quiesced.
  memory.dirty().harvest_into(device_marks);
  pages.add_marked(device_marks);
  state::v1::VmState& state = *captured;
  // The guest's time goes on while the state travels (see ClockState).
  state.mutable_clock()->set_advance_by_wall_time(true);

  mpb::Totals totals;
  {
    std::lock_guard guard(mutex_);
    totals.set_pages_sent(info_.pages_sent() + pages.pages());
    totals.set_zero_pages_sent(info_.zero_pages_sent() + pages.zero_pages());
    totals.set_rounds(info_.rounds_total());
  }
  channel_->send(FrameType::kTotals, totals);
  channel_->hold(false);
  channel_->send(FrameType::kState, state);
  step("last pages and state sent");
  {
    std::lock_guard guard(mutex_);
    info_.set_final_pages(pages.pages() + pages.zero_pages());
    info_.set_final_bytes(channel_->bytes_sent() - sent_before);
    info_.set_pages_sent(totals.pages_sent());
    info_.set_zero_pages_sent(totals.zero_pages_sent());
    info_.set_phase(pb::MIGRATION_PHASE_HANDOVER);
  }
  // While the destination applies the state: every write the guest was
  // told is done reaches the disks' storage before the guest may run there.
  machine_.sync_disks();
  step("disks synced");

  FrameChannel::Frame answer = channel_->receive();
  if (answer.type == FrameType::kVerdict) {
    mpb::Verdict verdict;
    verdict.ParseFromArray(answer.payload.data(), static_cast<int>(answer.payload.size()));
    throw InputError("the destination refused the VM state: " + peer_says(verdict.message()));
  }
  if (answer.type != FrameType::kReady) {
    throw StreamError(std::string("expected ready from the destination, got ") +
                      frame_name(answer.type));
  }
  step("destination ready");
  {
    std::lock_guard guard(mutex_);
    if (cancelled_.load()) throw StreamError("cancelled");
    go_sent_ = true;  // from here on, cancel is refused
  }
  // The images are the destination's from here: it claims them before its
  // guest runs (a resume here claims them back first).
  machine_.release_disks();
  channel_->send(FrameType::kGo);

  answer = channel_->receive();
  if (answer.type != FrameType::kRunning) {
    throw StreamError(std::string("expected running from the destination, got ") +
                      frame_name(answer.type));
  }
  step("destination running");
  std::lock_guard guard(mutex_);
  info_.set_downtime_us(micros(Clock::now() - stopped));
}

pb::MigrationInfo MigrationSender::run() {
  {
    std::lock_guard guard(mutex_);
    started_ = Clock::now();
  }
  // A cancel not taken up within a second (the sender waits on a silent
  // destination) closes the connection under it.
  std::thread watchdog([this] {
    jail::confine_thread(jail::ThreadKind::kWorker, "migrate-watch");
    std::unique_lock lock(mutex_);
    cancel_changed_.wait(lock, [this] { return cancelled_.load() || finished_; });
    if (cancel_changed_.wait_for(lock, std::chrono::seconds(1), [this] { return finished_; }))
      return;
    if (channel_) channel_->shutdown();
  });
  pb::MigrationInfo outcome = run_steps();
  {
    std::lock_guard guard(mutex_);
    finished_ = true;
  }
  cancel_changed_.notify_all();
  watchdog.join();
  return outcome;
}

pb::MigrationInfo MigrationSender::run_steps() {
  try {
    connect_and_check();
    // The pause runs code this process may not have run yet: run it now
    // (after the shape: state_caps is known then).
    machine_.rehearse_state();
    first_pass();
    stop_and_copy(dirty_rounds());
    set_phase(pb::MIGRATION_PHASE_COMPLETED);
    pb::MigrationInfo done = info();
    machine_.hand_over("the guest runs at " + settings_.to.text + " (paused " +
                       std::to_string(done.downtime_us() / 1000.0) + " ms)");
    return done;
  } catch (const std::exception& e) {
    dirty_log_.reset();
    std::string message = e.what();
    pb::MigrationPhase phase = pb::MIGRATION_PHASE_FAILED;
    if (go_sent_) {
      phase = pb::MIGRATION_PHASE_UNCERTAIN;
      message = "the destination was told to run the guest and did not confirm (" + message +
                "): the guest stays paused here; check the destination, then resume or kill "
                "this one";
    } else {
      if (cancelled_.load()) {
        phase = pb::MIGRATION_PHASE_CANCELLED;
        message = "cancelled";
      }
      if (paused_) machine_.resume();
      if (channel_ && !channel_->is_shut_down()) {
        try {
          mpb::Verdict why;
          why.set_message(message);
          channel_->hold(false);  // the cancel pushes what a failed pause held
          channel_->send(FrameType::kCancel, why);
        } catch (const std::exception&) {
          // The destination is gone already: it ends the migration itself.
        }
      }
      message += "; the guest runs on here";
    }
    if (channel_) channel_->shutdown();
    std::lock_guard guard(mutex_);
    info_.set_phase(phase);
    info_.set_error(message);
    pb::MigrationInfo copy = info_;
    copy.set_elapsed_ms(micros(Clock::now() - started_) / 1000);
    if (channel_) copy.set_bytes_sent(channel_->bytes_sent());
    return copy;
  }
}

}  // namespace keel::migration
