#include "vmm/vcpu_set.h"

#include <linux/kvm.h>
#include <pthread.h>
#include <signal.h>
#include <time.h>

#include <string>

#include "common/error.h"
#include "vmm/jail/syscall_filter.h"

namespace keel {

namespace {

// Sent to a vCPU thread to break it out of KVM_RUN; the handler does
// nothing, the point is the EINTR.
constexpr int kKickSignal = SIGUSR1;

void install_kick_handler() {
  struct sigaction action {};
  action.sa_handler = [](int) {};
  sigemptyset(&action.sa_mask);
  action.sa_flags = 0;  // no SA_RESTART: KVM_RUN must return
  if (::sigaction(kKickSignal, &action, nullptr) < 0) throw_errno("sigaction");
}

}  // namespace

void VcpuSet::start(ExitHandler on_exit, FailureHandler on_failure) {
  install_kick_handler();
  on_exit_ = std::move(on_exit);
  on_failure_ = std::move(on_failure);
  for (auto& vcpu : vcpus_) threads_.emplace_back([this, &vcpu] { loop(vcpu); });
}

void VcpuSet::start_parked(ExitHandler on_exit, FailureHandler on_failure) {
  {
    std::lock_guard lock(pause_mutex_);
    pause_requested_.store(true, std::memory_order_seq_cst);
  }
  start(std::move(on_exit), std::move(on_failure));
}

void VcpuSet::loop(kvm::Vcpu& vcpu) {
  try {
    jail::confine_thread(jail::ThreadKind::kVcpu, ("vcpu" + std::to_string(vcpu.id())).c_str());
    Counters& counters = counters_[static_cast<size_t>(&vcpu - vcpus_.data())];
    clockid_t clock{};
    if (::pthread_getcpuclockid(::pthread_self(), &clock) == 0) {
      counters.cpu_clock.store(clock);
      counters.clock_known.store(true);
    }
    // stop() sets stopping_ before it asks for an immediate exit, and both
    // sides use sequentially consistent operations: a vCPU that clears
    // immediate_exit after an unrelated signal sees stopping_ on its next
    // check, so it never re-enters the guest with the kick lost.
    // Whether the last KVM_RUN ended in an exit handed to on_exit_: an I/O
    // or MMIO exit is finished (a read's value reaches the registers) only
    // by the next KVM_RUN. One that ended on a kick (EINTR) left nothing.
    bool exit_to_finish = false;
    while (!stopping_.load(std::memory_order_seq_cst)) {
      if (pause_requested_.load(std::memory_order_seq_cst)) {
        // A KVM_RUN with immediate_exit set finishes the exit and returns
        // without entering the guest (api.rst, kvm_run.immediate_exit), so
        // the state a capture reads is complete. Finishing one may make
        // another (a string I/O that goes on, as long as the guest's count
        // says): that one is handled and finished by the next KVM_RUN, not
        // here, so no guest keeps a pause waiting.
        if (exit_to_finish) {
          vcpu.request_immediate_exit();
          exit_to_finish = vcpu.enter();
          count_exit(counters, vcpu, exit_to_finish);
          if (exit_to_finish) on_exit_(vcpu);
          vcpu.clear_immediate_exit();
        }
        park_if_paused();
        continue;
      }
      exit_to_finish = vcpu.enter();
      count_exit(counters, vcpu, exit_to_finish);
      if (exit_to_finish) {
        on_exit_(vcpu);
      } else {
        vcpu.clear_immediate_exit();
      }
    }
    counters_[static_cast<size_t>(&vcpu - vcpus_.data())].clock_known.store(false);
  } catch (const std::exception& e) {
    counters_[static_cast<size_t>(&vcpu - vcpus_.data())].clock_known.store(false);
    try {
      on_failure_(vcpu, e);
    } catch (...) {
      request_stop();
    }
  }
}

// On the vCPU's thread, the only writer: a relaxed load and store, no
// locked instruction per exit.
void VcpuSet::count_exit(Counters& counters, kvm::Vcpu& vcpu, bool exited) {
  size_t reason = kExitReasons.size() - 1;  // signal: a kick ended KVM_RUN
  if (exited) {
    switch (vcpu.run()->exit_reason) {
      case KVM_EXIT_IO:
        reason = 0;
        break;
      case KVM_EXIT_MMIO:
        reason = 1;
        break;
      case KVM_EXIT_HLT:
        reason = 2;
        break;
      case KVM_EXIT_SHUTDOWN:
        reason = 3;
        break;
      case KVM_EXIT_SYSTEM_EVENT:
        reason = 4;
        break;
      case KVM_EXIT_INTR:
        reason = 5;
        break;
      default:
        reason = 6;
        break;
    }
  }
  auto& counter = counters.exits[reason];
  counter.store(counter.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
}

std::vector<VcpuSet::Activity> VcpuSet::activity() const {
  std::vector<Activity> all(vcpus_.size());
  for (size_t i = 0; i < all.size(); ++i) {
    for (size_t r = 0; r < kExitReasons.size(); ++r) {
      all[i].exits[r] = counters_[i].exits[r].load(std::memory_order_relaxed);
    }
    timespec ts{};
    // A thread that ended has no clock any more: its time is not known.
    if (counters_[i].clock_known.load() &&
        ::clock_gettime(counters_[i].cpu_clock.load(), &ts) == 0) {
      all[i].cpu_time = std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec);
    }
  }
  return all;
}

// On a vCPU thread, between KVM_RUNs: waits while the set is paused.
void VcpuSet::park_if_paused() {
  std::function<void()> all_parked;
  std::unique_lock lock(pause_mutex_);
  ++parked_;
  pause_cv_.notify_all();
  // vcpus_, not threads_: start() may still be adding threads.
  if (parked_ == vcpus_.size() && all_parked_) all_parked.swap(all_parked_);
  if (all_parked) {
    // Outside the lock: it may post to the event loop, which may resume.
    lock.unlock();
    all_parked();
    lock.lock();
  }
  pause_cv_.wait(lock, [this] { return !pause_requested_.load() || stopping_.load(); });
  --parked_;
}

// The flag first, then the kick: a vCPU either sees the flag before it
// enters or leaves KVM_RUN at once.
void VcpuSet::kick_all() {
  for (size_t i = 0; i < threads_.size(); ++i) {
    vcpus_[i].request_immediate_exit();
    ::pthread_kill(threads_[i].native_handle(), kKickSignal);
  }
}

bool VcpuSet::pause(std::chrono::milliseconds timeout) {
  {
    std::lock_guard lock(pause_mutex_);
    pause_requested_.store(true, std::memory_order_seq_cst);
  }
  kick_all();
  std::unique_lock lock(pause_mutex_);
  return pause_cv_.wait_for(lock, timeout,
                            [this] { return parked_ == threads_.size() || stopping_.load(); });
}

void VcpuSet::request_pause(std::function<void()> all_parked) {
  std::function<void()> now;
  {
    std::lock_guard lock(pause_mutex_);
    pause_requested_.store(true, std::memory_order_seq_cst);
    if (parked_ == threads_.size()) {
      now = std::move(all_parked);
    } else if (all_parked_) {
      // A second asker while the first waits (an HA run permit running out
      // during a checkpoint's pause): both are told.
      all_parked_ = [first = std::move(all_parked_), second = std::move(all_parked)] {
        first();
        second();
      };
    } else {
      all_parked_ = std::move(all_parked);
    }
  }
  if (now) {
    now();
    return;
  }
  kick_all();
}

void VcpuSet::resume() {
  std::lock_guard lock(pause_mutex_);
  all_parked_ = nullptr;
  pause_requested_.store(false, std::memory_order_seq_cst);
  pause_cv_.notify_all();
}

void VcpuSet::stop() {
  request_stop();
  {
    std::lock_guard guard(pause_mutex_);  // parked vCPUs wake up and leave
    pause_cv_.notify_all();
  }
  for (size_t i = 0; i < threads_.size(); ++i) {
    if (!threads_[i].joinable()) continue;
    vcpus_[i].request_immediate_exit();
    ::pthread_kill(threads_[i].native_handle(), kKickSignal);
    threads_[i].join();
  }
  threads_.clear();
}

}  // namespace keel
