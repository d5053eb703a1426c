// Machine, part two: the vCPU threads' run loop and what each KVM exit means.
#include <algorithm>
#include <cstring>
#include <string>

#include "common/hex.h"
#include "vmm/machine.h"

namespace keel {

void Machine::vcpu_loop(kvm::Vcpu& vcpu) {
  try {
    // stop_vcpus() sets stopping_ before it asks for an immediate exit, and
    // both sides use sequentially consistent operations: a vCPU that clears
    // immediate_exit after an unrelated signal sees stopping_ on its next
    // check, so it never re-enters the guest with the kick lost.
    while (!stopping_.load(std::memory_order_seq_cst)) {
      if (pause_requested_.load(std::memory_order_seq_cst)) {
        // An I/O or MMIO exit is finished (a read's value reaches the
        // registers) only by the next KVM_RUN: one with immediate_exit set
        // does that and returns at once (api.rst, kvm_run.immediate_exit),
        // so the state a snapshot reads is complete.
        vcpu.request_immediate_exit();
        if (vcpu.enter()) handle_exit(vcpu);
        vcpu.clear_immediate_exit();
        park_if_paused();
        continue;
      }
      if (vcpu.enter()) {
        handle_exit(vcpu);
      } else {
        vcpu.clear_immediate_exit();
      }
    }
  } catch (const std::exception& e) {
    try {
      request_stop({StopReason::kVmmError, "vCPU " + std::to_string(vcpu.id()) + ": " + e.what()});
    } catch (...) {
      stopping_.store(true);  // out of memory for the message: stop all the same
      events_.stop();
    }
  }
}

void Machine::handle_exit(kvm::Vcpu& vcpu) {
  kvm_run* run = vcpu.run();
  // Queued writes (the PCI address register) happened before this exit.
  if (coalesced_io_) coalesced_io_->drain(io_bus_);
  switch (run->exit_reason) {
    case KVM_EXIT_IO: {
      auto* data = reinterpret_cast<uint8_t*>(run) + run->io.data_offset;
      for (uint32_t i = 0; i < run->io.count; ++i) {
        std::span<uint8_t> bytes(data + size_t{i} * run->io.size, run->io.size);
        if (run->io.direction == KVM_EXIT_IO_OUT) {
          io_bus_.write(run->io.port, bytes);
        } else {
          io_bus_.read(run->io.port, bytes);
        }
      }
      return;
    }
    case KVM_EXIT_MMIO: {
      const uint32_t len = std::min<uint32_t>(run->mmio.len, sizeof run->mmio.data);
      std::span<uint8_t> data(run->mmio.data, len);
      for (auto& function : virtio_) {
        if (function->mmio(run->mmio.phys_addr, data, run->mmio.is_write)) return;
      }
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
        case KVM_SYSTEM_EVENT_SHUTDOWN: request_stop({StopReason::kPowerOff, ""}); return;
        case KVM_SYSTEM_EVENT_RESET:
          request_stop({StopReason::kReboot, "reset system event"});
          return;
        default:
          request_stop({StopReason::kTripleFault,
                        "system event " + std::to_string(run->system_event.type)});
          return;
      }
    case KVM_EXIT_FAIL_ENTRY:
      request_stop({StopReason::kKvmError,
                    "vCPU " + std::to_string(vcpu.id()) + " entry failed, hardware reason " +
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
