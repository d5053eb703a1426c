// ReplicaSender's planned handover (replica_sender.h): the last epoch's
// live pre-copy, the pause's steps, and go/running.
#include <algorithm>

#include "common/log.h"
#include "migration/event_loop_call.h"
#include "migration/micros.h"
#include "migration/page_sender.h"
#include "migration/replica_sender.h"
#include "migration/vcpu_throttle.h"
#include "proto/migration.pb.h"

namespace keel::migration {

namespace pb = ::keel::api::v1;
namespace mpb = ::keel::migration::v1;
using Clock = std::chrono::steady_clock;

std::string ReplicaSender::switchover() {
  std::lock_guard guard(mutex_);
  if (info_.phase() != pb::REPLICA_PHASE_PROTECTED)
    return "the guest is not protected yet (replica-status)";
  if (switching_.load()) return "a switchover is under way";
  switching_.store(true);
  info_.set_phase(pb::REPLICA_PHASE_SWITCHING_OVER);
  stop_changed_.notify_all();
  return "";
}

// A switchover's last epoch begins as a migration's rounds do, while the
// guest runs: the pages written since the last checkpoint go live (they
// belong to the epoch under way, which the passive applies only whole, so
// a page sent now and written again is sent again in the pause, later in
// the epoch, and wins), round after round until what is left would go
// within kPauseTarget at the rounds' own rate; the pause then copies only
// the rest. A guest writing as fast as the link sends is throttled from
// the second round on, as a migration's is (its vCPUs held a growing share
// of each 20 ms), and let go again only through the run permit. Without
// this, a fast writer's pause holds a whole epoch's pages.
void ReplicaSender::precopy_last_epoch() {
  constexpr int kMaxRounds = 30;
  constexpr auto kPauseTarget = std::chrono::milliseconds(5);
  constexpr uint64_t kSmallEnough = 256;  // pages: about a millisecond on loopback
  constexpr uint32_t kThrottleStart = 30;
  constexpr uint32_t kThrottleStep = 20;
  constexpr uint32_t kThrottleMax = 99;
  GuestMemory& memory = machine_.guest_memory();
  VcpuThrottle throttle(machine_, [this] { resume_if_permitted(); });
  double bandwidth = 0;  // bytes per second, the last round's
  for (int round = 0; round < kMaxRounds; ++round) {
    // The VMM's marks leave their bitmap with a peek: what is not sent now
    // is carried to the pause.
    carried_ = dirty_log_->peek();
    const uint64_t left = kvm::DirtyLog::count(carried_);
    const bool fits = left <= kSmallEnough ||
                      (bandwidth > 0 && static_cast<double>(left * kPageSize) / bandwidth <=
                                            std::chrono::duration<double>(kPauseTarget).count());
    // Fits, or as much as the passive keeps for one epoch (four times
    // memory, the pause's pages and entry words besides) sent already.
    if (fits || precopied_pages_ + precopied_zero_pages_ + left > 2 * memory.size() / kPageSize) {
      return;
    }
    if (round >= 1) {
      const uint32_t now = throttle.raise(kThrottleStart, kThrottleStep, kThrottleMax);
      std::lock_guard guard(mutex_);
      info_.set_throttle_percent(now);
    }
    dirty_log_->reprotect_peeked();  // before the copies: later writes are logged again
    const auto begin = Clock::now();
    const uint64_t sent_before = channel_->bytes_sent();
    PageSender pages(*channel_, memory.host_base(), memory.size(), 0);
    pages.set_cancel_check(&stopping_);
    pages.add_marked(carried_);
    precopied_pages_ += pages.pages();
    precopied_zero_pages_ += pages.zero_pages();
    carried_.clear();
    const double took = std::chrono::duration<double>(Clock::now() - begin).count();
    const uint64_t bytes = channel_->bytes_sent() - sent_before;
    // Small rounds measure latency, not bandwidth: the estimate stays then.
    if (bytes >= (1u << 20) || bandwidth == 0)
      bandwidth = static_cast<double>(bytes) / std::max(1e-6, took);
  }
}

// KEEL_LOG=debug: a switchover's pause step by step, from the vCPUs'
// stopping (keel-migbench --trace shows these beside the passive's).
void ReplicaSender::switchover_step(Clock::time_point stopped, const char* what) {
  if (!log::enabled(log::Level::kDebug)) return;
  log::debug(std::string("switchover pause: ") + what + " at " +
             std::to_string(micros(Clock::now() - stopped)) + " us");
}

void ReplicaSender::hand_over(uint64_t epoch, Clock::time_point stopped) {
  MigratableMachine& machine = machine_;
  // The guest stays stopped here from now on: no permit needed, and the
  // passive's answer may take as long as a migration's.
  permit_->end();
  channel_->set_timeout(std::chrono::duration_cast<std::chrono::milliseconds>(kStreamTimeout));
  // The passive's copy believes the last epoch's output was sent: it goes
  // now, before the guest runs there.
  on_event_loop<bool>(machine, [&machine, epoch] {
    machine.release_output(epoch);
    machine.hold_output(false);
    return true;
  });
  {
    std::lock_guard guard(mutex_);
    go_sent_ = true;
  }
  channel_->send(FrameType::kGo);
  switchover_step(stopped, "go sent");
  // The passive runs on its own copies of the disks, which hold this
  // epoch's blocks already: this host's images are flushed and let go while
  // it starts the guest, off the pause (they are copied whole again when
  // the stream turns around).
  machine.sync_disks();
  machine.release_disks();
  switchover_step(stopped, "disks synced and let go");
  FrameChannel::Frame answer = channel_->receive();
  if (answer.type == FrameType::kVerdict) {
    mpb::Verdict verdict;
    verdict.ParseFromArray(answer.payload.data(), static_cast<int>(answer.payload.size()));
    throw StreamError("the passive could not run the guest: " + peer_says(verdict.message()));
  }
  if (answer.type != FrameType::kRunning) {
    throw StreamError(std::string("expected running from the passive, got ") +
                      frame_name(answer.type));
  }
  std::lock_guard guard(mutex_);
  switchover_step(stopped, "running heard");
  info_.set_switchover_pause_us(micros(Clock::now() - stopped));
  info_.set_phase(pb::REPLICA_PHASE_SWITCHED_OVER);
}

}  // namespace keel::migration
