#include <gtest/gtest.h>

#include <array>
#include <cstring>
#include <utility>
#include <vector>

#include "devices/virtio/pci/msix_table.h"
#include "devices/virtio/pci/virtio_pci_device.h"
#include "tests/support/virtqueue_driver.h"

namespace keel::virtio {
namespace {

using testing::VirtqueueDriver;
namespace cc = common_cfg;

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kFeatureRo = uint64_t{1} << 5;  // a device-specific bit

// A tiny device: two queues of up to 256, eight bytes of configuration.
class FakeDevice : public VirtioDevice {
 public:
  uint16_t device_type() const override { return kDeviceTypeBlock; }
  uint64_t device_features() const override { return kFeatureRo; }
  uint16_t num_queues() const override { return 2; }
  uint16_t max_queue_size() const override { return 256; }
  uint32_t config_size() const override { return 8; }
  void config_read(uint32_t offset, std::span<uint8_t> data) override {
    std::memcpy(data.data(), config.data() + offset, data.size());
  }
  void config_write(uint32_t offset, std::span<const uint8_t> data) override {
    std::memcpy(config.data() + offset, data.data(), data.size());
  }
  void activate(GuestMemory&, std::vector<std::optional<SplitQueue>> q,
                uint64_t features) override {
    if (!host_failure.empty()) throw std::runtime_error(host_failure);
    queues = std::move(q);
    negotiated = features;
    ++activations;
  }
  void reset() override {
    queues.clear();
    ++resets;
  }
  bool reset_pending() const override { return work_in_flight; }
  bool work_in_flight = false;  // a reset stays pending while set
  std::string host_failure;     // activate throws this, as a backend that cannot start
  void queue_notify(uint16_t queue) override { notified.push_back(queue); }

  std::array<uint8_t, 8> config{1, 2, 3, 4, 5, 6, 7, 8};
  std::vector<std::optional<SplitQueue>> queues;
  uint64_t negotiated = 0;
  int activations = 0;
  int resets = 0;
  std::vector<uint16_t> notified;
};

struct RecordingSink : MsiSink {
  void send(uint16_t, uint64_t address, uint32_t data) override {
    messages.emplace_back(address, data);
  }
  std::vector<std::pair<uint64_t, uint32_t>> messages;
};

struct VirtioPciTest : ::testing::Test {
  GuestMemory memory{{{0, kMiB, 0}}};
  FakeDevice device;
  RecordingSink sink;
  std::vector<uint16_t>& notified = device.notified;
  std::vector<bool> intx;
  VirtioPciDevice pci{device, memory, sink, {[this](bool a) { intx.push_back(a); }}};

  uint64_t read(uint64_t offset, size_t size) {
    uint8_t bytes[8] = {};
    pci.bar_read(offset, {bytes, size});
    uint64_t v = 0;
    std::memcpy(&v, bytes, size);
    return v;
  }
  void write(uint64_t offset, size_t size, uint64_t value) {
    uint8_t bytes[8];
    std::memcpy(bytes, &value, 8);
    pci.bar_write(offset, {bytes, size});
  }
  uint8_t cfg8(uint16_t off) {
    return static_cast<uint8_t>(pci.config_read(off & ~3) >> (8 * (off & 3)));
  }
  uint16_t cfg16(uint16_t off) {
    return static_cast<uint16_t>(pci.config_read(off & ~3) >> (8 * (off & 3)));
  }
  uint32_t cfg32(uint16_t off) { return pci.config_read(off); }

