// The virtio 1.x modern PCI transport (virtio 1.x, 4.1 "Virtio Over PCI Bus")
// for one VirtioDevice, as device-side logic: its configuration space, and
// MMIO into its one memory BAR. Wiring to KVM (MMIO exits, ioeventfd for the
// notify region, irqfd for MSI-X and INTx) is the machine's job.
//
// Configuration space (4.1.2, PCI 3.0 6.1): vendor 0x1AF4, device 0x1040 +
// type, revision 1 (non-transitional), subsystem vendor 0x1AF4 and subsystem
// ID 0x40 + type (4.1.2.1: >= 0x40 for non-transitional devices), class code
// by type as QEMU and guests expect (net 02.00.00 Ethernet, block 01.00.00
// SCSI storage, which is what Linux and firmware accept for virtio-blk,
// anything else 00.ff.00 as QEMU gives virtio-rng), interrupt pin INTA#. BAR0/BAR1: one 64-bit
// non-prefetchable memory BAR of kBarSize bytes; the sizing protocol works
// through the write masks (all ones reads back the size mask). Status bit 4
// (capability list); the capabilities at kCapStart:
//   COMMON_CFG (1), NOTIFY_CFG (2, multiplier kNotifyOffMultiplier,
//   queue_notify_off = queue index), ISR_CFG (3), DEVICE_CFG (4, only when
//   the device has configuration), PCI_CFG (5, 4.1.4.9: window into the BAR
//   through pci_cfg_data), MSI-X (ID 0x11, num_queues + 1 vectors).
// BAR0 layout, one 4 KiB page per structure:
//   0x0000 common config   0x1000 ISR   0x2000 device config
//   0x3000 notify          0x4000 MSI-X table   0x5000 MSI-X PBA
//
// Guest input is hostile: every access is bounds-checked, and an access of
// the wrong width or alignment to the common configuration (4.1.3.1: each
// field at its natural width; 64-bit fields also as two dwords) is ignored
// and reads as zeros. The same for the ISR (one byte, wider reads return it
// in the low byte), device configuration outside config_size(), and notify
// writes past the last queue.
//
// Status machine (2.1, 3.1.1): writing 0 resets the device and every queue;
// the driver cannot clear bits otherwise (such writes are ignored), nor set
// DEVICE_NEEDS_RESET; FEATURES_OK sticks only if the driver's features are a
// subset of the offered ones and include VERSION_1 (3.1.1 step 5-6), and it
// is needed for DRIVER_OK to stick. DRIVER_OK activates the device: a
// SplitQueue for each enabled queue. A queue the driver did not configure
// properly (VirtqueueError) sets DEVICE_NEEDS_RESET and raises a
// configuration change interrupt (2.1.2); nothing is activated then. Queue
// registers of an enabled queue, and queues enabled after DRIVER_OK, are
// ignored (a device has no way to take up a queue changed under it; queue
// reset, VIRTIO_F_RING_RESET, is not offered).
//
// Interrupts (4.1.5.3, 4.1.5.4): with MSI-X enabled, through the queue's or
// the configuration's vector (none when it is kMsiNoVector; a vector beyond
// the table is stored as kMsiNoVector, 4.1.5.1.2.1); otherwise the ISR bit
// (0: queue, 1: configuration) and INTx, level-triggered: asserted while the
// ISR is non-zero, deasserted when the driver reads it. A configuration
// change also sets ISR bit 1 under MSI-X, as QEMU does (harmless: Linux does
// not read the ISR with MSI-X).
//
// Threading: configuration and BAR accesses and notify() take lock(); the
// VirtioTransport calls (queue_interrupt, config_changed, needs_reset) expect
// it held, as the device holds it when it makes them.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <vector>

#include "common/guest_memory.h"
#include "devices/pci/pci_config_space.h"
#include "devices/pci/pci_device.h"
#include "devices/virtio/pci/msix_table.h"
#include "devices/virtio/queue/virtio_device.h"
#include "proto/device_state.pb.h"

