// libFuzzer target: a guest driving a virtio-pci function through its
// configuration space and BAR0 (common config, ISR, device config, notify,
// MSI-X table and PBA) with any widths, offsets and values, while the device
// raises interrupts and reports broken queues. Guest memory holds whatever
// the rings point at. Nothing may crash; checks: status and features stay
// consistent, and an activated device was given only queues the driver set up.
//
// Input: guest memory bytes (first 4 KiB of the fuzz memory), then
// operations of 12 bytes: u8 op | u8 width | u16 offset | u64 value.
//   op % 8: 0 config read, 1 config write, 2 BAR read, 3 BAR write,
//           4 queue interrupt, 5 config change, 6 needs reset, 7 BAR write
//           into the common config (offset % 0x40), which drives bring-up.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "devices/virtio/pci/virtio_pci_device.h"
#include "tests/fuzz/fuzz_memory.h"

using namespace keel;
using namespace keel::virtio;

namespace {

class FakeDevice : public VirtioDevice {
 public:
  uint16_t device_type() const override { return kDeviceTypeBlock; }
  uint64_t device_features() const override { return 0x0000'0000'0000'0246; }
  uint16_t num_queues() const override { return 2; }
  uint16_t max_queue_size() const override { return 256; }
  uint32_t config_size() const override { return sizeof config_; }
  void config_read(uint32_t offset, std::span<uint8_t> data) override {
    FUZZ_CHECK(offset + data.size() <= sizeof config_);
    for (size_t i = 0; i < data.size(); ++i) data[i] = config_[offset + i];
  }
  void config_write(uint32_t offset, std::span<const uint8_t> data) override {
    FUZZ_CHECK(offset + data.size() <= sizeof config_);
    for (size_t i = 0; i < data.size(); ++i) config_[offset + i] = data[i];
  }
  void activate(GuestMemory&, std::vector<std::optional<SplitQueue>> queues,
                uint64_t features) override {
    FUZZ_CHECK(queues.size() == 2);
    FUZZ_CHECK(features & kFVersion1);
    queues_ = std::move(queues);
  }
  void reset() override { queues_.clear(); }
  void queue_notify(uint16_t queue) override {
    FUZZ_CHECK(queue < 2);
    ++notifies;
  }
  uint64_t notifies = 0;

 private:
  uint8_t config_[24] = {};
  std::vector<std::optional<SplitQueue>> queues_;
};

class CountingSink : public MsiSink {
 public:
  void send(uint16_t, uint64_t, uint32_t) override { ++sent; }
  uint64_t sent = 0;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const size_t memory_bytes = std::min<size_t>(size, 4096);
  GuestMemory& memory = fuzz::fill_memory(data, memory_bytes);
  data += memory_bytes;
  size -= memory_bytes;

  FakeDevice device;
  CountingSink sink;
  VirtioPciDevice pci(device, memory, sink, {[](bool) {}});
  uint8_t buffer[8];
  while (size >= 12) {
    const auto op = fuzz::take<uint8_t>(data, size);
    const auto width = static_cast<size_t>(fuzz::take<uint8_t>(data, size) % 9);
    const auto offset = fuzz::take<uint16_t>(data, size);
    const auto value = fuzz::take<uint64_t>(data, size);
    std::memcpy(buffer, &value, sizeof buffer);
    switch (op % 8) {
      case 0:
        (void)pci.config_read(offset);
        break;
      case 1:
        pci.config_write(offset, static_cast<uint32_t>(value), static_cast<uint8_t>(op >> 4));
        break;
      case 2:
        pci.bar_read(offset, std::span<uint8_t>(buffer, width));
        break;
      case 3:
        pci.bar_write(offset, std::span<const uint8_t>(buffer, width));
        break;
      case 4:
        pci.queue_interrupt(static_cast<uint16_t>(value));
        break;
      case 5:
        pci.config_changed();
        break;
      case 6:
        pci.needs_reset("the fuzzer asks");
        break;
      case 7:
        pci.bar_write(VirtioPciDevice::kCommonOffset + offset % 0x40,
                      std::span<const uint8_t>(buffer, width));
        break;
    }
    // DRIVER_OK sticks only on top of FEATURES_OK, and negotiated features
    // are a subset of the offered ones once FEATURES_OK stuck.
    if (pci.status() & kStatusDriverOk) FUZZ_CHECK(pci.status() & kStatusFeaturesOk);
    if (pci.status() & kStatusFeaturesOk) {
      FUZZ_CHECK((pci.driver_features() & ~pci.offered_features()) == 0);
    }
  }
  return 0;
}
