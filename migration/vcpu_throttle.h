// Auto-converge: when a guest writes memory faster than a migration can
// send it, its vCPUs are held stopped for a share of each short period, so
// the dirty rate falls until the final pause fits the target. Runs its own
// thread; percent 0 lets the guest run free.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>

#include "vmm/migratable_machine.h"

namespace keel::migration {

class VcpuThrottle {
 public:
  // `resume` lets the vCPUs run again after each held share (a replica's
  // through its run permit, which may keep them stopped); empty: the
  // machine's resume.
  explicit VcpuThrottle(MigratableMachine& machine, std::function<void()> resume = {})
      : machine_(machine), resume_(std::move(resume)) {}
  // Stops the thread and leaves the guest running.
  ~VcpuThrottle() { stop(); }
  VcpuThrottle(const VcpuThrottle&) = delete;
  VcpuThrottle& operator=(const VcpuThrottle&) = delete;

  // 0..99: the share of each 20 ms period the vCPUs spend stopped.
  void set_percent(uint32_t percent);
  uint32_t percent() const { return percent_.load(); }
  // One step harder: `start` from free, else `step` more, at most `max`;
  // the share now.
  uint32_t raise(uint32_t start, uint32_t step, uint32_t max);
  // Joins the thread; the vCPUs run when it returns.
  void stop();
  // Tells the thread to end, without waiting: it stops the vCPUs no more
  // (a held share under way still ends with its resume).
  void halt();
  // While the lock returned is held the throttle leaves the vCPUs alone (a
  // held share under way ends first), so that a caller may pause and
  // resume them itself: a replica's checkpoint.
  std::unique_lock<std::mutex> hold_off() { return std::unique_lock(turn_); }

 private:
  void loop();

  MigratableMachine& machine_;
  std::function<void()> resume_;
  std::atomic<uint32_t> percent_{0};
  std::mutex turn_;  // held from each pause to its resume, or by hold_off()
  std::mutex mutex_;
  std::condition_variable changed_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace keel::migration
