#include "vmm/boot/page_tables.h"

namespace keel {

namespace {
constexpr uint64_t kPresent = 1ull << 0;
constexpr uint64_t kWritable = 1ull << 1;
constexpr uint64_t kLargePage = 1ull << 7;
}  // namespace

uint64_t write_identity_page_tables(GuestMemory& memory, uint64_t base) {
  const uint64_t pml4 = base;
  const uint64_t pdpt = base + 0x1000;
  const uint64_t pd = base + 0x2000;
  // Clear everything first: stale bytes would be live mappings.
  for (uint64_t page = 0; page < kIdentityPageTablesSize; page += 8) {
    memory.write_obj<uint64_t>(base + page, 0);
  }
  memory.write_obj<uint64_t>(pml4, pdpt | kPresent | kWritable);
  for (uint64_t gib = 0; gib < 4; ++gib) {
    uint64_t dir = pd + gib * 0x1000;
    memory.write_obj<uint64_t>(pdpt + gib * 8, dir | kPresent | kWritable);
    for (uint64_t i = 0; i < 512; ++i) {
      uint64_t phys = (gib << 30) | (i << 21);
      memory.write_obj<uint64_t>(dir + i * 8, phys | kPresent | kWritable | kLargePage);
    }
  }
  return pml4;
}

}  // namespace keel
