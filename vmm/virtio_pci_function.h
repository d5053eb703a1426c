// One virtio device on the machine's PCI bus, wired to KVM: the virtio-pci
// transport with BAR0 where the VMM (as firmware would) or the guest put it,
// a KVM ioeventfd per queue doorbell so kicks never exit to the VMM (the
// event loop hears them and hands them to the device), MSI-X through irqfds,
// and INTx on an I/O APIC pin.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <vector>

#include "common/guest_memory.h"
#include "common/log.h"
#include "devices/pci/pci_device.h"
#include "devices/virtio/pci/virtio_pci_device.h"
#include "devices/virtio/queue/virtio_device.h"
#include "vmm/irq/gsi_router.h"
#include "vmm/irq/msi_irqfds.h"
#include "vmm/kvm/kvm_vm.h"

namespace keel {

class VirtioPciFunction : public PciDevice {
 public:
  struct Wiring {
    kvm::Vm& vm;
    GsiRouter& router;
    GuestMemory& memory;
    boost::asio::io_context& events;
    // Drives the function's INTA# (the machine ORs functions sharing a pin).
    std::function<void(bool asserted)> intx;
    // VirtioPciDevice::Hooks' needs_reset and io_error.
    std::function<void(const std::string&)> needs_reset;
    std::function<void(const std::string&)> io_error;
    // 0 when KVM has KVM_CAP_IOEVENTFD_ANY_LENGTH, else 2 (virtio 1.x
    // 4.1.4.4: the driver writes the 16-bit queue index).
    uint32_t ioeventfd_length;
  };

  // Places BAR0 at `bar_address` with memory decoding on, as firmware does
  // before the OS starts.
  VirtioPciFunction(const Wiring& wiring, std::unique_ptr<virtio::VirtioDevice> device,
                    uint64_t bar_address);
  ~VirtioPciFunction() override;

  // PciDevice: the transport's configuration space; a write that moves or
  // (un)decodes BAR0 moves the doorbells' ioeventfds with it.
  uint32_t config_read(uint16_t offset) override;
  void config_write(uint16_t offset, uint32_t value, uint8_t byte_mask) override;

  // An MMIO exit: true when BAR0 claims it.
  bool mmio(uint64_t address, std::span<uint8_t> data, bool is_write) {
    return transport_.mmio(address, data, is_write);
  }

  const virtio::VirtioPciDevice& transport() const { return transport_; }

  // Snapshot: the transport's and device's state (vCPUs stopped; save
  // quiesces the device). restore() moves the doorbells to the restored BAR.
  state::v1::VirtioPciState save() { return transport_.save(); }
  // After a save: the device takes up its work again (VirtioDevice::resume);
  // after a restore, also the interrupts it raised meanwhile go out.
  void resume_device() {
    std::lock_guard guard(transport_.lock());
    device_->resume();
    transport_.resume_queues();
    transport_.release_interrupts();
  }
  void announce() {
    std::lock_guard guard(transport_.lock());
    device_->announce();
  }
  void track_writes(bool on) {
    std::lock_guard guard(transport_.lock());
    device_->track_writes(on);
  }
  std::vector<uint64_t> harvest_writes() {
    std::lock_guard guard(transport_.lock());
    return device_->harvest_writes();
  }
  bool is_disk() const { return device_->device_type() == virtio::kDeviceTypeBlock; }
  void hold_output(bool held) {
    std::lock_guard guard(transport_.lock());
    device_->hold_output(held);
  }
  void on_output_held(std::function<void()> hook) {
    std::lock_guard guard(transport_.lock());
    device_->on_output_held(std::move(hook));
  }
  void close_output_epoch(uint64_t epoch) {
    std::lock_guard guard(transport_.lock());
    device_->close_output_epoch(epoch);
  }
  void release_output(uint64_t epoch) {
    std::lock_guard guard(transport_.lock());
    device_->release_output(epoch);
  }
  void release_storage() {
    std::lock_guard guard(transport_.lock());
    device_->release_storage();
  }
  void claim_storage() {
    std::lock_guard guard(transport_.lock());
    device_->claim_storage();
  }
  void sync_storage() {
    std::lock_guard guard(transport_.lock());
    device_->sync_storage();
  }
  virtio::VirtioDevice::Counters counters() {
    std::lock_guard guard(transport_.lock());
    return device_->counters();
  }
  std::optional<LatencyHistogram> request_latency() {
    std::lock_guard guard(transport_.lock());
    const LatencyHistogram* h = device_->request_latency();
    return h ? std::optional<LatencyHistogram>(*h) : std::nullopt;
  }
  uint64_t msi_dropped() const { return msi_.dropped(); }
  // Why the device asked for a reset; empty while it works.
  std::string needs_reset_reason() {
    std::lock_guard guard(transport_.lock());
    return transport_.needs_reset_reason();
  }
  void restore(const state::v1::VirtioPciState& state) {
    transport_.restore(state);
    place_doorbells();
  }

 private:
  void place_doorbells();
  void watch_doorbell(uint16_t queue);

  kvm::Vm& vm_;
  uint32_t ioeventfd_length_;
  std::unique_ptr<virtio::VirtioDevice> device_;
  MsiIrqfds msi_;
  virtio::VirtioPciDevice transport_;
  std::mutex placement_mutex_;  // vCPUs may write config space at once
  virtio::VirtioPciDevice::BarPlacement placed_;
  std::vector<bool> assigned_;  // per queue: its ioeventfd is in KVM at placed_
  bool doorbell_warned_ = false;
  // Host failures on a kick: a guest kicks as often as it likes.
  log::RateLimit queue_errors_;
  std::vector<boost::asio::posix::stream_descriptor> doorbells_;
};

}  // namespace keel