  void set_status(uint8_t s) { write(cc::kDeviceStatus, 1, s); }
  uint8_t status() { return static_cast<uint8_t>(read(cc::kDeviceStatus, 1)); }
  void set_driver_features(uint64_t f) {
    write(cc::kDriverFeatureSelect, 4, 0);
    write(cc::kDriverFeature, 4, static_cast<uint32_t>(f));
    write(cc::kDriverFeatureSelect, 4, 1);
    write(cc::kDriverFeature, 4, f >> 32);
  }
  void negotiate(uint64_t f) {
    set_status(kStatusAcknowledge);
    set_status(kStatusAcknowledge | kStatusDriver);
    set_driver_features(f);
    set_status(kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk);
  }
  void setup_queue(uint16_t index, const SplitQueueConfig& c) {
    write(cc::kQueueSelect, 2, index);
    write(cc::kQueueSize, 2, c.size);
    write(cc::kQueueDesc, 4, c.desc_table);
    write(cc::kQueueDesc + 4, 4, c.desc_table >> 32);
    write(cc::kQueueDriver, 8, c.driver_area);
    write(cc::kQueueDevice, 4, c.device_area);
    write(cc::kQueueDevice + 4, 4, c.device_area >> 32);
    write(cc::kQueueEnable, 2, 1);
  }
  void driver_ok() {
    set_status(kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk);
  }
  void enable_msix(bool function_mask = false) {
    const uint16_t cap = find_cap(0x11);
    const uint32_t control = (0x8000u | (function_mask ? 0x4000u : 0)) << 16;
    pci.config_write(cap, control, 0b1100);
  }
  void program_vector(uint16_t v, uint64_t address, uint32_t data, bool masked) {
    const uint64_t e = VirtioPciDevice::kMsixTableOffset + 16ull * v;
    write(e, 8, address);
    write(e + 8, 4, data);
    write(e + 12, 4, masked ? 1 : 0);
  }
  // The first capability with `id` (and cfg_type, for vendor ones), or 0.
  uint16_t find_cap(uint8_t id, uint8_t cfg_type = 0) {
    uint8_t at = cfg8(0x34);
    for (int n = 0; at != 0 && n < 48; ++n) {
      if (cfg8(at) == id && (id != 0x09 || cfg8(at + 3) == cfg_type)) return at;
      at = cfg8(at + 1);
    }
    return 0;
  }
};

// --- configuration space --------------------------------------------------

TEST_F(VirtioPciTest, IdsAndHeader) {
  EXPECT_EQ(cfg16(0x00), 0x1af4);
  EXPECT_EQ(cfg16(0x02), 0x1042);  // 0x1040 + block
  EXPECT_EQ(cfg8(0x08), 1);        // revision
  EXPECT_EQ(cfg32(0x08) >> 8, 0x010000u);
  EXPECT_EQ(cfg16(0x2c), 0x1af4);
  EXPECT_GE(cfg16(0x2e), 0x40);
  EXPECT_TRUE(cfg16(0x06) & 0x10);  // capability list
  EXPECT_EQ(cfg8(0x3d), 1);         // INTA#
  EXPECT_EQ(cfg8(0x0e), 0);         // type-0 header
}

TEST_F(VirtioPciTest, CapabilityChainPointsInsideTheBar) {
  std::vector<uint8_t> types;
  uint8_t at = cfg8(0x34);
  int n = 0;
  bool msix = false;
  for (; at != 0 && n < 48; ++n) {
    ASSERT_GE(at, 0x40);
    ASSERT_EQ(at % 4, 0);
    const uint8_t id = cfg8(at);
    if (id == 0x09) {
      const uint8_t type = cfg8(at + 3);
      types.push_back(type);
      EXPECT_GE(cfg8(at + 2), 16);
      if (type != kCapPciCfg) {
        EXPECT_EQ(cfg8(at + 4), 0) << "bar";
        const uint64_t offset = cfg32(at + 8), length = cfg32(at + 12);
        EXPECT_GT(length, 0u);
        EXPECT_LE(offset + length, VirtioPciDevice::kBarSize) << int(type);
      }
      if (type == kCapNotifyCfg) {
        EXPECT_EQ(cfg8(at + 2), 20);
        EXPECT_EQ(cfg32(at + 16), VirtioPciDevice::kNotifyOffMultiplier);
      }
    } else if (id == 0x11) {
      msix = true;
      EXPECT_EQ((cfg16(at + 2) & 0x7ff) + 1, 3);  // two queues + config
      const uint32_t table = cfg32(at + 4), pba = cfg32(at + 8);
      EXPECT_EQ(table & 7, 0u);
      EXPECT_EQ(pba & 7, 0u);
      EXPECT_LE((table & ~7u) + 3 * 16, VirtioPciDevice::kBarSize);
      EXPECT_LE((pba & ~7u) + 8, VirtioPciDevice::kBarSize);
    } else {
      ADD_FAILURE() << "unexpected capability " << int(id);
    }
    at = cfg8(at + 1);
  }
  EXPECT_LT(n, 48) << "capability list loops";
  EXPECT_TRUE(msix);
  EXPECT_EQ(types, (std::vector<uint8_t>{kCapCommonCfg, kCapNotifyCfg, kCapIsrCfg, kCapDeviceCfg,
                                         kCapPciCfg}));
}

TEST_F(VirtioPciTest, CapabilitiesAreReadOnly) {
  const uint16_t common = find_cap(0x09, kCapCommonCfg);
  const uint32_t before = cfg32(common + 8);
  pci.config_write(common + 8, 0x12345678, 0xf);
  pci.config_write(common, 0xffffffff, 0xf);
  EXPECT_EQ(cfg32(common + 8), before);
  EXPECT_EQ(find_cap(0x09, kCapCommonCfg), common);
}

TEST_F(VirtioPciTest, BarSizingAndPlacement) {
  EXPECT_EQ(cfg32(0x10) & 0xf, 0x4u);  // memory, 64-bit, not prefetchable
  pci.config_write(0x10, 0xffffffff, 0xf);
  pci.config_write(0x14, 0xffffffff, 0xf);
  EXPECT_EQ(cfg32(0x10), static_cast<uint32_t>(~(VirtioPciDevice::kBarSize - 1)) | 0x4);
  EXPECT_EQ(cfg32(0x14), 0xffffffffu);
  pci.config_write(0x10, 0xfebf0000, 0xf);
  pci.config_write(0x14, 0x1, 0xf);
  EXPECT_EQ(pci.bar_placement().address, 0x1febf0000ull);
  EXPECT_FALSE(pci.bar_placement().enabled);
  uint8_t bytes[4] = {};
  EXPECT_FALSE(pci.mmio(0x1febf0000ull, bytes, false)) << "not decoded yet";
  pci.config_write(0x04, 0x2, 0x3);
  EXPECT_TRUE(pci.bar_placement().enabled);
}

TEST_F(VirtioPciTest, MmioClaimsOnlyWholeAccessesInsideTheBar) {
  const uint64_t base = 0xc0008000;
  pci.config_write(0x10, static_cast<uint32_t>(base), 0xf);
  pci.config_write(0x14, 0, 0xf);
  pci.config_write(0x04, 0x2, 0x3);
  uint8_t bytes[8] = {};
  EXPECT_TRUE(pci.mmio(base + cc::kNumQueues, {bytes, 2}, false));
  EXPECT_EQ(bytes[0], 2);  // FakeDevice's two queues
  EXPECT_FALSE(pci.mmio(base - 2, {bytes, 4}, false));
  EXPECT_FALSE(pci.mmio(base + VirtioPciDevice::kBarSize - 4, {bytes, 8}, false));
  EXPECT_FALSE(pci.mmio(base + VirtioPciDevice::kBarSize, {bytes, 4}, true));
  EXPECT_FALSE(pci.mmio(~uint64_t{0} - 1, {bytes, 4}, false));
  EXPECT_TRUE(pci.mmio(base + cc::kDeviceStatus, {bytes, 1}, true));
}

// --- feature negotiation --------------------------------------------------

TEST_F(VirtioPciTest, OffersTransportFeatures) {
  write(cc::kDeviceFeatureSelect, 4, 0);
  const uint64_t lo = read(cc::kDeviceFeature, 4);
  write(cc::kDeviceFeatureSelect, 4, 1);
  const uint64_t hi = read(cc::kDeviceFeature, 4);
  write(cc::kDeviceFeatureSelect, 4, 7);
  EXPECT_EQ(read(cc::kDeviceFeature, 4), 0u);
  EXPECT_EQ(lo | hi << 32, kFeatureRo | kFVersion1 | kFRingEventIdx | kFRingIndirectDesc);
}

TEST_F(VirtioPciTest, FeaturesOkNeedsVersion1) {
  negotiate(kFeatureRo);
  EXPECT_FALSE(status() & kStatusFeaturesOk);
}

TEST_F(VirtioPciTest, FeaturesOkRefusesUnofferedFeatures) {
  negotiate(kFVersion1 | (uint64_t{1} << 40));
  EXPECT_FALSE(status() & kStatusFeaturesOk);
  // A correct retry after the refusal is accepted.
  set_driver_features(kFVersion1);
  set_status(kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk);
  EXPECT_TRUE(status() & kStatusFeaturesOk);
}

TEST_F(VirtioPciTest, FeaturesAreFixedAfterFeaturesOk) {
  negotiate(kFVersion1 | kFeatureRo);
  ASSERT_TRUE(status() & kStatusFeaturesOk);
  write(cc::kDriverFeatureSelect, 4, 0);
  write(cc::kDriverFeature, 4, 0xffffffff);
  EXPECT_EQ(pci.driver_features(), kFVersion1 | kFeatureRo);
  write(cc::kDriverFeatureSelect, 4, 1);
  EXPECT_EQ(read(cc::kDriverFeature, 4), 1u);
}

TEST_F(VirtioPciTest, DriverOkWithoutFeaturesOkDoesNotStick) {
  set_status(kStatusAcknowledge | kStatusDriver | kStatusDriverOk);
  EXPECT_FALSE(status() & kStatusDriverOk);
  EXPECT_EQ(device.activations, 0);
}

TEST_F(VirtioPciTest, StatusBitsClearOnlyThroughReset) {
  negotiate(kFVersion1);
  set_status(kStatusAcknowledge);
  EXPECT_EQ(status(), kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk);
  set_status(kStatusDeviceNeedsReset | kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk);
  EXPECT_FALSE(status() & kStatusDeviceNeedsReset);
}

// --- queues and activation ------------------------------------------------

TEST_F(VirtioPciTest, QueueRegistersDefaults) {
  EXPECT_EQ(read(cc::kNumQueues, 2), 2u);
  write(cc::kQueueSelect, 2, 1);
  EXPECT_EQ(read(cc::kQueueSize, 2), 256u);
  EXPECT_EQ(read(cc::kQueueMsixVector, 2), kMsiNoVector);
  EXPECT_EQ(read(cc::kQueueNotifyOff, 2), 1u);
  EXPECT_EQ(read(cc::kQueueEnable, 2), 0u);
  write(cc::kQueueSelect, 2, 2);  // no such queue
  EXPECT_EQ(read(cc::kQueueSize, 2), 0u);
  write(cc::kQueueSize, 2, 16);
  EXPECT_EQ(read(cc::kQueueSize, 2), 0u);
  write(cc::kQueueSelect, 2, 0);
  write(cc::kQueueSize, 2, 512);  // above the maximum: ignored
  EXPECT_EQ(read(cc::kQueueSize, 2), 256u);
}

TEST_F(VirtioPciTest, DriverOkActivatesSplitQueues) {
  VirtqueueDriver driver(memory, 16);
  negotiate(kFVersion1 | kFRingEventIdx);
  setup_queue(0, driver.config());
  write(cc::kQueueSelect, 2, 0);
  EXPECT_EQ(read(cc::kQueueDesc, 8), driver.config().desc_table);
  EXPECT_EQ(read(cc::kQueueDriver + 4, 4), 0u);
  EXPECT_EQ(read(cc::kQueueDriver, 4), driver.config().driver_area);
  driver_ok();
  EXPECT_TRUE(status() & kStatusDriverOk);
  EXPECT_FALSE(status() & kStatusDeviceNeedsReset);
  ASSERT_EQ(device.activations, 1);
  EXPECT_TRUE(pci.activated());
  EXPECT_EQ(device.negotiated, kFVersion1 | kFRingEventIdx);
  ASSERT_EQ(device.queues.size(), 2u);
  ASSERT_TRUE(device.queues[0].has_value());
  EXPECT_FALSE(device.queues[1].has_value());
  const SplitQueueConfig& c = device.queues[0]->config();
  EXPECT_EQ(c.size, 16);
  EXPECT_EQ(c.desc_table, driver.config().desc_table);
  EXPECT_EQ(c.driver_area, driver.config().driver_area);
  EXPECT_EQ(c.device_area, driver.config().device_area);
  EXPECT_TRUE(c.event_idx);
  EXPECT_FALSE(c.indirect_desc);

  // The queue really works on guest memory.
  const uint16_t head = driver.write_chain(0, {{0x10000, 64}});
  driver.make_available(head);
  auto chain = device.queues[0]->pop_chain();
  ASSERT_TRUE(chain.has_value());
  device.queues[0]->push_used(head, 0);
  EXPECT_EQ(driver.used_idx(), 1);
}

TEST_F(VirtioPciTest, EnabledQueueRegistersAreFrozen) {
  VirtqueueDriver driver(memory, 16);
  negotiate(kFVersion1);
  setup_queue(0, driver.config());
  write(cc::kQueueSize, 2, 32);
  write(cc::kQueueDesc, 4, 0x8000);
  write(cc::kQueueEnable, 2, 0);
  EXPECT_EQ(read(cc::kQueueSize, 2), 16u);
  EXPECT_EQ(read(cc::kQueueDesc, 4), driver.config().desc_table);
  EXPECT_EQ(read(cc::kQueueEnable, 2), 1u);
}

TEST_F(VirtioPciTest, BadRingSetsNeedsResetInsteadOfCrashing) {
  VirtqueueDriver driver(memory, 16);
  SplitQueueConfig bad = driver.config();
  bad.device_area = 2 * kMiB;  // outside guest memory
  negotiate(kFVersion1);
  setup_queue(1, bad);
  enable_msix();
  program_vector(2, 0xfee00000, 0x41, false);
  write(cc::kMsixConfig, 2, 2);
  driver_ok();
  EXPECT_TRUE(status() & kStatusDeviceNeedsReset);
  EXPECT_EQ(device.activations, 0);
  EXPECT_FALSE(pci.activated());
  ASSERT_EQ(sink.messages.size(), 1u);  // the configuration change interrupt
  EXPECT_EQ(sink.messages[0], (std::pair<uint64_t, uint32_t>{0xfee00000, 0x41}));
  // Kicks are ignored while the device needs a reset.
  write(VirtioPciDevice::kNotifyOffset + 4, 2, 1);
  EXPECT_TRUE(notified.empty());
}

TEST_F(VirtioPciTest, NonPowerOfTwoSizeSetsNeedsReset) {
  VirtqueueDriver driver(memory, 16);
  SplitQueueConfig bad = driver.config();
  bad.size = 100;
  negotiate(kFVersion1);
  setup_queue(0, bad);
  driver_ok();
  EXPECT_TRUE(status() & kStatusDeviceNeedsReset);
  // Without MSI-X, the configuration change goes through the ISR and INTx.
  EXPECT_EQ(intx, std::vector<bool>{true});
  EXPECT_EQ(read(VirtioPciDevice::kIsrOffset, 1), kIsrConfig);
}

TEST_F(VirtioPciTest, ResetClearsEverything) {
  VirtqueueDriver driver(memory, 16);
  negotiate(kFVersion1 | kFRingIndirectDesc);
  setup_queue(0, driver.config());
  write(cc::kQueueMsixVector, 2, 1);
  write(cc::kMsixConfig, 2, 0);
  driver_ok();
  ASSERT_TRUE(pci.activated());
  pci.queue_interrupt(0);  // ISR set, INTx up
  set_status(0);
  EXPECT_EQ(status(), 0);
  EXPECT_FALSE(pci.activated());
  EXPECT_EQ(device.resets, 1);
  EXPECT_TRUE(device.queues.empty());
  EXPECT_EQ(pci.driver_features(), 0u);
  EXPECT_EQ(read(cc::kMsixConfig, 2), kMsiNoVector);
  EXPECT_EQ(read(cc::kQueueSelect, 2), 0u);
  EXPECT_EQ(read(cc::kQueueSize, 2), 256u);
  EXPECT_EQ(read(cc::kQueueEnable, 2), 0u);
  EXPECT_EQ(read(cc::kQueueDesc, 8), 0u);
  EXPECT_EQ(read(cc::kQueueMsixVector, 2), kMsiNoVector);
  EXPECT_EQ(intx, (std::vector<bool>{true, false}));
  EXPECT_EQ(read(VirtioPciDevice::kIsrOffset, 1), 0u);
  // And the device can be brought up again.
  negotiate(kFVersion1);
  setup_queue(0, driver.config());
  driver_ok();
  EXPECT_EQ(device.activations, 2);
}

// 4.1.4.3.1: the driver waits for device_status to read 0 after writing it.
// A device with work still in flight (a disk's requests in the kernel)
// finishes it asynchronously; until then the status reads non-zero and the
// device cannot be started again, whatever the driver writes.
TEST_F(VirtioPciTest, ResetWithWorkInFlightReadsNonZeroUntilDone) {
  VirtqueueDriver driver(memory, 16);
  negotiate(kFVersion1);
  setup_queue(0, driver.config());
  driver_ok();
  ASSERT_TRUE(pci.activated());
  const uint8_t running = status();
  device.work_in_flight = true;
  set_status(0);
  EXPECT_EQ(device.resets, 1);
  EXPECT_FALSE(pci.activated());
  EXPECT_EQ(status(), running) << "reset still pending";
  // A driver that does not wait gets nowhere: writes are ignored.
  negotiate(kFVersion1);
  setup_queue(0, driver.config());
  driver_ok();
  EXPECT_EQ(device.activations, 1);
  EXPECT_EQ(status(), running);
  set_status(0);
  EXPECT_EQ(device.resets, 1) << "a second reset while one is pending is the same reset";
  // The work done: the reset is complete, and the device comes up again.
  device.work_in_flight = false;
  EXPECT_EQ(status(), 0);
  negotiate(kFVersion1);
  setup_queue(0, driver.config());
  driver_ok();
  EXPECT_EQ(device.activations, 2);
  EXPECT_TRUE(pci.activated());
}

TEST_F(VirtioPciTest, ResetClearsNeedsReset) {
  VirtqueueDriver driver(memory, 16);
  SplitQueueConfig bad = driver.config();
  bad.desc_table += 8;  // misaligned
  negotiate(kFVersion1);
  setup_queue(0, bad);
  driver_ok();
  ASSERT_TRUE(status() & kStatusDeviceNeedsReset);
  // The driver's mistake, said as such (a host failure is said otherwise).
  EXPECT_EQ(pci.needs_reset_reason().rfind("activation refused the driver's queues: ", 0), 0u)
      << pci.needs_reset_reason();
  set_status(0);
  EXPECT_EQ(status(), 0);
  EXPECT_EQ(pci.needs_reset_reason(), "");
}

TEST_F(VirtioPciTest, DeviceReportedNeedsReset) {
  VirtqueueDriver driver(memory, 16);
  negotiate(kFVersion1);
  setup_queue(0, driver.config());
  driver_ok();
  EXPECT_EQ(pci.needs_reset_reason(), "");
  pci.needs_reset("the test asks");
  pci.needs_reset("a second reason is not kept");
  EXPECT_EQ(status() & kStatusDeviceNeedsReset, kStatusDeviceNeedsReset);
  EXPECT_EQ(read(VirtioPciDevice::kIsrOffset, 1), kIsrConfig);
  EXPECT_EQ(pci.needs_reset_reason(), "the test asks");
  set_status(0);
  EXPECT_EQ(pci.needs_reset_reason(), "") << "a reset forgets it";
}

// A device that cannot start is the host's failure, and says so (the
// driver's mistakes: ResetClearsNeedsReset).
TEST_F(VirtioPciTest, NeedsResetSaysAHostFailureIsTheHosts) {
  VirtqueueDriver driver(memory, 16);
  device.host_failure = "io_uring_setup: out of memory";
  negotiate(kFVersion1);
  setup_queue(0, driver.config());
  driver_ok();
  ASSERT_TRUE(status() & kStatusDeviceNeedsReset);
  EXPECT_FALSE(pci.activated());
  EXPECT_EQ(pci.needs_reset_reason(), "host failure at activation: io_uring_setup: out of memory");
}

// --- notify, ISR, device configuration ------------------------------------

TEST_F(VirtioPciTest, NotifyReachesTheRightQueue) {
  VirtqueueDriver driver(memory, 16);
  write(VirtioPciDevice::kNotifyOffset, 2, 0);  // before DRIVER_OK: ignored
  EXPECT_TRUE(notified.empty());
  negotiate(kFVersion1);
  setup_queue(0, driver.config());
  SplitQueueConfig second = driver.config();  // the same layout, 32 KiB further up
  second.desc_table += 0x8000;
  second.driver_area += 0x8000;
  second.device_area += 0x8000;
  setup_queue(1, second);
  driver_ok();
  write(cc::kQueueSelect, 2, 1);
  const uint64_t off = VirtioPciDevice::kNotifyOffset +
                       read(cc::kQueueNotifyOff, 2) * VirtioPciDevice::kNotifyOffMultiplier;
  write(off, 2, 1);
  write(VirtioPciDevice::kNotifyOffset, 2, 0);
  write(VirtioPciDevice::kNotifyOffset + 4 * 2, 2, 2);    // queue 2 does not exist
  write(VirtioPciDevice::kNotifyOffset + 4 * 300, 2, 0);  // far past the end
  write(VirtioPciDevice::kNotifyOffset + 2, 2, 0);        // not at a doorbell
  EXPECT_EQ(notified, (std::vector<uint16_t>{1, 0}));
}

TEST_F(VirtioPciTest, NotifyForAQueueTheDriverDidNotEnableIsIgnored) {
  VirtqueueDriver driver(memory, 16);
  negotiate(kFVersion1);
  setup_queue(0, driver.config());
  driver_ok();
  write(VirtioPciDevice::kNotifyOffset + VirtioPciDevice::kNotifyOffMultiplier, 2, 1);
  EXPECT_TRUE(notified.empty()) << "queue 1 was handed to the device empty";
}

TEST_F(VirtioPciTest, IntxIsDroppedWhenMsixTurnsOnOrInterruptsAreDisabled) {
  pci.queue_interrupt(0);
  EXPECT_EQ(intx, std::vector<bool>{true});
  enable_msix();  // a function must not use INTx with MSI-X on
  EXPECT_EQ(intx, (std::vector<bool>{true, false}));
  pci.config_write(PciConfigSpace::kCommand, 1u << 10, 0x3);  // Interrupt Disable
  EXPECT_EQ(intx, (std::vector<bool>{true, false})) << "no change while MSI-X is on";
}

TEST_F(VirtioPciTest, IsrReadClearsAndDeassertsIntx) {
  pci.queue_interrupt(0);
  pci.queue_interrupt(5);  // no such queue: nothing
  EXPECT_EQ(intx, std::vector<bool>{true});
  EXPECT_EQ(read(VirtioPciDevice::kIsrOffset, 1), kIsrQueue);
  EXPECT_EQ(intx, (std::vector<bool>{true, false}));
  EXPECT_EQ(read(VirtioPciDevice::kIsrOffset, 1), 0u);
  write(VirtioPciDevice::kIsrOffset, 1, 0xff);  // read-only
  EXPECT_EQ(read(VirtioPciDevice::kIsrOffset, 1), 0u);
}

TEST_F(VirtioPciTest, ConfigChangedBumpsGeneration) {
  const uint64_t before = read(cc::kConfigGeneration, 1);
  pci.config_changed();
  EXPECT_EQ(read(cc::kConfigGeneration, 1), (before + 1) & 0xff);
  EXPECT_TRUE(intx.empty());  // not DRIVER_OK yet: no interrupt
}

TEST_F(VirtioPciTest, DeviceConfigIsDelegatedAndBounded) {
  const uint64_t base = VirtioPciDevice::kDeviceCfgOffset;
  EXPECT_EQ(read(base, 8), 0x0807060504030201ull);
  EXPECT_EQ(read(base + 6, 2), 0x0807u);
  EXPECT_EQ(read(base + 6, 4), 0u);  // runs past config_size
  EXPECT_EQ(read(base + 8, 1), 0u);
  write(base + 1, 1, 0xaa);
  EXPECT_EQ(device.config[1], 0xaa);
  write(base + 7, 2, 0xbbbb);  // past the end: ignored
  EXPECT_EQ(device.config[7], 8);
}

TEST_F(VirtioPciTest, PciCfgCapabilityWindow) {
  const uint16_t cap = find_cap(0x09, kCapPciCfg);
  ASSERT_NE(cap, 0);
  pci.config_write(cap + 4, 0, 0x1);                                      // bar 0
  pci.config_write(cap + 8, VirtioPciDevice::kDeviceCfgOffset + 4, 0xf);  // offset
  pci.config_write(cap + 12, 4, 0xf);                                     // length
  EXPECT_EQ(pci.config_read(cap + 16), 0x08070605u);
  pci.config_write(cap + 16, 0xdeadbeef, 0xf);
  EXPECT_EQ(device.config[4], 0xef);
  pci.config_write(cap + 8, VirtioPciDevice::kDeviceCfgOffset + 2, 0xf);  // misaligned for 4
  EXPECT_EQ(pci.config_read(cap + 16), 0u);
  pci.config_write(cap + 4, 3, 0x1);  // another BAR
  pci.config_write(cap + 8, VirtioPciDevice::kDeviceCfgOffset, 0xf);
  EXPECT_EQ(pci.config_read(cap + 16), 0u);
}

// --- hostile accesses -----------------------------------------------------

TEST_F(VirtioPciTest, WrongWidthAndOutOfRangeAccessesAreIgnored) {
  EXPECT_EQ(read(cc::kNumQueues, 4), 0u);      // a u16 read as u32
  EXPECT_EQ(read(cc::kDeviceStatus, 2), 0u);   // status with config_generation
  EXPECT_EQ(read(cc::kNumQueues + 1, 1), 0u);  // half a field
  write(cc::kDeviceStatus, 2, kStatusAcknowledge);
  EXPECT_EQ(status(), 0);
  write(cc::kQueueSelect, 4, 1);
  EXPECT_EQ(read(cc::kQueueSelect, 2), 0u);
  EXPECT_EQ(read(cc::kSize, 4), 0u);  // past the common config
  EXPECT_EQ(read(0x0ffe, 4), 0u);     // straddles two regions
  EXPECT_EQ(read(VirtioPciDevice::kBarSize - 2, 4), 0u);
  EXPECT_EQ(read(VirtioPciDevice::kBarSize, 4), 0u);
  EXPECT_EQ(read(~uint64_t{0} - 1, 4), 0u);  // would wrap
  write(~uint64_t{0} - 1, 4, 0xffffffff);
  uint8_t odd[3] = {};
  pci.bar_read(cc::kDeviceFeatureSelect, {odd, 3});
  pci.bar_write(cc::kDeviceFeatureSelect, std::span<const uint8_t>(odd, 3));
  uint8_t big[16] = {};
  pci.bar_read(0, {big, 16});
  EXPECT_EQ(read(VirtioPciDevice::kMsixTableOffset + 3 * 16, 4), 0u);  // past the table
  write(VirtioPciDevice::kMsixTableOffset + 3 * 16, 4, 0);
  write(VirtioPciDevice::kMsixPbaOffset, 8, ~uint64_t{0});  // PBA is read-only
  EXPECT_EQ(read(VirtioPciDevice::kMsixPbaOffset, 8), 0u);
}

TEST_F(VirtioPciTest, VectorsBeyondTheTableBecomeNoVector) {
  write(cc::kMsixConfig, 2, 3);
  EXPECT_EQ(read(cc::kMsixConfig, 2), kMsiNoVector);
  write(cc::kMsixConfig, 2, 2);
  EXPECT_EQ(read(cc::kMsixConfig, 2), 2u);
  write(cc::kQueueMsixVector, 2, 0x7ff);
  EXPECT_EQ(read(cc::kQueueMsixVector, 2), kMsiNoVector);
}

// --- MSI-X ----------------------------------------------------------------

TEST_F(VirtioPciTest, QueueInterruptThroughMsix) {
  enable_msix();
  program_vector(1, 0xfee01000, 0x51, false);
  write(cc::kQueueSelect, 2, 1);
  write(cc::kQueueMsixVector, 2, 1);
  EXPECT_EQ(read(cc::kQueueMsixVector, 2), 1u);
  pci.queue_interrupt(1);
  pci.queue_interrupt(0);  // NO_VECTOR: nothing at all
  ASSERT_EQ(sink.messages.size(), 1u);
  EXPECT_EQ(sink.messages[0], (std::pair<uint64_t, uint32_t>{0xfee01000, 0x51}));
  EXPECT_TRUE(intx.empty());
  EXPECT_EQ(read(VirtioPciDevice::kIsrOffset, 1), 0u);
}

TEST_F(VirtioPciTest, MsixMaskingPendingAndUnmask) {
  enable_msix();
  program_vector(0, 0xfee00000, 0x30, true);
  write(cc::kQueueMsixVector, 2, 0);  // queue 0 -> vector 0
  pci.queue_interrupt(0);
  EXPECT_TRUE(sink.messages.empty());
  EXPECT_EQ(read(VirtioPciDevice::kMsixPbaOffset, 8), 1u);
  EXPECT_EQ(read(VirtioPciDevice::kMsixPbaOffset, 4), 1u);
  write(VirtioPciDevice::kMsixTableOffset + 12, 4, 0);  // unmask
  ASSERT_EQ(sink.messages.size(), 1u);
  EXPECT_EQ(sink.messages[0].second, 0x30u);
  EXPECT_EQ(read(VirtioPciDevice::kMsixPbaOffset, 8), 0u);

  // The function mask holds everything back, then delivers.
  enable_msix(true);
  pci.queue_interrupt(0);
  EXPECT_EQ(sink.messages.size(), 1u);
  EXPECT_TRUE(pci.msix().pending(0));
  enable_msix(false);
  EXPECT_EQ(sink.messages.size(), 2u);
  EXPECT_FALSE(pci.msix().pending(0));
}

TEST_F(VirtioPciTest, MsixTableReadsBackWhatWasWritten) {
  program_vector(2, 0x1fee00003ull, 0xabcd, false);
  const uint64_t e = VirtioPciDevice::kMsixTableOffset + 32;
  EXPECT_EQ(read(e, 4), 0xfee00000u);  // bits 1:0 read as 0
  EXPECT_EQ(read(e + 4, 4), 1u);
  EXPECT_EQ(read(e + 8, 4), 0xabcdu);
  EXPECT_EQ(read(e + 12, 4), 0u);
  write(e + 12, 4, 0xffffffff);
  EXPECT_EQ(read(e + 12, 4), 1u);  // only the mask bit exists
  EXPECT_EQ(read(e + 8, 8), 0x1'0000abcdull);
  EXPECT_EQ(read(e + 2, 4), 0u);                                   // misaligned
  EXPECT_EQ(read(e, 2), 0u);                                       // too narrow
  EXPECT_EQ(read(VirtioPciDevice::kMsixTableOffset + 12, 4), 1u);  // entries start masked
}

// A crude fuzz: random accesses everywhere (BAR, configuration space,
// interrupts, device calls) must never crash or trip the sanitizers.
// Random accesses from the driver and the device side; after each one the
// transport's invariants hold: DEVICE_NEEDS_RESET exactly when a reason is
// kept, an activated device has DRIVER_OK, the driver's features are ones
// offered, a status of 0 means not activated, and the ISR holds only the
// queue and configuration bits.
TEST_F(VirtioPciTest, RandomAccessesKeepTheTransportsInvariants) {
  VirtqueueDriver driver(memory, 16);
  int activations_seen = 0;
  auto check = [&](int step) {
    const uint8_t st = pci.status();
    ASSERT_EQ((st & kStatusDeviceNeedsReset) != 0, !pci.needs_reset_reason().empty())
        << "step " << step;
    if (pci.activated()) {
      ASSERT_TRUE(st & kStatusDriverOk) << "step " << step;
    }
    if (st == 0) {
      ASSERT_FALSE(pci.activated()) << "step " << step;
    }
    ASSERT_EQ(pci.driver_features() & ~pci.offered_features(), 0u) << "step " << step;
    ASSERT_GE(device.activations, activations_seen) << "step " << step;
    activations_seen = device.activations;
  };
  uint64_t x = 0x9e3779b97f4a7c15ull;
  auto next = [&x] {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return x;
  };
  for (int i = 0; i < 200000; ++i) {
    const uint64_t r = next();
    const size_t size = 1 + (r >> 8) % 8;
    // Mostly the interesting pages, sometimes anywhere.
    const uint64_t offset = (r & 0xf) == 0 ? next() : (next() % (VirtioPciDevice::kBarSize + 64));
    switch (r % 8) {
      case 0:
        read(offset, size);
        break;
      case 1:
        write(offset, size, next());
        break;
      case 2:
        write(offset & 0x3f, size, next() & 0x1ff);
        break;  // common config, small values
      case 3:
        pci.config_write(static_cast<uint16_t>(next()), static_cast<uint32_t>(next()),
                         next() & 0xf);
        break;
      case 4:
        pci.config_read(static_cast<uint16_t>(next()));
        break;
      case 5:
        pci.queue_interrupt(static_cast<uint16_t>(next() % 4));
        break;
      case 6:
        (next() & 1) ? pci.config_changed() : pci.needs_reset("the test asks");
        break;
      case 7:
        // Sometimes a proper bring-up, so activation paths run too.
        set_status(0);
        negotiate(kFVersion1 | (next() & kFRingEventIdx));
        setup_queue(static_cast<uint16_t>(next() % 2), driver.config());
        driver_ok();
        break;
    }
    check(i);
    if (::testing::Test::HasFatalFailure()) return;
  }
  EXPECT_GT(device.activations, 100) << "the bring-ups activated the device";
  EXPECT_EQ(read(VirtioPciDevice::kIsrOffset, 1) & ~uint64_t{kIsrQueue | kIsrConfig}, 0u);
}

// --- MsixTable on its own -------------------------------------------------

TEST(MsixTableTest, BoundsAndDisabledTable) {
  RecordingSink sink;
  EXPECT_THROW(MsixTable(0, sink), std::invalid_argument);
  EXPECT_THROW(MsixTable(2049, sink), std::invalid_argument);
  MsixTable table(65, sink);
  EXPECT_EQ(table.table_bytes(), 65u * 16);
  EXPECT_EQ(table.pba_bytes(), 16u);
  table.trigger(0);  // disabled: dropped
  EXPECT_FALSE(table.pending(0));
  table.set_control(true, false);
  table.trigger(64);  // masked at reset: pending
  EXPECT_TRUE(table.pending(64));
  uint8_t q[8];
  table.pba_read(8, q);
  EXPECT_EQ(q[0], 1);
  table.trigger(65);
  table.trigger(kMsiNoVector);
  EXPECT_FALSE(table.pending(65));
  EXPECT_FALSE(table.masked(kMsiNoVector));
  EXPECT_TRUE(sink.messages.empty());
  table.reset();
  EXPECT_FALSE(table.pending(64));
  EXPECT_FALSE(table.enabled());
}

TEST(MsixTableTest, UnmaskWhileDisabledKeepsPending) {
  RecordingSink sink;
  MsixTable table(4, sink);
  table.set_control(true, false);
  table.trigger(1);
  table.set_control(false, false);
  const uint8_t zero[4] = {};
  table.table_write(16 + 12, zero);  // unmask while MSI-X is off
  EXPECT_TRUE(sink.messages.empty());
  EXPECT_TRUE(table.pending(1));
  table.set_control(true, false);
  EXPECT_EQ(sink.messages.size(), 1u);
  EXPECT_FALSE(table.pending(1));
}

}  // namespace
}  // namespace keel::virtio
