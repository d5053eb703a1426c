// Snapshot of virtio-pci functions (VirtioPciDevice::save/restore with the
// rng and blk devices): a function brought up by a driver through its
// registers is saved, restored into a fresh function over the same guest
// memory, saved again (equal), and carries on: queue indexes continue,
// requests made available after restore complete, chains made available
// before the snapshot are taken without a kick. Corrupted states are refused
// by name and change nothing.
#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/error.h"
#include "devices/virtio/blk/virtio_blk_device.h"
#include "devices/virtio/pci/virtio_pci_device.h"
#include "devices/virtio/rng/virtio_rng_device.h"
#include "tests/support/device_configs.h"
#include "tests/support/temp_image.h"
#include "tests/support/virtqueue_driver.h"

namespace keel::virtio {
namespace {

namespace pb = state::v1;
namespace cc = common_cfg;
using keel::testing::pattern;
using keel::testing::TempImage;
using testing::VirtqueueDriver;

constexpr uint64_t kMiB = 1 << 20;

struct RecordingSink : MsiSink {
  void send(uint16_t vector, uint64_t, uint32_t data) override { sent.push_back({vector, data}); }
  std::vector<std::pair<uint16_t, uint32_t>> sent;
};

// A virtio-pci function over `device`, driven through BAR0 and its
// configuration space as a guest driver would.
struct Function {
  Function(VirtioDevice& device, GuestMemory& memory)
      : device(device),
        pci(device, memory, sink, {[this](bool level) { intx.push_back(level); }}) {}

  // After a save, as the machine does when the guest runs on: the device
  // takes up its work and the kicks that waited reach it.
  void resume() {
    std::lock_guard guard(pci.lock());
    device.resume();
    pci.resume_queues();
  }

  VirtioDevice& device;
  RecordingSink sink;
  std::vector<bool> intx;
  VirtioPciDevice pci;

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
  void set_status(uint8_t s) { write(cc::kDeviceStatus, 1, s); }
  void negotiate(uint64_t features) {
    set_status(kStatusAcknowledge);
    set_status(kStatusAcknowledge | kStatusDriver);
    write(cc::kDriverFeatureSelect, 4, 0);
    write(cc::kDriverFeature, 4, static_cast<uint32_t>(features));
    write(cc::kDriverFeatureSelect, 4, 1);
    write(cc::kDriverFeature, 4, features >> 32);
    set_status(kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk);
  }
  void setup_queue(uint16_t index, const SplitQueueConfig& c, uint16_t vector) {
    write(cc::kQueueSelect, 2, index);
    write(cc::kQueueSize, 2, c.size);
    write(cc::kQueueDesc, 8, c.desc_table);
    write(cc::kQueueDriver, 8, c.driver_area);
    write(cc::kQueueDevice, 8, c.device_area);
    write(cc::kQueueMsixVector, 2, vector);
    write(cc::kQueueEnable, 2, 1);
  }
  void driver_ok() {
    set_status(kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk);
  }
  // MSI-X on, vectors 0 (config) and 1 (queue 0) programmed and unmasked.
  void enable_msix() {
    uint8_t at = static_cast<uint8_t>(pci.config_read(0x34));
    while (at != 0 && static_cast<uint8_t>(pci.config_read(at)) != 0x11) {
      at = static_cast<uint8_t>(pci.config_read(at) >> 8);
    }
    ASSERT_NE(at, 0);
    pci.config_write(at, 0x8000u << 16, 0b1100);
    for (uint16_t v = 0; v < 2; ++v) {
      const uint64_t e = VirtioPciDevice::kMsixTableOffset + 16ull * v;
      write(e, 8, 0xfee00000 + 0x1000 * v);
      write(e + 8, 4, 0x40 + v);
      write(e + 12, 4, 0);
    }
    write(cc::kMsixConfig, 2, 0);
  }
  void place_bar() {
    pci.config_write(0x10, 0xfe000000, 0xf);
    pci.config_write(0x04, 0x0006, 0x3);  // memory, bus master
  }
};

template <typename Msg>
bool same(const Msg& a, const Msg& b) {
  return a.SerializeAsString() == b.SerializeAsString();
}

// --- virtio-rng -------------------------------------------------------------

struct RngStateTest : ::testing::Test {
  GuestMemory memory{{{0, 4 * kMiB, 0}}};
  boost::asio::io_context events;
  VirtqueueDriver driver{memory, 16, /*event_idx=*/true};
  VirtioRngDevice device_a{events};
  Function a{device_a, memory};
  VirtioRngDevice device_b{events};
  Function b{device_b, memory};

