// The machine's devices: the PC platform on port I/O (COM1, i8042, ACPI
// PM1, CMOS RTC, pvpanic, PCI configuration through 0xCF8/0xCFC) and the
// virtio functions the configuration asks for on PCI slots 1.., each under
// a stable id for its state ("com1", "pci-bus", "disk0", "net0", "rng0").
#pragma once

#include <array>
#include <boost/asio/io_context.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "common/guest_memory.h"
#include "devices/pc/acpi_pm.h"
#include "devices/pc/cmos_rtc.h"
#include "devices/pc/i8042.h"
#include "devices/pc/io_bus.h"
#include "devices/pc/pvpanic.h"
#include "devices/pc/uart8250.h"
#include "devices/pci/pci_bus.h"
#include "devices/pci/pci_host_bridge.h"
#include "proto/vm_config.pb.h"
#include "vmm/irq/gsi_router.h"
#include "vmm/kvm/kvm_vm.h"
#include "vmm/machine_stop.h"
#include "vmm/stateful_devices.h"
#include "vmm/virtio_pci_function.h"

namespace keel {

class DeviceManager {
 public:
  static constexpr uint16_t kCom1Port = 0x3f8;  // its transmit register: the base

  // What the devices reach of the machine.
  struct Wiring {
    kvm::Vm& vm;
    GsiRouter& gsi_router;
    GuestMemory& memory;
    boost::asio::io_context& events;
    uint32_t ioeventfd_length;                 // 0: any length (KVM_CAP_IOEVENTFD_ANY_LENGTH)
    std::function<void(uint8_t)> console_out;  // COM1's output, byte by byte
    // The guest asked for a reset or a power-off, or reported a panic.
    std::function<void(MachineStop)> request_stop;
    // A virtio device (`device`: vda, a tap, rng) entered DEVICE_NEEDS_RESET
    // (`needs_reset`) or a request of it failed on the host; any thread.
    std::function<void(const std::string& device, bool needs_reset, const std::string& why)>
        device_trouble = {};
    // Disk images locked at once (false: a migration's destination claims
    // them when the source lets go; Machine::claim_disks).
    bool claim_disks = true;
  };

  // Throws InputError for a disk or tap that cannot be opened.
  DeviceManager(Wiring wiring, const state::v1::VmConfig& config);
  DeviceManager(const DeviceManager&) = delete;
  DeviceManager& operator=(const DeviceManager&) = delete;

  // A vCPU's port I/O exits go here (its own thread).
  IoBus& io_bus() { return io_bus_; }
  Uart8250& com1() { return *com1_; }
  // A vCPU's MMIO exit: true when a device's BAR holds the address.
  bool mmio(uint64_t address, std::span<uint8_t> data, bool is_write);
  // The ACPI power button (a shutdown through the control socket).
  void press_power_button() { acpi_pm_->press_power_button(); }
  // The virtio functions in slot order (status: errors and counters).
  const std::vector<std::unique_ptr<VirtioPciFunction>>& virtio_functions() const {
    return virtio_;
  }
  const StatefulDevices& stateful() const { return stateful_; }

 private:
  void add_platform_devices();
  void add_virtio_devices(const state::v1::VmConfig& config);

  Wiring wiring_;
  IoBus io_bus_;
  std::unique_ptr<Uart8250> com1_;
  std::unique_ptr<I8042> i8042_;
  std::unique_ptr<AcpiPm> acpi_pm_;
  std::unique_ptr<PvPanic> pvpanic_;
  std::unique_ptr<CmosRtc> rtc_;
  PciHostBridge pci_host_bridge_;
  PciBus pci_bus_;
  // INTA# of slot n is on I/O APIC input 16 + (n - 1) % 8 (the DSDT's _PRT):
  // how many functions assert each of those 8 lines.
  std::mutex intx_mutex_;
  std::array<unsigned, 8> intx_asserted_{};
  std::vector<std::unique_ptr<VirtioPciFunction>> virtio_;
  StatefulDevices stateful_;  // every device above, by stable id
};

}  // namespace keel
