// libFuzzer target: KVM's coalesced I/O ring page as the VMM reads it
// (vmm/kvm/coalesced_io.h). KVM writes the ring, but its indexes and
// entries come from what the guest did, and a VMM must not trust a shared
// page: any first/last index and any entry (port, length, kind, data) must
// be applied or skipped without reading or writing outside the page, and
// the ring must end up consumed.
//
// Input: the ring page (first, last, then 24-byte entries), padded with zeros.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "devices/pc/io_bus.h"
#include "devices/pci/pci_bus.h"
#include "devices/pci/pci_host_bridge.h"
#include "tests/fuzz/fuzz_memory.h"
#include "vmm/kvm/coalesced_io.h"

using namespace keel;

namespace {

struct Sink : PioDevice {
  uint64_t writes = 0;
  void pio_read(uint16_t, std::span<uint8_t>) override {}
  void pio_write(uint16_t, std::span<const uint8_t> data) override {
    FUZZ_CHECK(data.size() >= 1 && data.size() <= 8);
    ++writes;
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  // The page alone in its allocation: ASan sees any access past it.
  std::vector<uint8_t> ring(page);
  std::memcpy(ring.data(), data, std::min(size, page));
  PciHostBridge bridge;
  PciBus pci;
  pci.add(0, bridge);
  Sink sink;
  IoBus bus;
  bus.add(PciBus::kConfigPort, PciBus::kConfigPortCount, pci);
  bus.add(0x10, 0x10, sink);
  uint32_t first, last;
  std::memcpy(&first, ring.data(), 4);
  std::memcpy(&last, ring.data() + 4, 4);
  const uint32_t capacity = static_cast<uint32_t>((page - 8) / 24);  // header, then entries
  kvm::CoalescedIo io(ring.data(), 0);
  io.drain(bus);
  uint32_t after;
  std::memcpy(&after, ring.data(), 4);
  // Indexes inside the ring: all of it consumed. Outside: left alone.
  FUZZ_CHECK(first < capacity && last < capacity ? after == last : after == first);
  io.drain(bus);  // a second drain of the same page is harmless
  return 0;
}
