#include "migration/run_permit.h"

#include <algorithm>
#include <utility>

#include "common/error.h"
#include "common/log.h"
#include "vmm/jail/syscall_filter.h"

namespace keel::migration {

namespace {

constexpr uint32_t kLeastRunPermitMs = 100;
constexpr uint32_t kLongestRunPermitMs = 60000;

}  // namespace

std::chrono::milliseconds passive_silence_limit(uint32_t run_permit_ms) {
  if (run_permit_ms < kLeastRunPermitMs || run_permit_ms > kLongestRunPermitMs) {
    throw InputError("the active's run permit is " + std::to_string(run_permit_ms) +
                     " ms, not within " + std::to_string(kLeastRunPermitMs) + " to " +
                     std::to_string(kLongestRunPermitMs) + " ms (an older keel-vmm?)");
  }
  return std::chrono::milliseconds(run_permit_ms + std::max<uint32_t>(250, run_permit_ms / 2));
}

RunPermit::RunPermit(std::function<void()> request_pause, std::chrono::milliseconds length)
    : request_pause_(std::move(request_pause)), length_(length) {
  watcher_ = std::thread([this] {
    jail::confine_thread(jail::ThreadKind::kWorker, "run permit");
    watch();
  });
}

RunPermit::~RunPermit() {
  end();
  watcher_.join();
}

bool RunPermit::grant_from(Clock::time_point heard) {
  std::lock_guard guard(mutex_);
  if (revoked_) return paused_guest_;  // a late acknowledgement lifts nothing
  granted_ = true;
  until_ = std::max(until_, heard + length_);
  changed_.notify_all();
  return paused_guest_;
}

bool RunPermit::resume_if_valid(const std::function<void()>& resume) {
  std::lock_guard guard(mutex_);
  if (!ended_ && (revoked_ || (granted_ && Clock::now() >= until_))) {
    paused_guest_ = true;  // the watch need not pause it again
    return false;
  }
  resume();
  paused_guest_ = false;
  changed_.notify_all();
  return true;
}

void RunPermit::keep_paused() {
  std::lock_guard guard(mutex_);
  paused_guest_ = true;
}

void RunPermit::revoke() {
  {
    std::lock_guard guard(mutex_);
    granted_ = true;
    revoked_ = true;
    paused_guest_ = true;
    changed_.notify_all();
  }
  // Asked before the caller goes on (the pause is requested when this
  // returns; the vCPUs park as soon as they leave the guest).
  request_pause_();
}

bool RunPermit::end() {
  std::lock_guard guard(mutex_);
  ended_ = true;
  changed_.notify_all();
  return std::exchange(paused_guest_, false);
}

void RunPermit::watch() {
  std::unique_lock lock(mutex_);
  while (!ended_) {
    if (!granted_ || paused_guest_) {
      changed_.wait(lock);
      continue;
    }
    if (Clock::now() < until_) {
      changed_.wait_until(lock, until_);
      continue;
    }
    // Past the permit: the passive may take over soon. Asked under the
    // lock (only kicks go out; the vCPUs park as soon as they leave the
    // guest), so that no resume_if_valid decided before can undo it.
    paused_guest_ = true;
    request_pause_();
    const auto late = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - until_);
    lock.unlock();
    log::info("replica: no acknowledgement within the run permit (" +
              std::to_string(length_.count()) + " ms, " + std::to_string(late.count()) +
              " ms late): the guest waits");
    lock.lock();
  }
}

}  // namespace keel::migration
