// ReplicaSender's planned handover (replica_sender.h): the epochs that
// make the last one small, the pause's steps, and go/running.
#include <algorithm>

#include "common/log.h"
#include "migration/micros.h"
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

// Before a switchover's last checkpoint, the epochs go on back to back
// (no wait between them), each applied and acknowledged by the passive as
// any other, until what the guest wrote since the last one would be sent
// within a quarter of kPauseTarget at the epochs' own rate (a migration's
// rule); the last epoch then holds only that. A guest writing as fast as the epochs travel is
// throttled from the second on, as a migration's is (its vCPUs held a
// growing share of each 20 ms, taking turns with the checkpoints' pauses),
// and let go only through the run permit. (Pre-copying the last epoch live
// instead left its whole bulk for the passive to apply in the pause: an
// epoch is applied only once it is whole.)
uint64_t ReplicaSender::converge_for_switchover(uint64_t epoch) {
  constexpr int kMaxEpochs = 30;
  constexpr auto kPauseTarget = std::chrono::milliseconds(5);
  constexpr uint64_t kSmallEnough = 64;  // pages: well under a millisecond on loopback
  constexpr uint32_t kThrottleStart = 30;
  constexpr uint32_t kThrottleStep = 20;
  constexpr uint32_t kThrottleMax = 99;
  VcpuThrottle throttle(machine_, [this] { resume_if_permitted(); });
  throttle_ = &throttle;
  struct Unset {
    VcpuThrottle*& throttle;
    ~Unset() { throttle = nullptr; }
  } unset{throttle_};
  for (int round = 0; round < kMaxEpochs; ++round) {
    // replica-stop meanwhile: no switchover.
    if (stopping_.load()) throw StreamError("stopped");
    // A look, not a harvest: the checkpoint next starts from it.
    carried_ = dirty_log_->peek();
    const uint64_t left = kvm::DirtyLog::count(carried_);
    // As a migration's rounds: the pages decide, not the round trips a
    // pause holds besides (they would throttle an idle guest). The link's
    // rate from a big epoch; without one yet, the epochs' smoothed rate
    // (acknowledgements included: lower).
    double rate = send_rate_;
    if (rate == 0) rate = static_cast<double>(info().bandwidth_bytes_per_s());
    if (left <= kSmallEnough ||
        (rate > 0 && static_cast<double>(left * kPageSize) / rate <=
                         std::chrono::duration<double>(kPauseTarget).count() / 4)) {
      break;
    }
    if (round >= 1) {
      const uint32_t now = throttle.raise(kThrottleStart, kThrottleStep, kThrottleMax);
      std::lock_guard guard(mutex_);
      info_.set_throttle_percent(now);
    }
    checkpoint(epoch++, false);
  }
  // The last checkpoint pauses the guest for good: the throttle must not
  // resume it after that.
  throttle.stop();
  return epoch;
}

// KEEL_LOG=debug: a switchover's pause step by step, from the vCPUs'
// stopping (keel-migbench --trace shows these beside the passive's).
void ReplicaSender::switchover_step(Clock::time_point stopped, const std::string& what) {
  if (!log::enabled(log::Level::kDebug)) return;
  log::debug("switchover pause: " + what + " at " + std::to_string(micros(Clock::now() - stopped)) +
             " us");
}

void ReplicaSender::hand_over(uint64_t epoch, Clock::time_point stopped) {
  MigratableMachine& machine = machine_;
  // The guest stays stopped here from now on: no permit needed, and the
  // passive's answer may take as long as a migration's.
  permit_->end();
  channel_->set_timeout(std::chrono::duration_cast<std::chrono::milliseconds>(kStreamTimeout));
  // The passive's copy believes the last epoch's output was sent: it goes
  // now (the ack posted its release already), while the passive starts.
  machine.post([&machine, epoch] {
    machine.release_output(epoch);
    machine.hold_output(false);
  });
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
