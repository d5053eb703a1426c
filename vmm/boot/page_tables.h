// Boot page tables: the identity map that the 64-bit Linux entry expects.
#pragma once

#include <cstdint>

#include "common/guest_memory.h"

namespace keel {

// Identity-maps the first 4 GiB with 2 MiB pages: PML4 at `base`, one PDPT,
// four page directories (six pages). Returns the CR3 value.
uint64_t write_identity_page_tables(GuestMemory& memory, uint64_t base);

inline constexpr uint64_t kIdentityPageTablesSize = 6 * 4096;

}  // namespace keel
