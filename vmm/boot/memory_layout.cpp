#include "vmm/boot/memory_layout.h"

namespace keel::layout {

std::vector<GuestRegion> guest_ram_regions(uint64_t size) {
  std::vector<GuestRegion> regions;
  uint64_t low = size < kPciHoleStart ? size : kPciHoleStart;
  regions.push_back({0, low, 0});
  if (size > low) regions.push_back({kHighMemStart, size - low, low});
  return regions;
}

}  // namespace keel::layout
