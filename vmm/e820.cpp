#include "vmm/e820.h"

#include "vmm/memory_layout.h"

namespace keel {

std::vector<E820Entry> build_e820(const std::vector<GuestRegion>& ram) {
  std::vector<E820Entry> map;
  map.push_back({0, layout::kEbdaStart, kE820Ram});
  map.push_back({layout::kEbdaStart, 0xa0000 - layout::kEbdaStart, kE820Reserved});
  map.push_back({layout::kAcpiTables, layout::kKernelLoad - layout::kAcpiTables, kE820Reserved});
  for (const auto& region : ram) {
    uint64_t start = region.guest_phys < layout::kKernelLoad ? layout::kKernelLoad : region.guest_phys;
    uint64_t end = region.guest_phys + region.size;
    if (end > start) map.push_back({start, end - start, kE820Ram});
  }
  return map;
}

}  // namespace keel
