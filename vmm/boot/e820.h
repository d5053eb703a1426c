// The guest's physical memory map as the firmware would report it (E820).
#pragma once

#include <cstdint>
#include <vector>

#include "common/guest_memory.h"

namespace keel {

inline constexpr uint32_t kE820Ram = 1;
inline constexpr uint32_t kE820Reserved = 2;

struct E820Entry {
  uint64_t address;
  uint64_t size;
  uint32_t type;
};

// RAM below the EBDA, the EBDA and BIOS area (where the ACPI tables are)
// reserved, RAM from 1 MiB to the PCI hole, KVM's pages in the hole
// reserved, and RAM above 4 GiB. Sorted by address.
std::vector<E820Entry> build_e820(const std::vector<GuestRegion>& ram);

}  // namespace keel