  // A running function with `served` chains served.
  void bring_up(Function& f, uint16_t served) {
    f.place_bar();
    f.enable_msix();
    f.negotiate(kFVersion1 | kFRingEventIdx);
    f.setup_queue(0, driver.config(), 1);
    f.driver_ok();
    ASSERT_TRUE(f.pci.activated());
    for (uint16_t i = 0; i < served; ++i) add_chain(i);
    f.write(VirtioPciDevice::kNotifyOffset, 2, 0);
    ASSERT_EQ(driver.used_idx(), served);
  }
  void add_chain(uint16_t n) {
    driver.make_available(driver.write_chain(n % 16, {{0x100000 + 0x1000ull * n, 32, true}}));
  }
  // Expects `f` to refuse `s` with a message naming `what`, unchanged.
  void expect_refused(Function& f, const pb::VirtioPciState& s, const std::string& what) {
    const pb::VirtioPciState before = f.pci.save();
    try {
      f.pci.restore(s);
      ADD_FAILURE() << "not refused: " << what;
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("virtio-rng"), std::string::npos) << e.what();
    }
    EXPECT_TRUE(same(f.pci.save(), before)) << "a refusal changed the function (" << what << ")";
  }
};

TEST_F(RngStateTest, RunningFunctionRoundTripsAndServesOn) {
  bring_up(a, 3);
  const pb::VirtioPciState saved = a.pci.save();
  EXPECT_TRUE(saved.activated());
  ASSERT_EQ(saved.queues_size(), 1);
  EXPECT_EQ(saved.queues(0).indexes().last_avail_idx(), 3u);
  EXPECT_EQ(saved.queues(0).indexes().next_used_idx(), 3u);
  EXPECT_TRUE(saved.device().has_rng());

  b.pci.restore(saved);
  b.pci.release_interrupts();
  EXPECT_TRUE(b.pci.activated());
  EXPECT_EQ(b.pci.status(), a.pci.status());
  EXPECT_EQ(b.pci.driver_features(), kFVersion1 | kFRingEventIdx);
  EXPECT_TRUE(same(b.pci.save(), saved));
  EXPECT_TRUE(b.sink.sent.empty()) << "nothing to deliver on restore";
  EXPECT_EQ(b.pci.bar_placement(), a.pci.bar_placement());
  b.resume();

  // The restored function carries on where the first left off: the next
  // chain lands in used slot 3, and the queue's vector fires.
  add_chain(3);
  b.pci.notify(0);
  ASSERT_EQ(driver.used_idx(), 4);
  EXPECT_EQ(driver.used_elem(3).id, 3u);
  EXPECT_EQ(driver.used_elem(3).len, 32u);
  EXPECT_EQ(driver.avail_event(), 4);
  ASSERT_EQ(b.sink.sent.size(), 1u);
  EXPECT_EQ(b.sink.sent[0], (std::pair<uint16_t, uint32_t>{1, 0x41}));
}

TEST_F(RngStateTest, ChainsMadeAvailableBeforeTheSnapshotAreTakenWithoutAKick) {
  bring_up(a, 2);
  add_chain(2);
  add_chain(3);  // available, no kick: the snapshot is taken before the device saw them
  const pb::VirtioPciState saved = a.pci.save();
  EXPECT_EQ(saved.queues(0).indexes().last_avail_idx(), 2u);
  b.pci.restore(saved);
  EXPECT_EQ(driver.used_idx(), 4);
  // Their interrupt waits until the machine's interrupt controllers are
  // restored too (the restore of the local APICs would wipe it), then goes
  // out once.
  EXPECT_TRUE(b.sink.sent.empty());
  b.pci.release_interrupts();
  ASSERT_EQ(b.sink.sent.size(), 1u);
  EXPECT_EQ(b.sink.sent[0], (std::pair<uint16_t, uint32_t>{1, 0x41}));
  b.pci.release_interrupts();
  EXPECT_EQ(b.sink.sent.size(), 1u);
}

TEST_F(RngStateTest, RestoredIntxLevelWaitsForTheRelease) {
  // MSI-X off: the device's used buffers assert INTx, which the restore
  // holds back like a message.
  a.place_bar();
  a.negotiate(kFVersion1 | kFRingEventIdx);
  a.setup_queue(0, driver.config(), kMsiNoVector);
  a.driver_ok();
  add_chain(0);
  const pb::VirtioPciState saved = a.pci.save();
  b.pci.restore(saved);
  EXPECT_EQ(driver.used_idx(), 1);
  EXPECT_TRUE(b.intx.empty());
  // Saved while holding: the level is in the state, which restores again.
  const pb::VirtioPciState held = b.pci.save();
  EXPECT_TRUE(held.intx_level());
  VirtioRngDevice device_c{events};
  Function c{device_c, memory};
  EXPECT_NO_THROW(c.pci.restore(held));
  b.pci.release_interrupts();
  EXPECT_EQ(b.intx, std::vector<bool>{true});
}

TEST_F(RngStateTest, FunctionBeingSetUpRoundTrips) {
  // Mid bring-up: features agreed, a queue configured but not enabled, INTx
  // asserted by a configuration change.
  a.place_bar();
  a.negotiate(kFVersion1);
  a.write(cc::kQueueSelect, 2, 0);
  a.write(cc::kQueueSize, 2, 8);
  a.write(cc::kQueueDesc, 8, 0x4000);
  a.pci.config_changed();
  a.set_status(kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk);
  {
    std::lock_guard guard(a.pci.lock());
    a.pci.config_interrupt();
  }
  ASSERT_EQ(a.intx, std::vector<bool>{true});
  const pb::VirtioPciState saved = a.pci.save();
  EXPECT_FALSE(saved.activated());
  EXPECT_TRUE(saved.intx_level());
  EXPECT_FALSE(saved.queues(0).has_indexes());
  b.pci.restore(saved);
  EXPECT_TRUE(b.intx.empty()) << "INTx waits for the interrupt controllers";
  b.pci.release_interrupts();
  EXPECT_EQ(b.intx, std::vector<bool>{true}) << "INTx raised again";
  EXPECT_TRUE(same(b.pci.save(), saved));
  EXPECT_EQ(b.read(cc::kQueueSize, 2), 8u);
  EXPECT_EQ(b.read(cc::kQueueDesc, 8), 0x4000u);
  EXPECT_EQ(b.read(VirtioPciDevice::kIsrOffset, 1), kIsrConfig);
  EXPECT_EQ(b.intx, (std::vector<bool>{true, false})) << "reading the ISR lowers INTx";
  // The driver finishes bring-up on the restored function.
  b.write(cc::kQueueSize, 2, 16);
  b.setup_queue(0, driver.config(), kMsiNoVector);
  b.driver_ok();
  EXPECT_TRUE(b.pci.activated());
}

TEST_F(RngStateTest, RefusesCorruptedStates) {
  bring_up(a, 1);
  const pb::VirtioPciState good = a.pci.save();
  pb::VirtioPciState s;

  s = good;
  s.set_driver_features(good.driver_features() | (uint64_t{1} << 40));
  expect_refused(b, s, "driver_features");
  s = good;
  s.set_driver_features(kFRingEventIdx);
  expect_refused(b, s, "VERSION_1");
  s = good;
  s.set_status(kStatusAcknowledge | kStatusDriver | kStatusDriverOk);
  expect_refused(b, s, "DRIVER_OK without FEATURES_OK");
  s = good;
  s.set_status(good.status() | 0x10);
  expect_refused(b, s, "status");
  s = good;
  s.set_status(0x100);
  expect_refused(b, s, "status");
  s = good;
  s.mutable_queues(0)->set_desc(4 * kMiB - 16);  // the table runs past RAM
  expect_refused(b, s, "queue 0");
  s = good;
  s.mutable_queues(0)->set_driver(uint64_t{1} << 63);
  expect_refused(b, s, "queue 0");
  s = good;
  s.mutable_queues(0)->set_desc(0x1008);  // misaligned
  expect_refused(b, s, "queue 0");
  s = good;
  s.mutable_queues(0)->set_size(128);
  expect_refused(b, s, "queue 0 size");
  s = good;
  s.mutable_queues(0)->set_size(12);  // not a power of two
  expect_refused(b, s, "queue 0");
  s = good;
  s.mutable_queues(0)->mutable_indexes()->set_last_avail_idx(5);  // past the driver's avail idx
  expect_refused(b, s, "queue 0");
  s = good;
  s.mutable_queues(0)->mutable_indexes()->set_next_used_idx(70000);
  expect_refused(b, s, "next_used_idx");
  s = good;
  s.mutable_queues(0)->clear_indexes();
  expect_refused(b, s, "indexes");
  s = good;
  s.mutable_queues(0)->set_msix_vector(2);  // the table has 2 entries
  expect_refused(b, s, "msix_vector");
  s = good;
  s.set_msix_config(7);
  expect_refused(b, s, "msix_config");
  s = good;
  s.add_queues();
  expect_refused(b, s, "queues");
  s = good;
  s.set_device_type(kDeviceTypeBlock);
  expect_refused(b, s, "device_type");
  s = good;
  s.mutable_device()->mutable_net()->set_mac("\x02\x00\x00\x00\x00\x01");
  expect_refused(b, s, "device");
  s = good;
  s.set_activated(false);
  expect_refused(b, s, "activated");
  s = good;
  s.set_status(kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk);
  expect_refused(b, s, "activated");
  s = good;
  s.set_isr(4);
  expect_refused(b, s, "isr");
  s = good;
  s.set_intx_level(true);  // MSI-X is on: INTx cannot be asserted
  expect_refused(b, s, "intx_level");
  s = good;
  s.mutable_msix()->set_enabled(false);
  expect_refused(b, s, "msix");
  s = good;
  {
    std::string bytes = s.config().bytes();
    bytes[0x02] ^= 1;  // device ID
    s.mutable_config()->set_bytes(bytes);
  }
  expect_refused(b, s, "PCI configuration");
  s = good;
  s.set_config_generation(256);
  expect_refused(b, s, "config_generation");

  // And the good one still works after all that.
  b.pci.restore(good);
  EXPECT_TRUE(same(b.pci.save(), good));
}

TEST_F(RngStateTest, DeviceThatAskedForAResetIsSavedStopped) {
  bring_up(a, 1);
  // A chain with a device-readable buffer: the rng device gives up the queue.
  driver.make_available(driver.write_chain(1, {{0x100000, 32, false}}));
  a.pci.notify(0);
  ASSERT_TRUE(a.pci.status() & kStatusDeviceNeedsReset);
  const pb::VirtioPciState saved = a.pci.save();
  EXPECT_FALSE(saved.activated());
  EXPECT_FALSE(saved.queues(0).has_indexes());
  b.pci.restore(saved);
  EXPECT_FALSE(b.pci.activated());
  EXPECT_TRUE(same(b.pci.save(), saved));
  b.set_status(0);  // the driver resets, as it would have on the original
  EXPECT_EQ(b.pci.status(), 0);
}

// --- virtio-blk -------------------------------------------------------------

struct BlkStateTest : ::testing::Test {
  static constexpr uint16_t kSize = 64;
  GuestMemory memory{{{0, 8 * kMiB, 0}}};
  TempImage image{"/var/tmp", 4 * kMiB};
  boost::asio::io_context events;
  VirtqueueDriver driver{memory, kSize};
  uint64_t next_gpa = 0x100000;
  uint16_t next_desc = 0;

