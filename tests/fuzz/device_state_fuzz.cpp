// libFuzzer target: a snapshot's virtio-pci state (proto/device_state.proto,
// VirtioPciState) is untrusted input. Parsed, then restored into a virtio-rng
// function over guest memory that holds whatever the rings point at. Nothing
// may crash; refusals (InputError) are fine. Checks: a restored function's
// status and features are consistent, and whatever restore accepted saves
// into a state that a fresh function accepts again.
//
// Input: u16 N (little-endian, at most 4096), N bytes of guest memory (from
// the first byte of RAM), then the serialized VirtioPciState.
//
// Seeds: states of a real function (fresh, running with MSI-X and EVENT_IDX
// and chains in its queue, mid bring-up with INTx asserted) are written by
// the target itself: KEEL_WRITE_SEEDS=DIR device_state_fuzz writes them
// into DIR and exits (tests/fuzz/corpus/device_state_fuzz holds them).
#include <boost/asio/io_context.hpp>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

#include "common/error.h"
#include "devices/virtio/pci/virtio_pci_device.h"
#include "devices/virtio/rng/virtio_rng_device.h"
#include "proto/device_state.pb.h"
#include "tests/fuzz/fuzz_memory.h"

using namespace keel;
using namespace keel::virtio;

namespace {

constexpr size_t kMaxMemoryBytes = 4096;

class CountingSink : public MsiSink {
 public:
  void send(uint16_t vector, uint64_t, uint32_t) override {
    FUZZ_CHECK(vector < 2);
    ++sent;
  }
  uint64_t sent = 0;
};

void check_consistent(const VirtioPciDevice& pci) {
  if (pci.status() & kStatusDriverOk) FUZZ_CHECK(pci.status() & kStatusFeaturesOk);
  if (pci.status() & kStatusFeaturesOk) {
    FUZZ_CHECK((pci.driver_features() & ~pci.offered_features()) == 0);
  }
  if (pci.activated()) FUZZ_CHECK(pci.status() & kStatusDriverOk);
}

// --- seeds -----------------------------------------------------------------

struct Driver {
  VirtioPciDevice& pci;
  void write(uint64_t offset, size_t size, uint64_t value) {
    uint8_t bytes[8];
    std::memcpy(bytes, &value, 8);
    pci.bar_write(offset, {bytes, size});
  }
};

// Rings of a size-8 queue in the first 4 KiB: descriptors at 0x100, driver
// area at 0x200, device area at 0x300; buffers at 0x1000 and up.
void make_available(GuestMemory& memory, uint16_t n) {
  memory.write_obj(0x100 + 16ull * n, VirtqDesc{0x1000 + 0x100ull * n, 64, kDescFWrite, 0});
  memory.write_obj<uint16_t>(0x200 + kAvailRingOffset + 2ull * (n % 8), n);
  memory.write_obj<uint16_t>(0x200 + kAvailIdxOffset, static_cast<uint16_t>(n + 1));
}

void write_seed(const std::string& dir, const std::string& name, const GuestMemory& memory,
                const state::v1::VirtioPciState& state) {
  std::string out(2 + kMaxMemoryBytes, '\0');
  out[0] = static_cast<char>(kMaxMemoryBytes & 0xff);
  out[1] = static_cast<char>(kMaxMemoryBytes >> 8);
  std::memcpy(out.data() + 2, memory.host_base(), kMaxMemoryBytes);
  out += state.SerializeAsString();
  std::ofstream(dir + "/" + name, std::ios::binary) << out;
}

void write_seeds(const std::string& dir) {
  boost::asio::io_context events;
  const uint8_t nothing = 0;
  GuestMemory& memory = fuzz::fill_memory(&nothing, 0);
  CountingSink sink;
  {
    VirtioRngDevice rng(events);
    VirtioPciDevice pci(rng, memory, sink, {});
    write_seed(dir, "fresh", memory, pci.save());
    Driver d{pci};
    pci.config_write(0x04, 0x0006, 0x3);
    d.write(common_cfg::kDeviceStatus, 1, kStatusAcknowledge | kStatusDriver);
    d.write(common_cfg::kDriverFeature, 4, 0);
    d.write(common_cfg::kDriverFeatureSelect, 4, 1);
    d.write(common_cfg::kDriverFeature, 4, 1);  // VERSION_1
    d.write(common_cfg::kDeviceStatus, 1, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk);
    d.write(common_cfg::kQueueSize, 2, 8);
    d.write(common_cfg::kQueueDesc, 8, 0x100);
    {
      std::lock_guard guard(pci.lock());
      pci.config_interrupt();  // INTx asserted
    }
    write_seed(dir, "bring_up_intx", memory, pci.save());
  }
  {
    VirtioRngDevice rng(events);
    VirtioPciDevice pci(rng, memory, sink, {});
    Driver d{pci};
    uint8_t cap = static_cast<uint8_t>(pci.config_read(0x34));
    while (cap != 0 && static_cast<uint8_t>(pci.config_read(cap)) != 0x11) {
      cap = static_cast<uint8_t>(pci.config_read(cap) >> 8);
    }
    pci.config_write(cap, 0x8000u << 16, 0b1100);  // MSI-X enable
    for (uint16_t v = 0; v < 2; ++v) {
      d.write(VirtioPciDevice::kMsixTableOffset + 16ull * v, 8, 0xfee00000);
      d.write(VirtioPciDevice::kMsixTableOffset + 16ull * v + 12, 4, v);  // vector 1 masked
    }
    d.write(common_cfg::kDeviceStatus, 1, kStatusAcknowledge | kStatusDriver);
    d.write(common_cfg::kDriverFeature, 4,
            static_cast<uint32_t>(kFRingEventIdx | kFRingIndirectDesc));
    d.write(common_cfg::kDriverFeatureSelect, 4, 1);
    d.write(common_cfg::kDriverFeature, 4, 1);
    d.write(common_cfg::kDeviceStatus, 1, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk);
    d.write(common_cfg::kQueueSize, 2, 8);
    d.write(common_cfg::kQueueDesc, 8, 0x100);
    d.write(common_cfg::kQueueDriver, 8, 0x200);
    d.write(common_cfg::kQueueDevice, 8, 0x300);
    d.write(common_cfg::kQueueMsixVector, 2, 1);
    d.write(common_cfg::kQueueEnable, 2, 1);
    d.write(common_cfg::kDeviceStatus, 1,
            kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk);
    make_available(memory, 0);
    make_available(memory, 1);
    pci.notify(0);  // served; vector 1 masked: pending
    make_available(memory, 2);
    write_seed(dir, "running", memory, pci.save());
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (const char* dir = std::getenv("KEEL_WRITE_SEEDS")) {
    write_seeds(dir);
    std::exit(0);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const size_t memory_bytes = std::min<size_t>(fuzz::take<uint16_t>(data, size), kMaxMemoryBytes);
  const size_t n = std::min(memory_bytes, size);
  GuestMemory& memory = fuzz::fill_memory(data, n);
  data += n;
  size -= n;

  state::v1::VirtioPciState state;
  if (!state.ParseFromArray(data, static_cast<int>(size))) return 0;

  boost::asio::io_context events;
  CountingSink sink;
  VirtioRngDevice rng(events);
  VirtioPciDevice pci(rng, memory, sink, {[](bool) {}});
  try {
    pci.restore(state);
  } catch (const InputError&) {
    check_consistent(pci);
    return 0;
  }
  check_consistent(pci);
  // What was accepted saves into a state a fresh function takes again.
  const state::v1::VirtioPciState again = pci.save();
  VirtioRngDevice rng2(events);
  VirtioPciDevice pci2(rng2, memory, sink, {[](bool) {}});
  try {
    pci2.restore(again);
  } catch (const InputError& e) {
    __builtin_printf("a saved state was refused: %s\n", e.what());
    __builtin_trap();
  }
  check_consistent(pci2);
  return 0;
}