namespace keel::virtio {

// 2.1: device status bits.
inline constexpr uint8_t kStatusAcknowledge = 1;
inline constexpr uint8_t kStatusDriver = 2;
inline constexpr uint8_t kStatusDriverOk = 4;
inline constexpr uint8_t kStatusFeaturesOk = 8;
inline constexpr uint8_t kStatusDeviceNeedsReset = 0x40;
inline constexpr uint8_t kStatusFailed = 0x80;

// 4.1.4.5: ISR status bits.
inline constexpr uint8_t kIsrQueue = 1;
inline constexpr uint8_t kIsrConfig = 2;

// 4.1.4: virtio vendor capability cfg_type values.
inline constexpr uint8_t kCapCommonCfg = 1;
inline constexpr uint8_t kCapNotifyCfg = 2;
inline constexpr uint8_t kCapIsrCfg = 3;
inline constexpr uint8_t kCapDeviceCfg = 4;
inline constexpr uint8_t kCapPciCfg = 5;

// 4.1.4.3: common configuration register offsets.
namespace common_cfg {
inline constexpr uint32_t kDeviceFeatureSelect = 0x00;
inline constexpr uint32_t kDeviceFeature = 0x04;
inline constexpr uint32_t kDriverFeatureSelect = 0x08;
inline constexpr uint32_t kDriverFeature = 0x0c;
inline constexpr uint32_t kMsixConfig = 0x10;
inline constexpr uint32_t kNumQueues = 0x12;
inline constexpr uint32_t kDeviceStatus = 0x14;
inline constexpr uint32_t kConfigGeneration = 0x15;
inline constexpr uint32_t kQueueSelect = 0x16;
inline constexpr uint32_t kQueueSize = 0x18;
inline constexpr uint32_t kQueueMsixVector = 0x1a;
inline constexpr uint32_t kQueueEnable = 0x1c;
inline constexpr uint32_t kQueueNotifyOff = 0x1e;
inline constexpr uint32_t kQueueDesc = 0x20;
inline constexpr uint32_t kQueueDriver = 0x28;
inline constexpr uint32_t kQueueDevice = 0x30;
inline constexpr uint32_t kSize = 0x38;  // virtio 1.0/1.1 layout
}  // namespace common_cfg

class VirtioPciDevice : public PciDevice, public VirtioTransport {
 public:
  struct Hooks {
    // INTx level: true while the ISR is non-zero (MSI-X disabled).
    std::function<void(bool asserted)> intx;
    // The device entered DEVICE_NEEDS_RESET, and why; a request failed on
    // the host's side. Either may be empty. With the transport's lock held.
    std::function<void(const std::string& why)> needs_reset = {};
    std::function<void(const std::string& what)> io_error = {};
  };

  // `device`, `memory` and `msi` must outlive this. Throws
  // std::invalid_argument for a device this transport cannot carry (no
  // queues, more than kMaxQueues, bad max queue size, config over 4 KiB).
  VirtioPciDevice(VirtioDevice& device, GuestMemory& memory, MsiSink& msi, Hooks hooks);

  static constexpr uint64_t kBarSize = 0x8000;
  static constexpr uint32_t kCommonOffset = 0x0000;
  static constexpr uint32_t kIsrOffset = 0x1000;
  static constexpr uint32_t kDeviceCfgOffset = 0x2000;
  static constexpr uint32_t kNotifyOffset = 0x3000;
  static constexpr uint32_t kMsixTableOffset = 0x4000;
  static constexpr uint32_t kMsixPbaOffset = 0x5000;
  static constexpr uint32_t kNotifyOffMultiplier = 4;
  static constexpr uint16_t kMaxQueues = 255;  // +1 config vector: 256 entries = one page
  static constexpr uint8_t kCapStart = 0x40;

  // PciDevice.
  uint32_t config_read(uint16_t offset) override;
  void config_write(uint16_t offset, uint32_t value, uint8_t byte_mask) override;

  // MMIO into BAR0 at `offset` from its base; 1, 2, 4 or 8 bytes.
  void bar_read(uint64_t offset, std::span<uint8_t> data);
  void bar_write(uint64_t offset, std::span<const uint8_t> data);

  // MMIO at guest-physical `address`: handled, and true, when BAR0 is
  // decoded (memory enabled) and holds the whole access. Takes lock().
  bool mmio(uint64_t address, std::span<uint8_t> data, bool is_write);

  // Where the guest placed BAR0 (the address bits of BAR0/BAR1), and whether
  // memory decoding is on (command bit 1): the machine places the queues'
  // ioeventfds by these. Take lock().
  struct BarPlacement {
    uint64_t address = 0;
    bool enabled = false;
    bool operator==(const BarPlacement&) const = default;
  };
  BarPlacement bar_placement() const;

  // A kick for `queue` from outside the BAR (its ioeventfd): reaches the
  // device as a notify-region write would, only for an enabled queue while
  // DRIVER_OK is set and DEVICE_NEEDS_RESET is not. Takes lock().
  void notify(uint16_t queue);

  // VirtioTransport, with lock() held.
  void queue_interrupt(uint16_t queue) override;
  void config_changed() override;
  void needs_reset(const std::string& why) override;
  void io_error(const std::string& what) override {
    if (hooks_.io_error) hooks_.io_error(what);
  }
  std::mutex& lock() override { return mutex_; }
  void config_interrupt();

  uint8_t status() const { return status_; }
  uint64_t offered_features() const { return offered_features_; }
  uint64_t driver_features() const { return driver_features_; }
  bool activated() const { return activated_; }
  // Why the device set DEVICE_NEEDS_RESET (the first reason), until the
  // driver resets it; empty otherwise.
  const std::string& needs_reset_reason() const { return needs_reset_reason_; }
  const MsixTable& msix() const { return msix_; }

