#include "devices/virtio/pci/virtio_pci_device.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <stdexcept>
#include <utility>

#include "common/little_endian.h"
#include "devices/virtio/queue/virtio_ring.h"
#include "devices/virtio/queue/virtqueue_error.h"

namespace keel::virtio {

namespace {

// 4.1.2: IDs of a non-transitional virtio PCI device.
constexpr uint16_t kVendorVirtio = 0x1af4;
constexpr uint16_t kDeviceIdBase = 0x1040;
constexpr uint16_t kSubsystemIdBase = 0x40;
constexpr uint8_t kRevision = 1;

// PCI 3.0, 6.1 and 6.7: configuration header fields.
constexpr uint16_t kStatusReg = 0x06;
constexpr uint16_t kStatusCapList = 0x0010;
constexpr uint16_t kBar0 = 0x10, kBar1 = 0x14;
constexpr uint32_t kBarMem64 = 0x4;  // memory, 64-bit, not prefetchable
constexpr uint16_t kSubsystemVendor = 0x2c, kSubsystemId = 0x2e;
constexpr uint16_t kCapPointer = 0x34;
constexpr uint16_t kInterruptLine = 0x3c, kInterruptPin = 0x3d;
constexpr uint16_t kCommandMemory = 0x0002;

// PCI 3.0, 6.8.2: the MSI-X capability.
constexpr uint8_t kCapIdMsix = 0x11;
constexpr uint16_t kMsixEnable = 0x8000, kMsixFunctionMask = 0x4000;

// 4.1.4: the virtio vendor-specific capability (struct virtio_pci_cap).
constexpr uint8_t kCapIdVendor = 0x09;
constexpr uint8_t kVirtioCapLen = 16;
constexpr uint8_t kNotifyCapLen = 20;  // + notify_off_multiplier
constexpr uint8_t kPciCfgCapLen = 20;  // + pci_cfg_data
constexpr uint8_t kMsixCapLen = 12;
constexpr uint16_t kCapBar = 4, kCapOffset = 8, kCapLength = 12, kCapExtra = 16;

constexpr uint32_t kRegionMask = 0xfff;  // one page per structure

uint32_t class_code_for(uint16_t type) {
  switch (type) {
    case kDeviceTypeNet:
      return 0x020000;  // network, Ethernet
    case kDeviceTypeBlock:
      return 0x010000;  // mass storage, SCSI
    default:
      return 0x00ff00;  // unclassified, "other"
  }
}

bool valid_size(size_t size) {
  return size == 1 || size == 2 || size == 4 || size == 8;
}

uint32_t feature_half(uint64_t features, uint32_t select) {
  if (select == 0) return static_cast<uint32_t>(features);
  if (select == 1) return static_cast<uint32_t>(features >> 32);
  return 0;  // 4.1.4.3: bits beyond 63 do not exist here
}

// A 64-bit register read whole or as two dwords (4.1.3.1).
bool read64(uint32_t offset, size_t size, uint32_t field, uint64_t reg, uint64_t& out) {
  if (offset == field && size == 8)
    out = reg;
  else if (offset == field && size == 4)
    out = static_cast<uint32_t>(reg);
  else if (offset == field + 4 && size == 4)
    out = reg >> 32;
  else
    return false;
  return true;
}

bool write64(uint32_t offset, size_t size, uint32_t field, uint64_t value, uint64_t& reg) {
  if (offset == field && size == 8)
    reg = value;
  else if (offset == field && size == 4)
    reg = (reg & ~uint64_t{0xffffffff}) | (value & 0xffffffff);
  else if (offset == field + 4 && size == 4)
    reg = (reg & 0xffffffff) | (value << 32);
  else
    return false;
  return true;
}

}  // namespace

VirtioPciDevice::VirtioPciDevice(VirtioDevice& device, GuestMemory& memory, MsiSink& msi,
                                 Hooks hooks)
    : device_(device),
      memory_(memory),
      hooks_(std::move(hooks)),
      config_(kVendorVirtio, static_cast<uint16_t>(kDeviceIdBase + device.device_type()),
              class_code_for(device.device_type()), kRevision),
      msix_(static_cast<uint16_t>(device.num_queues() + 1), msi),
      offered_features_(device.device_features() | kFVersion1 | kFRingIndirectDesc |
                        kFRingEventIdx),
      num_queues_(device.num_queues()),
      max_queue_size_(device.max_queue_size()) {
  device_.attach(*this);
  if (num_queues_ == 0 || num_queues_ > kMaxQueues) {
    throw std::invalid_argument("virtio-pci: a device needs 1 to 255 queues");
  }
  if (max_queue_size_ == 0 || max_queue_size_ > kMaxQueueSize ||
      (max_queue_size_ & (max_queue_size_ - 1)) != 0) {
    throw std::invalid_argument("virtio-pci: max queue size must be a power of two up to 32768");
  }
  if (device_.config_size() > kRegionMask + 1) {
    throw std::invalid_argument("virtio-pci: device configuration larger than 4 KiB");
  }
  queues_.resize(num_queues_);
  for (QueueRegs& q : queues_) q.size = max_queue_size_;
  build_config_space();
}

void VirtioPciDevice::build_config_space() {
  const uint16_t type = device_.device_type();
  config_.set_u16(kStatusReg, kStatusCapList);
  config_.set_u32(kBar0, kBarMem64, static_cast<uint32_t>(~(kBarSize - 1)) & ~uint32_t{0xf});
  config_.set_u32(kBar1, 0, 0xffffffff);
  config_.set_u16(kSubsystemVendor, kVendorVirtio);
  config_.set_u16(kSubsystemId, static_cast<uint16_t>(kSubsystemIdBase + type));
  config_.set_u8(kInterruptLine, 0, 0xff);
  config_.set_u8(kInterruptPin, 1);  // INTA#

  // The capability chain, each one dword-aligned, the last with next = 0.
  uint8_t at = kCapStart;
  uint8_t previous = 0;
  auto begin = [&](uint8_t id, uint8_t length) {
    const uint8_t here = at;
    if (previous == 0)
      config_.set_u8(kCapPointer, here);
    else
      config_.set_u8(static_cast<uint16_t>(previous + 1), here);
    config_.set_u8(here, id);
    config_.set_u8(here + 1, 0);
    config_.set_u8(here + 2, length);
    previous = here;
    at = static_cast<uint8_t>(here + ((length + 3) & ~3));
    return here;
  };
  auto virtio_cap = [&](uint8_t cfg_type, uint8_t length, uint32_t offset, uint32_t size) {
    const uint8_t cap = begin(kCapIdVendor, length);
    config_.set_u8(cap + 3, cfg_type);
    config_.set_u8(cap + kCapBar, 0);
    config_.set_u32(cap + kCapOffset, offset);
    config_.set_u32(cap + kCapLength, size);
    return cap;
  };
  virtio_cap(kCapCommonCfg, kVirtioCapLen, kCommonOffset, common_cfg::kSize);
  const uint8_t notify = virtio_cap(kCapNotifyCfg, kNotifyCapLen, kNotifyOffset,
                                    uint32_t{num_queues_} * kNotifyOffMultiplier);
  config_.set_u32(notify + kCapExtra, kNotifyOffMultiplier);
  virtio_cap(kCapIsrCfg, kVirtioCapLen, kIsrOffset, 1);
  if (device_.config_size() > 0) {
    device_cfg_cap_ =
        virtio_cap(kCapDeviceCfg, kVirtioCapLen, kDeviceCfgOffset, device_.config_size());
  }
  // 4.1.4.9: bar, offset and length are the driver's to set.
  pci_cfg_cap_ = virtio_cap(kCapPciCfg, kPciCfgCapLen, 0, 0);
  config_.set_u8(pci_cfg_cap_ + kCapBar, 0, 0xff);
  config_.set_u32(pci_cfg_cap_ + kCapOffset, 0, 0xffffffff);
  config_.set_u32(pci_cfg_cap_ + kCapLength, 0, 0xffffffff);

  msix_cap_ = begin(kCapIdMsix, kMsixCapLen);
  config_.set_u16(msix_cap_ + 2, static_cast<uint16_t>(msix_.vectors() - 1),
                  kMsixEnable | kMsixFunctionMask);
  config_.set_u32(msix_cap_ + 4, kMsixTableOffset);  // BIR 0
  config_.set_u32(msix_cap_ + 8, kMsixPbaOffset);    // BIR 0
}

// --- configuration space --------------------------------------------------

uint32_t VirtioPciDevice::config_read(uint16_t offset) {
  std::lock_guard guard(mutex_);
  offset &= PciConfigSpace::kSize - 4;
  if (offset == pci_cfg_cap_ + kCapExtra) return pci_cfg_access(0, false);
  return config_.read_dword(offset);
}

void VirtioPciDevice::config_write(uint16_t offset, uint32_t value, uint8_t byte_mask) {
  std::lock_guard guard(mutex_);
  offset &= PciConfigSpace::kSize - 4;
  if (offset == pci_cfg_cap_ + kCapExtra) {
    // The window's data starts at the lowest byte written (a byte or word
    // write to pci_cfg_data + 1..3 arrives shifted into place).
    if (byte_mask != 0) pci_cfg_access(value >> (8 * std::countr_zero(byte_mask)), true);
    return;
  }
  config_.write_dword(offset, value, byte_mask);
  if (offset == msix_cap_) update_msix_control();
  if (offset == PciConfigSpace::kCommand) update_intx();
}

// 4.1.4.9: pci_cfg_data is a window of `length` (1, 2 or 4) bytes into BAR
// `bar` at `offset`, aligned to length. Anything else reads 0, writes nothing.
uint32_t VirtioPciDevice::pci_cfg_access(uint32_t value, bool write) {
  const uint8_t bar = static_cast<uint8_t>(config_.read_dword(pci_cfg_cap_ + kCapBar));
  const uint32_t offset = config_.read_dword(pci_cfg_cap_ + kCapOffset);
  const uint32_t length = config_.read_dword(pci_cfg_cap_ + kCapLength);
  if (bar != 0 || !(length == 1 || length == 2 || length == 4) || offset % length != 0) return 0;
  uint8_t bytes[4] = {};
  std::span<uint8_t> data(bytes, length);
  if (write) {
    store_le(data, value);
    bar_write_locked(offset, data);
    return 0;
  }
  bar_read_locked(offset, data);
  return static_cast<uint32_t>(load_le(data));
}

void VirtioPciDevice::update_msix_control() {
  const uint16_t control = static_cast<uint16_t>(config_.read_dword(msix_cap_) >> 16);
  msix_.set_control(control & kMsixEnable, control & kMsixFunctionMask);
  update_intx();
}

VirtioPciDevice::BarPlacement VirtioPciDevice::bar_placement_locked() const {
  BarPlacement bar;
  bar.address =
      (uint64_t{config_.read_dword(kBar1)} << 32) | (config_.read_dword(kBar0) & ~uint32_t{0xf});
  bar.enabled = config_.read_dword(PciConfigSpace::kCommand) & kCommandMemory;
  return bar;
}

VirtioPciDevice::BarPlacement VirtioPciDevice::bar_placement() const {
  std::lock_guard guard(mutex_);
  return bar_placement_locked();
}

bool VirtioPciDevice::mmio(uint64_t address, std::span<uint8_t> data, bool is_write) {
  std::lock_guard guard(mutex_);
  const BarPlacement bar = bar_placement_locked();
  // An access that wraps around, or only partly hits the BAR, is not ours.
  if (!bar.enabled || address < bar.address || address - bar.address >= kBarSize ||
      kBarSize - (address - bar.address) < data.size()) {
    return false;
  }
  if (is_write) {
    bar_write_locked(address - bar.address, data);
  } else {
    bar_read_locked(address - bar.address, data);
  }
  return true;
}

// --- BAR0 -----------------------------------------------------------------

void VirtioPciDevice::bar_read(uint64_t offset, std::span<uint8_t> data) {
  std::lock_guard guard(mutex_);
  bar_read_locked(offset, data);
}

void VirtioPciDevice::bar_write(uint64_t offset, std::span<const uint8_t> data) {
  std::lock_guard guard(mutex_);
  bar_write_locked(offset, data);
}

void VirtioPciDevice::notify(uint16_t queue) {
  std::lock_guard guard(mutex_);
  notify_locked(queue);
}

// Only queues the driver enabled reach the device: the others were handed
// to it empty.
void VirtioPciDevice::notify_locked(uint32_t queue) {
  if (queue >= num_queues_ || !queues_[queue].enabled || !activated_ ||
      (status_ & kStatusDeviceNeedsReset)) {
    return;
  }
  if (quiesced_) {
    deferred_kicks_.resize(num_queues_);
    deferred_kicks_[queue] = true;
    return;
  }
  device_.queue_notify(static_cast<uint16_t>(queue));
}

void VirtioPciDevice::resume_queues() {
  quiesced_ = false;
  std::vector<bool> kicks;
  kicks.swap(deferred_kicks_);
  for (uint32_t q = 0; q < kicks.size(); ++q) {
    if (kicks[q]) notify_locked(q);
  }
}

void VirtioPciDevice::bar_read_locked(uint64_t offset, std::span<uint8_t> data) {
  std::memset(data.data(), 0, data.size());
  if (!valid_size(data.size()) || offset >= kBarSize || kBarSize - offset < data.size()) return;
  const uint32_t region = static_cast<uint32_t>(offset) & ~kRegionMask;
  const uint32_t off = static_cast<uint32_t>(offset) & kRegionMask;
  if (off + data.size() > kRegionMask + 1) return;  // straddles two structures
  switch (region) {
    case kCommonOffset:
      if (off + data.size() <= common_cfg::kSize) store_le(data, common_read(off, data.size()));
      break;
    case kIsrOffset:
      // 4.1.4.5: reading clears the ISR and deasserts INTx.
      if (off == 0) {
        data[0] = isr_;
        isr_ = 0;
        update_intx();
      }
      break;
    case kDeviceCfgOffset:
      if (off + data.size() <= device_.config_size()) device_.config_read(off, data);
      break;
    case kMsixTableOffset:
      msix_.table_read(off, data);
      break;
    case kMsixPbaOffset:
      msix_.pba_read(off, data);
      break;
    default:
      break;  // notify region reads 0
  }
}

void VirtioPciDevice::bar_write_locked(uint64_t offset, std::span<const uint8_t> data) {
  if (!valid_size(data.size()) || offset >= kBarSize || kBarSize - offset < data.size()) return;
  const uint32_t region = static_cast<uint32_t>(offset) & ~kRegionMask;
  const uint32_t off = static_cast<uint32_t>(offset) & kRegionMask;
  if (off + data.size() > kRegionMask + 1) return;
  switch (region) {
    case kCommonOffset:
      if (off + data.size() <= common_cfg::kSize) common_write(off, data.size(), load_le(data));
      break;
    case kDeviceCfgOffset:
      if (off + data.size() <= device_.config_size()) device_.config_write(off, data);
      break;
    case kNotifyOffset: {
      // 4.1.4.4: queue q's doorbell is at q * notify_off_multiplier; the
      // address names the queue (the value, the queue index, is not needed).
      if (off % kNotifyOffMultiplier == 0) notify_locked(off / kNotifyOffMultiplier);
      break;
    }
    case kMsixTableOffset:
      msix_.table_write(off, data);
      break;
    default:
      break;  // ISR and PBA are read-only
  }
}

// --- common configuration (4.1.4.3) ---------------------------------------

VirtioPciDevice::QueueRegs* VirtioPciDevice::selected_queue() {
  return queue_select_ < num_queues_ ? &queues_[queue_select_] : nullptr;
}

uint16_t VirtioPciDevice::checked_vector(uint16_t vector) const {
  return vector < msix_.vectors() ? vector : kMsiNoVector;
}

uint64_t VirtioPciDevice::common_read(uint32_t off, size_t size) {
  using namespace common_cfg;
  auto is = [&](uint32_t field, size_t width) { return off == field && size == width; };
  if (is(kDeviceFeatureSelect, 4)) return device_feature_select_;
  if (is(kDeviceFeature, 4)) return feature_half(offered_features_, device_feature_select_);
  if (is(kDriverFeatureSelect, 4)) return driver_feature_select_;
  if (is(kDriverFeature, 4)) return feature_half(driver_features_, driver_feature_select_);
  if (is(kMsixConfig, 2)) return msix_config_;
  if (is(kNumQueues, 2)) return num_queues_;
  if (is(kDeviceStatus, 1)) return reset_in_progress() ? status_before_reset_ : status_;
  if (is(kConfigGeneration, 1)) return config_generation_;
  if (is(kQueueSelect, 2)) return queue_select_;
  const QueueRegs* q = selected_queue();
  if (q == nullptr) return 0;  // 4.1.4.3: a queue that does not exist has size 0
  if (is(kQueueSize, 2)) return q->size;
  if (is(kQueueMsixVector, 2)) return q->msix_vector;
  if (is(kQueueEnable, 2)) return q->enabled ? 1 : 0;
  if (is(kQueueNotifyOff, 2)) return queue_select_;
  uint64_t value = 0;
  if (read64(off, size, kQueueDesc, q->desc, value) ||
      read64(off, size, kQueueDriver, q->driver, value) ||
      read64(off, size, kQueueDevice, q->device, value)) {
    return value;
  }
  return 0;
}

void VirtioPciDevice::common_write(uint32_t off, size_t size, uint64_t value) {
  using namespace common_cfg;
  auto is = [&](uint32_t field, size_t width) { return off == field && size == width; };
  const uint32_t v32 = static_cast<uint32_t>(value);
  const uint16_t v16 = static_cast<uint16_t>(value);
  if (is(kDeviceFeatureSelect, 4)) {
    device_feature_select_ = v32;
    return;
  }
  if (is(kDriverFeatureSelect, 4)) {
    driver_feature_select_ = v32;
    return;
  }
  if (is(kDriverFeature, 4)) {
    // 3.1.1: features are fixed once FEATURES_OK is set.
    if (status_ & kStatusFeaturesOk) return;
    if (driver_feature_select_ == 0)
      driver_features_ = (driver_features_ & ~uint64_t{0xffffffff}) | v32;
    else if (driver_feature_select_ == 1)
      driver_features_ = (driver_features_ & 0xffffffff) | uint64_t{v32} << 32;
    return;
  }
  if (is(kMsixConfig, 2)) {
    msix_config_ = checked_vector(v16);
    return;
  }
  if (is(kDeviceStatus, 1)) {
    write_status(static_cast<uint8_t>(value));
    return;
  }
  if (is(kQueueSelect, 2)) {
    queue_select_ = v16;
    return;
  }
  QueueRegs* q = selected_queue();
  if (q == nullptr) return;
  if (is(kQueueMsixVector, 2)) {
    q->msix_vector = checked_vector(v16);
    return;
  }
  // The rest configures the ring: fixed once the queue is enabled, and no
  // queue can be enabled after DRIVER_OK.
  if (q->enabled) return;
  if (is(kQueueSize, 2)) {
    if (v16 <= max_queue_size_) q->size = v16;  // power of two: checked at activation
    return;
  }
  if (is(kQueueEnable, 2)) {
    // 4.1.4.3.2: the driver writes 1 only; 0 is not a way to disable.
    if (v16 == 1 && !(status_ & kStatusDriverOk)) q->enabled = true;
    return;
  }
  if (write64(off, size, kQueueDesc, value, q->desc) ||
      write64(off, size, kQueueDriver, value, q->driver) ||
      write64(off, size, kQueueDevice, value, q->device)) {
    return;
  }
}

// --- status machine (2.1, 3.1.1) ------------------------------------------

void VirtioPciDevice::write_status(uint8_t value) {
  // The driver must wait for the reset to read 0 first (4.1.4.3.1): until
  // then nothing starts the device again.
  if (reset_in_progress()) return;
  if (value == 0) {
    reset();
    return;
  }
  const uint8_t device_bits = status_ & kStatusDeviceNeedsReset;
  value &= static_cast<uint8_t>(~kStatusDeviceNeedsReset);  // the device's bit
  const uint8_t driver_bits = status_ & static_cast<uint8_t>(~kStatusDeviceNeedsReset);
  if ((driver_bits & ~value) != 0) return;  // only a reset clears bits (2.1.1)
  const uint8_t added = value & ~driver_bits;
  if (added & kStatusFeaturesOk) {
    const bool subset = (driver_features_ & ~offered_features_) == 0;
    const bool modern = (driver_features_ & kFVersion1) != 0;
    if (!subset || !modern) value &= static_cast<uint8_t>(~kStatusFeaturesOk);
  }
  if ((added & kStatusDriverOk) && !(value & kStatusFeaturesOk)) {
    value &= static_cast<uint8_t>(~kStatusDriverOk);
  }
  status_ = value | device_bits;
  if ((added & kStatusDriverOk) && (status_ & kStatusDriverOk) && !device_bits) activate();
}

void VirtioPciDevice::activate() {
  std::vector<std::optional<SplitQueue>> queues(num_queues_);
  try {
    for (uint16_t i = 0; i < num_queues_; ++i) {
      const QueueRegs& q = queues_[i];
      if (!q.enabled) continue;
      SplitQueueConfig config;
      config.size = q.size;
      config.desc_table = q.desc;
      config.driver_area = q.driver;
      config.device_area = q.device;
      config.event_idx = (driver_features_ & kFRingEventIdx) != 0;
      config.indirect_desc = (driver_features_ & kFRingIndirectDesc) != 0;
      queues[i].emplace(memory_, config);
    }
    device_.activate(memory_, std::move(queues), driver_features_);
    activated_ = true;
  } catch (const VirtqueueError& e) {
    // A ring the checks refused: the driver's mistake. The device stops, the
    // VM goes on.
    needs_reset(std::string("activation refused the driver's queues: ") + e.what());
  } catch (const std::exception& e) {
    // A device that could not start (host resources, a backend): the
    // host's failure, said as such.
    needs_reset(std::string("host failure at activation: ") + e.what());
  }
}

bool VirtioPciDevice::reset_in_progress() {
  if (resetting_ && !device_.reset_pending()) resetting_ = false;
  return resetting_;
}

void VirtioPciDevice::reset() {
  const uint8_t before = status_;
  device_.reset();
  resetting_ = device_.reset_pending();
  // Non-zero whatever it was: the driver waits for 0.
  status_before_reset_ = before != 0 ? before : kStatusAcknowledge;
  activated_ = false;
  needs_reset_reason_.clear();
  status_ = 0;
  device_feature_select_ = 0;
  driver_feature_select_ = 0;
  driver_features_ = 0;
  msix_config_ = kMsiNoVector;
  queue_select_ = 0;
  for (QueueRegs& q : queues_) q = QueueRegs{max_queue_size_};
  isr_ = 0;
  update_intx();
}

void VirtioPciDevice::needs_reset(const std::string& why) {
  if (status_ & kStatusDeviceNeedsReset) return;
  status_ |= kStatusDeviceNeedsReset;
  needs_reset_reason_ = why;
  if (hooks_.needs_reset) hooks_.needs_reset(why);
  // 2.1.2: with DRIVER_OK set, the device must tell the driver.
  if (status_ & kStatusDriverOk) config_interrupt();
}

// --- interrupts (4.1.5.3, 4.1.5.4) ----------------------------------------

void VirtioPciDevice::set_isr(uint8_t bits) {
  isr_ |= bits;
  update_intx();
}

// The INTx line is a level: asserted while the ISR is set, unless MSI-X is on
// (then the function must not use INTx) or the command register's Interrupt
// Disable bit is set. The hook hears only changes.
void VirtioPciDevice::update_intx() {
  constexpr uint32_t kCommandInterruptDisable = 1u << 10;
  const bool disabled = config_.read_dword(PciConfigSpace::kCommand) & kCommandInterruptDisable;
  const bool level = isr_ != 0 && !msix_.enabled() && !disabled;
  intx_level_ = level;
  tell_intx();
}

// The hook hears the level only when it changed since it last heard it,
// and not while a restored function holds its interrupts.
void VirtioPciDevice::tell_intx() {
  if (holding_interrupts_ || intx_level_ == intx_told_) return;
  intx_told_ = intx_level_;
  if (hooks_.intx) hooks_.intx(intx_told_);
}

void VirtioPciDevice::queue_interrupt(uint16_t queue) {
  if (queue >= num_queues_) return;
  if (msix_.enabled()) {
    raise_vector(queues_[queue].msix_vector);
    return;
  }
  set_isr(kIsrQueue);
}

void VirtioPciDevice::config_interrupt() {
  if (msix_.enabled()) {
    isr_ |= kIsrConfig;
    raise_vector(msix_config_);
    return;
  }
  set_isr(kIsrConfig);
}

void VirtioPciDevice::raise_vector(uint16_t vector) {
  if (!holding_interrupts_) {
    msix_.trigger(vector);  // kMsiNoVector: ignored
    return;
  }
  if (std::find(held_vectors_.begin(), held_vectors_.end(), vector) == held_vectors_.end()) {
    held_vectors_.push_back(vector);
  }
}

void VirtioPciDevice::release_interrupts() {
  if (!holding_interrupts_) return;
  holding_interrupts_ = false;
  for (uint16_t vector : held_vectors_) msix_.trigger(vector);
  held_vectors_.clear();
  tell_intx();
}

void VirtioPciDevice::config_changed() {
  ++config_generation_;
  if (status_ & kStatusDriverOk) config_interrupt();
}

}  // namespace keel::virtio
