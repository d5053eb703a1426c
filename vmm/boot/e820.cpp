#include "vmm/boot/e820.h"

#include "vmm/boot/memory_layout.h"

namespace keel {

std::vector<E820Entry> build_e820(const std::vector<GuestRegion>& ram) {
  std::vector<E820Entry> map;
  map.push_back({0, layout::kEbdaStart, kE820Ram});
  map.push_back({layout::kEbdaStart, 0xa0000 - layout::kEbdaStart, kE820Reserved});
  map.push_back({layout::kAcpiTables, layout::kKernelLoad - layout::kAcpiTables, kE820Reserved});
  for (const auto& region : ram) {
    uint64_t start =
        region.guest_phys < layout::kKernelLoad ? layout::kKernelLoad : region.guest_phys;
    uint64_t end = region.guest_phys + region.size;
    if (end > start) map.push_back({start, end - start, kE820Ram});
    // KVM's identity-map and TSS pages sit in the PCI hole: keep the guest
    // from placing anything there.
    if (region.guest_phys == 0) {
      map.push_back({layout::kKvmIdentityMap, layout::kKvmReservedEnd - layout::kKvmIdentityMap,
                     kE820Reserved});
    }
  }
  return map;
}

}  // namespace keel