  struct Request {
    uint16_t head;
    uint64_t data;
    uint64_t status;
  };
  Request add(uint32_t type, uint64_t sector, uint32_t len, bool device_writes) {
    const uint64_t header = next_gpa;
    const uint64_t data = header + 0x1000;
    const uint64_t status = data + len;
    next_gpa = (status + 0x1000) & ~uint64_t{0xfff};
    memory.write_obj(header, BlkReqHeader{type, 0, sector});
    memory.write_obj<uint8_t>(status, 0xee);
    const uint16_t head = next_desc;
    driver.write_chain(head, {{header, 16}, {data, len, device_writes}, {status, 1, true}});
    next_desc = static_cast<uint16_t>((next_desc + 3) % kSize);
    driver.make_available(head);
    return {head, data, status};
  }
  void run_until_used(uint16_t used) {
    while (driver.used_idx() != used) {
      ASSERT_GT(events.run_one_for(std::chrono::seconds(10)), 0u) << "used " << driver.used_idx();
    }
  }
};

TEST_F(BlkStateTest, SaveDrainsRequestsAndTheRestoredDiskCarriesOn) {
  VirtioBlkDevice disk_a(events, disk_config(image.path()));
  Function a(disk_a, memory);
  a.place_bar();
  a.negotiate(disk_a.device_features() | kFVersion1);
  a.setup_queue(0, driver.config(), kMsiNoVector);
  a.driver_ok();
  ASSERT_TRUE(a.pci.activated());

  const auto data = pattern(8 * 512, 3);
  std::vector<Request> writes;
  for (uint64_t i = 0; i < 4; ++i) {
    writes.push_back(add(kBlkTOut, 8 * i, 8 * 512, false));
    memory.write(writes.back().data, data);
  }
  a.write(VirtioPciDevice::kNotifyOffset, 2, 0);
  EXPECT_EQ(disk_a.requests_in_flight(), 4u) << "submitted, the event loop has not run";

  // save() drains: every request completes and is returned before the state
  // is taken, without the event loop.
  const pb::VirtioPciState saved = a.pci.save();
  EXPECT_EQ(disk_a.requests_in_flight(), 0u);
  EXPECT_EQ(driver.used_idx(), 4);
  for (const Request& w : writes) EXPECT_EQ(memory.read_obj<uint8_t>(w.status), kBlkSOk);
  EXPECT_EQ(saved.queues(0).indexes().last_avail_idx(), 4u);
  EXPECT_EQ(saved.queues(0).indexes().next_used_idx(), 4u);
  EXPECT_EQ(saved.device().blk().capacity_sectors(), 4 * kMiB / 512);
  EXPECT_EQ(saved.isr(), kIsrQueue) << "the completions interrupted (INTx)";

  // A new process: the same image opened again (the old one's lock let
  // go, as at its end), the state restored.
  disk_a.release_storage();
  VirtioBlkDevice disk_b(events, disk_config(image.path()));
  Function b(disk_b, memory);
  b.pci.restore(saved);
  b.pci.release_interrupts();
  EXPECT_TRUE(same(b.pci.save(), saved));
  b.resume();
  EXPECT_EQ(b.intx, std::vector<bool>{true});

  const Request r = add(kBlkTIn, 16, 8 * 512, true);
  b.pci.notify(0);
  run_until_used(5);
  EXPECT_EQ(driver.used_elem(4).id, r.head);
  EXPECT_EQ(driver.used_elem(4).len, 8 * 512 + 1u);
  EXPECT_EQ(memory.read_obj<uint8_t>(r.status), kBlkSOk);
  std::vector<uint8_t> back(8 * 512);
  memory.read(r.data, back);
  EXPECT_EQ(back, data);
}

// A doorbell the event loop reads after a save (the guest rang it before
// it was paused) must not start a request under the saved state: the kick
// waits until the function resumes.
TEST_F(BlkStateTest, AKickAfterTheSaveWaitsForTheResume) {
  VirtioBlkDevice disk(events, disk_config(image.path()));
  Function f(disk, memory);
  f.negotiate(disk.device_features() | kFVersion1);
  f.setup_queue(0, driver.config(), kMsiNoVector);
  f.driver_ok();
  const pb::VirtioPciState saved = f.pci.save();
  const Request r = add(kBlkTIn, 0, 512, true);
  f.pci.notify(0);
  events.poll();
  EXPECT_EQ(disk.requests_in_flight(), 0u);
  EXPECT_EQ(driver.used_idx(), 0);
  EXPECT_EQ(memory.read_obj<uint8_t>(r.status), 0xee) << "guest memory changed under the state";
  EXPECT_TRUE(same(f.pci.save(), saved));
  f.resume();
  run_until_used(1);
  EXPECT_EQ(memory.read_obj<uint8_t>(r.status), kBlkSOk);
}

TEST_F(BlkStateTest, RefusesAnotherDiskSizeOrFlavour) {
  VirtioBlkDevice disk_a(events, disk_config(image.path()));
  Function a(disk_a, memory);
  const pb::VirtioPciState saved = a.pci.save();

  TempImage other("/var/tmp", 8 * kMiB);
  VirtioBlkDevice disk_b(events, disk_config(other.path()));
  Function b(disk_b, memory);
  try {
    b.pci.restore(saved);
    ADD_FAILURE() << "a disk of another size was accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("capacity_sectors"), std::string::npos) << e.what();
  }
  pb::VirtioPciState s = saved;
  s.mutable_device()->mutable_rng();
  disk_a.release_storage();
  VirtioBlkDevice disk_c(events, disk_config(image.path()));
  Function c(disk_c, memory);
  EXPECT_THROW(c.pci.restore(s), InputError);
  s = saved;
  s.mutable_device()->mutable_blk()->set_read_only(true);
  EXPECT_THROW(c.pci.restore(s), InputError);
  c.pci.restore(saved);
}

}  // namespace
}  // namespace keel::virtio
