// A guest of a few instructions for dirty-tracking tests and benchmarks: one
// vCPU in 64-bit mode that increments a qword in each of `pages` pages,
// `stride` bytes apart from `first`, then reports the pass on port kPort
// (an I/O exit), again and again. Memory is the given regions, slot i for
// region i; the code and page tables sit in the region holding 0.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/guest_memory.h"
#include "vmm/kvm/kvm_system.h"

namespace keel::testing {

inline constexpr uint16_t kLoopGuestPort = 0x10;

struct LoopGuestShape {
  std::vector<GuestRegion> regions;  // one must start at guest address 0
  uint64_t first = 0;                // guest address of the first page written
  uint64_t pages = 0;
  uint64_t stride = 4096;
  uint32_t ring_bytes = 0;  // the dirty ring on (before the vCPU) instead of the bitmap
};

struct LoopGuest {
  explicit LoopGuest(const LoopGuestShape& shape);
  kvm::System kvm;
  kvm::Vm vm;
  GuestMemory memory;
  std::optional<kvm::Vcpu> vcpu;
};

// The guest on its own thread, counting passes. `on_ring_full` (if set) runs
// on that thread at KVM_EXIT_DIRTY_RING_FULL, before it enters again.
class RunningGuest {
 public:
  explicit RunningGuest(kvm::Vcpu& vcpu, std::function<void()> on_ring_full = {});
  ~RunningGuest();
  RunningGuest(const RunningGuest&) = delete;
  RunningGuest& operator=(const RunningGuest&) = delete;

  uint64_t passes() const { return passes_.load(); }
  uint64_t ring_full_exits() const { return ring_full_.load(); }
  // Waits until the guest finished `n` more passes than `from`; false (see
  // error()) when it stopped or made no progress for two minutes.
  bool wait_passes(uint64_t from, uint64_t n);
  // Stops the thread; the error that stopped it early, if any.
  std::string stop();
  std::string error() const;

 private:
  void run();

  kvm::Vcpu& vcpu_;
  std::function<void()> on_ring_full_;
  std::atomic<uint64_t> passes_{0}, ring_full_{0};
  std::atomic<bool> stop_{false};
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::string error_;
  std::thread thread_;
};

}  // namespace keel::testing
