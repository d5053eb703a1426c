// Snapshot of a virtio-pci function: VirtioPciDevice::save() and restore()
// (see virtio_pci_device.h). A saved state is
// untrusted input: every value restore() takes is one the guest could have
// produced through the registers, checked the way the registers check it.
#include <bit>
#include <stdexcept>
#include <string>
#include <utility>

#include "common/state_check.h"
#include "devices/virtio/pci/virtio_pci_device.h"
#include "devices/virtio/queue/virtqueue_error.h"

namespace keel::virtio {

namespace {

namespace pb = state::v1;

// 2.1: the status bits a device can hold (0x10 and 0x20 are reserved).
constexpr uint8_t kKnownStatus = kStatusAcknowledge | kStatusDriver | kStatusDriverOk |
                                 kStatusFeaturesOk | kStatusDeviceNeedsReset | kStatusFailed;
constexpr uint16_t kMsixEnable = 0x8000, kMsixFunctionMask = 0x4000;  // PCI 3.0, 6.8.2.3
constexpr uint16_t kCommandInterruptDisable = 1u << 10;

uint16_t config_u16(const std::string& bytes, unsigned offset) {
  return static_cast<uint16_t>(static_cast<uint8_t>(bytes[offset]) |
                               static_cast<uint8_t>(bytes[offset + 1]) << 8);
}

}  // namespace

// --- save --------------------------------------------------------------------

pb::VirtioPciState VirtioPciDevice::save() {
  std::lock_guard guard(mutex_);
  // A pending reset's work may still write guest memory: done first too.
  if ((activated_ && !(status_ & kStatusDeviceNeedsReset)) || reset_in_progress()) {
    device_.quiesce();
    reset_in_progress();
  }
  quiesced_ = true;  // until resume_queues(): kicks wait
  // A device that asked for a reset uses no queues (2.1.2): it is saved as
  // not running, and the driver's reset will follow on the restored side.
  const bool running = activated_ && !(status_ & kStatusDeviceNeedsReset);

  pb::VirtioPciState s;
  device_.save_state(*s.mutable_device());
  s.set_device_type(device_.device_type());
  *s.mutable_config() = config_.save();
  *s.mutable_msix() = msix_.save();
  s.set_device_feature_select(device_feature_select_);
  s.set_driver_feature_select(driver_feature_select_);
  s.set_driver_features(driver_features_);
  s.set_msix_config(msix_config_);
  s.set_status(status_);
  s.set_config_generation(config_generation_);
  s.set_queue_select(queue_select_);
  for (uint16_t i = 0; i < num_queues_; ++i) {
    const QueueRegs& q = queues_[i];
    pb::VirtqueueState* out = s.add_queues();
    out->set_size(q.size);
    out->set_msix_vector(q.msix_vector);
    out->set_enabled(q.enabled);
    out->set_desc(q.desc);
    out->set_driver(q.driver);
    out->set_device(q.device);
    if (running && q.enabled) {
      const std::optional<SplitQueueState> qs = device_.queue_state(i);
      if (!qs) {
        throw std::runtime_error(virtio_device_name(device_.device_type()) + ": queue " +
                                 std::to_string(i) +
                                 " is enabled but the running device has no state for it");
      }
      out->mutable_indexes()->set_last_avail_idx(qs->last_avail_idx);
      out->mutable_indexes()->set_next_used_idx(qs->next_used_idx);
    }
  }
  s.set_isr(isr_);
  s.set_activated(running);
  s.set_intx_level(intx_level_);
  return s;
}

// --- restore -----------------------------------------------------------------

void VirtioPciDevice::restore(const pb::VirtioPciState& s) {
  std::lock_guard guard(mutex_);
  const std::string name = virtio_device_name(device_.device_type());

  // Everything is checked before anything changes.
  if (s.device_type() != device_.device_type()) {
    refuse_state(name, "device_type", std::to_string(s.device_type()) + " is another device");
  }
  config_.check(s.config(), name);
  msix_.check(s.msix(), name);
  const uint16_t msix_control = config_u16(s.config().bytes(), msix_cap_ + 2u);
  if (((msix_control & kMsixEnable) != 0) != s.msix().enabled() ||
      ((msix_control & kMsixFunctionMask) != 0) != s.msix().function_masked()) {
    refuse_state(name, "msix", "enable or function mask disagrees with the capability");
  }

  const auto status = state_field<uint8_t>(s.status(), name, "status");
  if (status & ~kKnownStatus) refuse_state(name, "status", "has reserved bits set");
  if ((status & kStatusDriverOk) && !(status & kStatusFeaturesOk)) {
    refuse_state(name, "status", "has DRIVER_OK without FEATURES_OK");
  }
  // Before FEATURES_OK the register holds whatever the driver wrote (the
  // check runs when it sets FEATURES_OK); afterwards it is what was agreed.
  const uint64_t features = s.driver_features();
  if (status & kStatusFeaturesOk) {
    if (features & ~offered_features_) {
      refuse_state(name, "driver_features",
                   "has bits " + std::to_string(features & ~offered_features_) +
                       " the device does not offer");
    }
    if (!(features & kFVersion1)) refuse_state(name, "driver_features", "lack VERSION_1");
  }
  const bool running = s.activated();
  if (running && (!(status & kStatusDriverOk) || (status & kStatusDeviceNeedsReset))) {
    refuse_state(name, "activated", "needs DRIVER_OK and no DEVICE_NEEDS_RESET");
  }
  if (!running && (status & kStatusDriverOk) && !(status & kStatusDeviceNeedsReset)) {
    refuse_state(name, "activated", "is false with DRIVER_OK set and no DEVICE_NEEDS_RESET");
  }
  auto vector = [&](uint32_t v, const std::string& field) {
    if (v != kMsiNoVector && v >= msix_.vectors()) {
      refuse_state(name, field, std::to_string(v) + " is past the MSI-X table");
    }
    return static_cast<uint16_t>(v);
  };
  const uint16_t msix_config = vector(s.msix_config(), "msix_config");
  const auto config_generation =
      state_field<uint8_t>(s.config_generation(), name, "config_generation");
  const auto queue_select = state_field<uint16_t>(s.queue_select(), name, "queue_select");
  const auto isr = state_field<uint8_t>(s.isr(), name, "isr");
  if (isr & ~(kIsrQueue | kIsrConfig)) refuse_state(name, "isr", "has reserved bits set");
  const bool interrupt_disabled =
      config_u16(s.config().bytes(), PciConfigSpace::kCommand) & kCommandInterruptDisable;
  if (s.intx_level() != (isr != 0 && !s.msix().enabled() && !interrupt_disabled)) {
    refuse_state(name, "intx_level", "disagrees with the ISR, MSI-X and command register");
  }

  if (static_cast<size_t>(s.queues_size()) != num_queues_) {
    refuse_state(
        name, "queues",
        "has " + std::to_string(s.queues_size()) + " queues, not " + std::to_string(num_queues_));
  }
  std::vector<QueueRegs> regs(num_queues_);
  std::vector<std::optional<SplitQueue>> rings(num_queues_);
  for (uint16_t i = 0; i < num_queues_; ++i) {
    const pb::VirtqueueState& in = s.queues(i);
    const std::string field = "queue " + std::to_string(i);
    QueueRegs& q = regs[i];
    q.size = state_field<uint16_t>(in.size(), name, field + " size");
    if (q.size > max_queue_size_) {
      refuse_state(name, field + " size",
                   std::to_string(q.size) + " is above " + std::to_string(max_queue_size_));
    }
    q.msix_vector = vector(in.msix_vector(), field + " msix_vector");
    q.enabled = in.enabled();
    q.desc = in.desc();
    q.driver = in.driver();
    q.device = in.device();
    const bool resumes = running && q.enabled;
    if (in.has_indexes() != resumes) {
      refuse_state(name, field + " indexes",
                   resumes ? "are missing for a running queue"
                           : "are given for a queue that is not running");
    }
    if (!resumes) continue;
    SplitQueueConfig config;
    config.size = q.size;
    config.desc_table = q.desc;
    config.driver_area = q.driver;
    config.device_area = q.device;
    config.event_idx = (features & kFRingEventIdx) != 0;
    config.indirect_desc = (features & kFRingIndirectDesc) != 0;
    SplitQueueState indexes;
    indexes.last_avail_idx =
        state_field<uint16_t>(in.indexes().last_avail_idx(), name, field + " last_avail_idx");
    indexes.next_used_idx =
        state_field<uint16_t>(in.indexes().next_used_idx(), name, field + " next_used_idx");
    try {
      rings[i].emplace(memory_, config);  // the activation checks
      rings[i]->set_state(indexes);
    } catch (const VirtqueueError& e) {
      refuse_state(name, field, std::string("is refused: ") + e.what());
    }
  }
  device_.restore_state(s.device());

  // Take it: from the power-on state, as after a driver reset, holding
  // interrupts until the machine's state is all in (release_interrupts).
  holding_interrupts_ = true;
  held_vectors_.clear();
  reset();
  config_.restore(s.config(), name);
  msix_.restore(s.msix(), name);
  device_feature_select_ = s.device_feature_select();
  driver_feature_select_ = s.driver_feature_select();
  driver_features_ = features;
  msix_config_ = msix_config;
  status_ = status;
  config_generation_ = config_generation;
  queue_select_ = queue_select;
  queues_ = std::move(regs);
  isr_ = isr;
  if (running) {
    try {
      device_.activate(memory_, std::move(rings), driver_features_);
    } catch (...) {
      reset();  // host-side (a tap gone): nothing half-started stays
      throw;
    }
    activated_ = true;
    for (uint16_t i = 0; i < num_queues_; ++i) {
      if (queues_[i].enabled && !(status_ & kStatusDeviceNeedsReset)) device_.queue_notify(i);
    }
  }
  update_intx();
}

}  // namespace keel::virtio
