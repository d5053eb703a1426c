#include "migration/vcpu_throttle.h"

#include <algorithm>

#include "common/log.h"
#include "vmm/jail/syscall_filter.h"

namespace keel::migration {

namespace {
constexpr auto kPeriod = std::chrono::milliseconds(20);
}

void VcpuThrottle::set_percent(uint32_t percent) {
  percent_.store(std::min<uint32_t>(percent, 99));
  std::lock_guard guard(mutex_);
  if (!thread_.joinable() && percent > 0 && !stopping_) thread_ = std::thread([this] { loop(); });
  changed_.notify_all();
}

uint32_t VcpuThrottle::raise(uint32_t start, uint32_t step, uint32_t max) {
  const uint32_t now = percent();
  const uint32_t next = now == 0 ? start : std::min(max, now + step);
  if (next != now) set_percent(next);
  return percent();
}

void VcpuThrottle::halt() {
  std::lock_guard guard(mutex_);
  stopping_ = true;
  changed_.notify_all();
}

void VcpuThrottle::stop() {
  halt();
  if (thread_.joinable()) thread_.join();
}

// Each period: stopped for percent% of it, then running for the rest. The
// waits end early on stop(), so the migration never waits a period out.
void VcpuThrottle::loop() {
  jail::confine_thread(jail::ThreadKind::kWorker, "throttle");
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    const uint32_t p = percent_.load();
    if (p == 0) {
      changed_.wait(lock);
      continue;
    }
    const auto held = kPeriod * p / 100;
    lock.unlock();
    std::unique_lock turn(turn_);
    {
      std::lock_guard guard(mutex_);  // stopped while a hold_off() held it
      if (stopping_) break;
    }
    const bool paused = machine_.pause(std::chrono::milliseconds(1000));
    if (paused) {
      lock.lock();
      changed_.wait_for(lock, held, [this] { return stopping_; });
      lock.unlock();
      try {
        if (resume_) {
          resume_();
        } else {
          machine_.resume();
        }
      } catch (const std::exception& e) {
        // The machine is going away (its event loop did not answer).
        log::warning(std::string("throttling: could not resume the vCPUs: ") + e.what());
      }
    }
    turn.unlock();
    lock.lock();
    if (!paused) log::warning("throttling: a vCPU did not stop within 1 s");
    changed_.wait_for(lock, kPeriod - held, [this] { return stopping_; });
  }
}

}  // namespace keel::migration
