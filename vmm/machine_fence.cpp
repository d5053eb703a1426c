// Machine, the fence: keel-vmm --fence-file. keel-agent moves the host's
// fence deadline forward while its lease holds (common/fence_deadline.h);
// once it passes, the guest is paused here, whatever the agent is doing (a
// stuck, stopped or dead agent cannot keep a cut-off host's guests
// running while the cluster's majority may start them elsewhere). The
// guest stays paused until a resume, which is refused while the deadline
// is past: whoever resumes it (keel-agent, once it knows the VM is still
// its host's) must have moved the deadline first.
#include "common/log.h"
#include "proto/control.pb.h"
#include "vmm/machine.h"

namespace keel {

namespace pb = keel::api::v1;

namespace {
// How often the deadline is looked at: the agent fences 1.5 s before its
// lease can expire elsewhere, so a tenth of a second late is well inside.
constexpr auto kFenceCheckEvery = std::chrono::milliseconds(100);
}  // namespace

void Machine::watch_fence() {
  if (!fence_) return;
  fence_timer_.emplace(events_);
  check_fence();
}

void Machine::check_fence() {
  const bool passed = fence_->passed();
  if (passed && !fenced_) {
    fenced_ = true;
    journal_.publish(pb::EVENT_TYPE_FENCED,
                     "the host's lease deadline passed: the guest is paused until keel-agent "
                     "resumes it");
    log::warning("fenced: the host's lease deadline passed " +
                 std::to_string(fence_->overdue_ms()) +
                 " ms ago; the guest is paused until keel-agent resumes it");
  } else if (!passed && fenced_) {
    fenced_ = false;
    log::info(
        "the host's lease deadline moved forward again; the guest stays paused until "
        "resumed");
  }
  if (fenced_ && !vcpus_->pause_requested() && !pausing_ && !vcpus_->stopping()) {
    if (extension_ && !extension_->may_pause_for_fence()) {
      // An outgoing migration: it must not hand the guest over now (the
      // destination's host may not own it); ended here, the guest paused
      // at the next look.
      pb::Request cancel;
      cancel.mutable_migrate_cancel();
      extension_->handle(cancel, [](pb::Response) {});
    } else if (!snapshot_writing_) {
      pause_then([this](bool parked) {
        if (!parked) return;  // tried again at the next look
        paused_at_ = std::chrono::steady_clock::now();
        paused_by_fence_ = true;
        ++pauses_;
      });
    }
  }
  fence_timer_->expires_after(kFenceCheckEvery);
  fence_timer_->async_wait([this](const boost::system::error_code& ec) {
    if (!ec) check_fence();
  });
}

bool Machine::fence_passed() const {
  return fence_ && fence_->passed();
}

}  // namespace keel