  // Snapshot (issue 6; devices/virtio/pci/virtio_pci_state.cpp). Both take
  // lock(): call them without it, with the vCPUs stopped.
  //
  // save(): quiesces the device first (VirtioDevice::quiesce: virtio-blk
  // waits for its requests in flight), then records the configuration
  // space, MSI-X, the common configuration registers, each queue's
  // registers and, for a running device, where each enabled queue resumes;
  // and the device's own state. Throws std::runtime_error if the device
  // cannot be quiesced.
  //
  // restore(): guest memory must already hold the restored RAM (the rings
  // are read). Checks `state` entirely as untrusted input first (InputError
  // naming the device and field; nothing changes then): same device type
  // and queue count, configuration space read-only bits as built here, MSI-X
  // state (see MsixTable::check) matching the capability's control bits,
  // status bits known and consistent (DRIVER_OK needs FEATURES_OK; with
  // FEATURES_OK the driver's features a subset of the offered ones with
  // VERSION_1; DRIVER_OK without a running device only with
  // DEVICE_NEEDS_RESET), vectors inside the table, queue sizes at most the
  // maximum, the ISR and INTx level consistent, and for a running device each
  // enabled queue rebuilt through SplitQueue's own activation checks (size a
  // power of two, rings aligned and inside guest memory) and its indexes
  // through SplitQueue::set_state. Then resets the function, takes the state
  // and, for a running device, activates the device on the rebuilt queues
  // and kicks each enabled queue once (chains made available before the
  // snapshot and not yet taken are taken now; no guest kick is needed).
  // INTx is raised through Hooks::intx when the restored level is asserted.
  // Afterwards the machine re-reads bar_placement() for the ioeventfds.
  // A restored function holds its interrupts (MSI-X messages and the INTx
  // level) until release_interrupts(): the device may take up its work at
  // once, but the interrupt controllers' state is restored after the
  // devices' and would wipe anything raised before it.
  state::v1::VirtioPciState save();
  void restore(const state::v1::VirtioPciState& state);
  // Sends what a restored function raised while it held its interrupts
  // (through the MSI-X table, so masks still count) and sets the INTx
  // level; nothing otherwise. With lock() held. A save before the release
  // records the INTx level but not the held messages (the restored queues
  // notify again at their next used buffer anyway).
  void release_interrupts();
  // After a save(), when the guest is to run here again: the kicks that
  // came while the device was quiesced (a doorbell the guest rang before it
  // was paused and the event loop read after the save) reach it now. Until
  // then they are only recorded: a queue processed after the state was
  // taken would change guest memory under a snapshot or a migration.
  // With lock() held.
  void resume_queues();

 private:
  void notify_locked(uint32_t queue);
  BarPlacement bar_placement_locked() const;
  void bar_read_locked(uint64_t offset, std::span<uint8_t> data);
  void bar_write_locked(uint64_t offset, std::span<const uint8_t> data);

  mutable std::mutex mutex_;
  bool intx_level_ = false;  // the function's level (saved)
  bool intx_told_ = false;   // the level Hooks::intx last heard
  struct QueueRegs {
    uint16_t size = 0;
    uint16_t msix_vector = kMsiNoVector;
    bool enabled = false;
    uint64_t desc = 0, driver = 0, device = 0;
  };
  uint64_t common_read(uint32_t offset, size_t size);
  void common_write(uint32_t offset, size_t size, uint64_t value);
  void write_status(uint8_t value);
  // Whether a reset is still pending (and clears resetting_ once not).
  bool reset_in_progress();
  void activate();
  void reset();
  uint16_t checked_vector(uint16_t vector) const;
  QueueRegs* selected_queue();
  void set_isr(uint8_t bits);
  void raise_vector(uint16_t vector);
  void update_intx();
  void tell_intx();
  void build_config_space();
  void update_msix_control();
  uint32_t pci_cfg_access(uint32_t value, bool write);

  VirtioDevice& device_;
  GuestMemory& memory_;
  Hooks hooks_;
  PciConfigSpace config_;
  MsixTable msix_;
  uint64_t offered_features_;
  uint16_t num_queues_;
  uint16_t max_queue_size_;
  uint8_t device_cfg_cap_ = 0, pci_cfg_cap_ = 0, msix_cap_ = 0;

  uint32_t device_feature_select_ = 0;
  uint32_t driver_feature_select_ = 0;
  uint64_t driver_features_ = 0;
  uint16_t msix_config_ = kMsiNoVector;
  uint8_t status_ = 0;
  uint8_t config_generation_ = 0;
  uint16_t queue_select_ = 0;
  std::vector<QueueRegs> queues_;
  uint8_t isr_ = 0;
  bool activated_ = false;
  // A reset whose device still has work in flight (reset_pending): status
  // reads give the old status, not 0, until it is done (4.1.4.3.1).
  bool resetting_ = false;
  bool quiesced_ = false;             // save() until resume_queues()
  std::vector<bool> deferred_kicks_;  // by queue, while quiesced
  uint8_t status_before_reset_ = 0;
  bool holding_interrupts_ = false;
  std::vector<uint16_t> held_vectors_;  // each once, in the order raised
  std::string needs_reset_reason_;
};

}  // namespace keel::virtio
