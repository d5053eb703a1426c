#include "vmm/device_manager.h"

#include <cstring>
#include <string>

#include "common/error.h"
#include "common/hex.h"
#include "vmm/acpi/acpi_tables.h"
#include "vmm/boot/memory_layout.h"
#include "vmm/virtio_devices.h"

namespace keel {

namespace {

constexpr uint32_t kCom1Irq = 4;

}  // namespace

DeviceManager::DeviceManager(Wiring wiring, const state::v1::VmConfig& config)
    : wiring_(std::move(wiring)) {
  add_platform_devices();
  add_virtio_devices(config);
}

void DeviceManager::add_platform_devices() {
  kvm::Vm& vm = wiring_.vm;
  com1_ = std::make_unique<Uart8250>(wiring_.console_out, [&vm] {
    vm.set_irq_line(kCom1Irq, true);
    vm.set_irq_line(kCom1Irq, false);
  });
  io_bus_.add(DeviceManager::kCom1Port, 8, *com1_);
  i8042_ = std::make_unique<I8042>([this] {
    wiring_.request_stop({StopReason::kReboot, "reset through the i8042 controller"});
  });
  io_bus_.add(I8042::kDataPort, 1, *i8042_);
  io_bus_.add(I8042::kCommandPort, 1, *i8042_, 4);
  // The SCI: a level on the ISA IRQ the FADT names (MADT: level, active high).
  const uint32_t sci_irq = acpi::AcpiPlatform{}.sci_irq;
  acpi_pm_ = std::make_unique<AcpiPm>(
      acpi::kS5SleepType,
      [this] {
        wiring_.request_stop({StopReason::kPowerOff, ""});
      },
      [&vm, sci_irq](bool level) { vm.set_irq_line(sci_irq, level); });
  io_bus_.add(layout::kPm1aEvtPort, AcpiPm::kPortCount, *acpi_pm_);
  pvpanic_ = std::make_unique<PvPanic>([this](uint8_t events) {
    wiring_.request_stop({StopReason::kGuestPanic, "pvpanic events " + hex(events)});
  });
  io_bus_.add(PvPanic::kPort, 1, *pvpanic_);
  rtc_ = std::make_unique<CmosRtc>();
  io_bus_.add(CmosRtc::kPort, CmosRtc::kPortCount, *rtc_);
  pci_bus_.add(0, pci_host_bridge_);
  io_bus_.add(PciBus::kConfigPort, PciBus::kConfigPortCount, pci_bus_);

  using K = state::v1::DeviceState;
  stateful_.add(
      "com1", K::kUart, [this](K& s) { *s.mutable_uart() = com1_->save(); },
      [this](const K& s) { com1_->restore(s.uart()); });
  stateful_.add(
      "i8042", K::kI8042, [this](K& s) { *s.mutable_i8042() = i8042_->save(); },
      [this](const K& s) { i8042_->restore(s.i8042()); });
  stateful_.add(
      "acpi-pm", K::kAcpiPm, [this](K& s) { *s.mutable_acpi_pm() = acpi_pm_->save(); },
      [this](const K& s) { acpi_pm_->restore(s.acpi_pm()); });
  stateful_.add(
      "cmos-rtc", K::kCmosRtc, [this](K& s) { *s.mutable_cmos_rtc() = rtc_->save(); },
      [this](const K& s) { rtc_->restore(s.cmos_rtc()); });
  stateful_.add(
      "pvpanic", K::kPvpanic, [this](K& s) { *s.mutable_pvpanic() = pvpanic_->save(); },
      [this](const K& s) { pvpanic_->restore(s.pvpanic()); });
  stateful_.add(
      "pci-bus", K::kPciBus, [this](K& s) { *s.mutable_pci_bus() = pci_bus_.save(); },
      [this](const K& s) { pci_bus_.restore(s.pci_bus()); });
  stateful_.add(
      "pci-host-bridge", K::kPciHostBridge,
      [this](K& s) { *s.mutable_pci_host_bridge() = pci_host_bridge_.save(); },
      [this](const K& s) { pci_host_bridge_.restore(s.pci_host_bridge()); });
}

// Slots 1.. in command-line order, BAR0s side by side from the start of the
// 32-bit PCI window (the DSDT's host bridge resources), memory decoding on,
// as firmware leaves them; INTA# of slot n on I/O APIC pin 16 + (n - 1) % 8.
void DeviceManager::add_virtio_devices(const state::v1::VmConfig& config) {
  const VirtioPciFunction::Wiring wiring{
      wiring_.vm, wiring_.gsi_router,      wiring_.memory, wiring_.events, nullptr, nullptr,
      nullptr,    wiring_.ioeventfd_length};
  auto devices = make_virtio_devices(config, wiring_.events, wiring_.claim_disks);
  for (size_t i = 0; i < devices.size(); ++i) {
    const unsigned slot = static_cast<unsigned>(i + 1);
    const unsigned line = (slot - 1) % 8;
    auto w = wiring;
    // A level shared by several functions: asserted while any of them
    // asserts it (each function reports only its own changes).
    w.intx = [this, line](bool asserted) {
      std::lock_guard guard(intx_mutex_);
      unsigned& count = intx_asserted_[line];
      count = asserted ? count + 1 : (count > 0 ? count - 1 : 0);
      wiring_.vm.set_irq_line(16 + line, count > 0);
    };
    // The device as the operator knows it (metrics, events): the guest's
    // name for a disk, the tap of an adapter.
    const size_t disk_count = static_cast<size_t>(config.disks_size());
    const size_t net_count = static_cast<size_t>(config.nets_size());
    const std::string shown = i < disk_count ? "vd" + std::string(1, char('a' + i % 26))
                              : i < disk_count + net_count
                                  ? config.nets(static_cast<int>(i - disk_count)).tap()
                                  : "rng";
    if (wiring_.device_trouble) {
      w.needs_reset = [this, shown](const std::string& why) {
        wiring_.device_trouble(shown, true, why);
      };
      w.io_error = [this, shown](const std::string& what) {
        wiring_.device_trouble(shown, false, what);
      };
    }
    const uint64_t bar = layout::kPciHoleStart + i * virtio::VirtioPciDevice::kBarSize;
    virtio_.push_back(std::make_unique<VirtioPciFunction>(w, std::move(devices[i]), bar));
    pci_bus_.add(slot, *virtio_.back());
    // Ids by kind and order: disks, then network adapters, then rng, as
    // make_virtio_devices makes them.
    const size_t disks = static_cast<size_t>(config.disks_size());
    const size_t nets = static_cast<size_t>(config.nets_size());
    const std::string id = i < disks          ? "disk" + std::to_string(i)
                           : i < disks + nets ? "net" + std::to_string(i - disks)
                                              : "rng" + std::to_string(i - disks - nets);
    VirtioPciFunction& function = *virtio_.back();
    using K = state::v1::DeviceState;
    stateful_.add(
        id, K::kVirtio,
        [&function, slot](K& s) {
          s.set_pci_slot(slot);
          *s.mutable_virtio() = function.save();
        },
        [&function, slot, id](const K& s) {
          if (s.pci_slot() != slot) {
            throw InputError("state: device " + id + " on PCI slot " +
                             std::to_string(s.pci_slot()) + ", this machine has it on slot " +
                             std::to_string(slot));
          }
          function.restore(s.virtio());
        });
  }
}

bool DeviceManager::mmio(uint64_t address, std::span<uint8_t> data, bool is_write) {
  for (auto& function : virtio_) {
    if (function->mmio(address, data, is_write)) return true;
  }
  return false;
}

}  // namespace keel
