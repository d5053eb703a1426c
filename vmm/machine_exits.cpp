// Machine, part two: what each KVM exit means (on the vCPU's thread).
#include <algorithm>
#include <cstring>
#include <string>

#include "common/hex.h"
#include "vmm/machine.h"

namespace keel {

// The product's answer: no hook (the port is like any unused one). The
// keel-vmm-testhooks executable links a strong definition
// (keel-vmm/guest_test_hook.cpp).
__attribute__((weak)) bool guest_test_hook(uint16_t, std::span<const uint8_t>) {
  return false;
}

void Machine::handle_exit(kvm::Vcpu& vcpu) {
  kvm_run* run = vcpu.run();
  // Queued writes (the PCI address register) happened before this exit.
  if (coalesced_io_) coalesced_io_->drain(devices_->io_bus());
  switch (run->exit_reason) {
    case KVM_EXIT_IO: {
      auto* data = reinterpret_cast<uint8_t*>(run) + run->io.data_offset;
      for (uint32_t i = 0; i < run->io.count; ++i) {
        std::span<uint8_t> bytes(data + size_t{i} * run->io.size, run->io.size);
        if (run->io.direction == KVM_EXIT_IO_OUT) {
          if (run->io.port == kGuestTestHookPort && guest_test_hook(run->io.port, bytes)) continue;
          devices_->io_bus().write(run->io.port, bytes);
        } else {
          devices_->io_bus().read(run->io.port, bytes);
        }
      }
      return;
    }
    case KVM_EXIT_MMIO: {
      const uint32_t len = std::min<uint32_t>(run->mmio.len, sizeof run->mmio.data);
      std::span<uint8_t> data(run->mmio.data, len);
      if (devices_->mmio(run->mmio.phys_addr, data, run->mmio.is_write)) return;
      // Nothing there: reads see all ones, writes go nowhere.
      if (!run->mmio.is_write) std::memset(run->mmio.data, 0xff, sizeof run->mmio.data);
      return;
    }
    case KVM_EXIT_INTR:
      return;
    case KVM_EXIT_HLT:
      // With the in-kernel LAPIC, HLT stays in the kernel; seeing it means
      // the guest halted with nothing left to wake it.
      request_stop({StopReason::kKvmError, "vCPU " + std::to_string(vcpu.id()) + " halted"});
      return;
    case KVM_EXIT_SHUTDOWN: {
      std::string detail = "vCPU " + std::to_string(vcpu.id()) + " triple fault";
      try {
        detail += " near rip " + hex(vcpu.get_regs().rip);
      } catch (const std::exception&) {
      }
      request_stop({StopReason::kTripleFault, detail});
      return;
    }
    case KVM_EXIT_SYSTEM_EVENT:
      switch (run->system_event.type) {
        case KVM_SYSTEM_EVENT_SHUTDOWN:
          request_stop({StopReason::kPowerOff, ""});
          return;
        case KVM_SYSTEM_EVENT_RESET:
          request_stop({StopReason::kReboot, "reset system event"});
          return;
        default:
          request_stop(
              {StopReason::kTripleFault, "system event " + std::to_string(run->system_event.type)});
          return;
      }
    case KVM_EXIT_FAIL_ENTRY:
      request_stop({StopReason::kKvmError, "vCPU " + std::to_string(vcpu.id()) +
                                               " entry failed, hardware reason " +
                                               hex(run->fail_entry.hardware_entry_failure_reason)});
      return;
    case KVM_EXIT_INTERNAL_ERROR: {
      std::string detail = "vCPU " + std::to_string(vcpu.id()) + " KVM internal error, suberror " +
                           std::to_string(run->internal.suberror);
      try {
        detail += " at rip " + hex(vcpu.get_regs().rip);
      } catch (const std::exception&) {
      }
      request_stop({StopReason::kKvmError, detail});
      return;
    }
    default:
      request_stop({StopReason::kKvmError, "vCPU " + std::to_string(vcpu.id()) +
                                               " unexpected KVM exit " +
                                               std::to_string(run->exit_reason)});
      return;
  }
}

}  // namespace keel
