// KVM's coalesced I/O ring: writes to registered ports are queued by KVM
// instead of exiting to the VMM, and applied by the VMM before it handles
// the next exit (and by a timer, for a guest that makes none: see
// CoalescedIoPoller). Used for the PCI configuration address register
// (0xCF8): a guest's PCI scan then costs one exit per configuration access
// instead of two (Linux's early AMD GART scan alone reads 65536 functions);
// and for COM1's transmit register (see Machine::create_vcpus).
#pragma once

#include <cstdint>
#include <mutex>

#include "devices/pc/io_bus.h"
#include "vmm/kvm/kvm_vm.h"

namespace keel::kvm {

class CoalescedIo {
 public:
  // `ring` is the ring page in a vCPU's kvm_run mapping (every vCPU maps the
  // same page); `ring_page_offset` is what KVM_CAP_COALESCED_MMIO returned.
  CoalescedIo(uint8_t* vcpu_run_mapping, int ring_page_offset);

  // Makes writes of `length` bytes at `port` coalesced. Throws on failure.
  static void register_port(Vm& vm, uint16_t port, uint32_t length);

  // Applies every queued write to `bus`, in order; returns how many entries
  // it took from the ring. Any thread: callers are serialized, and a caller
  // that finds the ring empty knows every earlier write has been applied.
  size_t drain(IoBus& bus);

 private:
  std::mutex mutex_;
  uint8_t* ring_;
};

}  // namespace keel::kvm
