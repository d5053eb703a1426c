// The machine's vCPUs and their threads: each thread runs KVM_RUN and hands
// every exit to the machine; the set parks them all outside KVM_RUN
// (pause) and lets them go again, or stops them for good.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <ctime>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "vmm/kvm/kvm_vcpu.h"

namespace keel {

class VcpuSet {
 public:
  using ExitHandler = std::function<void(kvm::Vcpu&)>;
  using FailureHandler = std::function<void(kvm::Vcpu&, const std::exception&)>;

  explicit VcpuSet(std::vector<kvm::Vcpu> vcpus) : vcpus_(std::move(vcpus)) {}
  ~VcpuSet() { stop(); }
  VcpuSet(const VcpuSet&) = delete;
  VcpuSet& operator=(const VcpuSet&) = delete;

  std::vector<kvm::Vcpu>& all() { return vcpus_; }
  kvm::Vcpu& operator[](size_t i) { return vcpus_[i]; }
  size_t size() const { return vcpus_.size(); }

  // One thread per vCPU. on_exit runs on the vCPU's thread for each exit;
  // when it or KVM_RUN throws, on_failure runs and that thread ends.
  void start(ExitHandler on_exit, FailureHandler on_failure);
  // start() with every thread parked at once, until resume().
  void start_parked(ExitHandler on_exit, FailureHandler on_failure);
  bool started() const { return !threads_.empty(); }

  // Parks every running vCPU outside KVM_RUN, an I/O exit in progress
  // finished first; false when one did not get there within `timeout` (the
  // request stands until resume()).
  bool pause(std::chrono::milliseconds timeout);
  // pause() without the wait: asks every vCPU to park and returns at once.
  // `all_parked` runs once every vCPU is parked: on the thread of the vCPU
  // that parked last, or here when all already are; never if resume() or
  // stop() comes first. Keep it short (it may run on a vCPU thread).
  void request_pause(std::function<void()> all_parked);
  void resume();
  bool pause_requested() const { return pause_requested_.load(); }

  // What each vCPU did, for metrics: exits by reason (kExitReasons' order),
  // and its thread's CPU time (the guest's time plus exit handling; not the
  // time it sat halted). From any thread.
  static constexpr std::array<const char*, 8> kExitReasons = {
      "io", "mmio", "hlt", "shutdown", "system_event", "intr", "other", "signal"};
  struct Activity {
    std::array<uint64_t, kExitReasons.size()> exits{};
    std::optional<std::chrono::nanoseconds> cpu_time;  // none before its thread started
  };
  std::vector<Activity> activity() const;

  // From any thread: no vCPU enters the guest again.
  void request_stop() { stopping_.store(true, std::memory_order_seq_cst); }
  bool stopping() const { return stopping_.load(); }
  // request_stop(), then each thread kicked out of KVM_RUN and joined. Not
  // from a vCPU thread.
  void stop();

 private:
  void loop(kvm::Vcpu& vcpu);
  void park_if_paused();
  void kick_all();

  struct Counters {
    std::array<std::atomic<uint64_t>, kExitReasons.size()> exits{};
    std::atomic<clockid_t> cpu_clock{0};
    std::atomic<bool> clock_known{false};
  };
  void count_exit(Counters& counters, kvm::Vcpu& vcpu, bool exited);

  std::vector<kvm::Vcpu> vcpus_;
  std::unique_ptr<Counters[]> counters_ = std::make_unique<Counters[]>(vcpus_.size());
  std::vector<std::thread> threads_;
  ExitHandler on_exit_;
  FailureHandler on_failure_;
  std::atomic<bool> stopping_{false};
  std::mutex pause_mutex_;
  std::condition_variable pause_cv_;
  std::atomic<bool> pause_requested_{false};
  size_t parked_ = 0;
  std::function<void()> all_parked_;  // request_pause's, until it runs
};

}  // namespace keel
