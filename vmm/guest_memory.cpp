#include "vmm/guest_memory.h"

#include <sys/mman.h>
#include <unistd.h>

#include <stdexcept>
#include <string>

#include "common/error.h"
#include "common/hex.h"
#include "vmm/memory_layout.h"

namespace keel {

std::vector<GuestRegion> guest_ram_regions(uint64_t size) {
  std::vector<GuestRegion> regions;
  uint64_t low = size < layout::kPciHoleStart ? size : layout::kPciHoleStart;
  regions.push_back({0, low, 0});
  if (size > low) regions.push_back({layout::kHighMemStart, size - low, low});
  return regions;
}

GuestMemory::GuestMemory(uint64_t size) : size_(size), regions_(guest_ram_regions(size)) {
  int fd = ::memfd_create("keel-guest-ram", MFD_CLOEXEC);
  if (fd < 0) throw_errno("memfd_create for guest memory");
  fd_.reset(fd);
  if (::ftruncate(fd, static_cast<off_t>(size)) < 0) throw_errno("ftruncate guest memory");
  mapping_ = MemoryMapping::map(size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0,
                                "guest memory");
  // Guest memory is not worth a core dump and must not be merged or forked.
  ::madvise(mapping_.data(), size, MADV_DONTDUMP);
  ::madvise(mapping_.data(), size, MADV_DONTFORK);
}

uint8_t* GuestMemory::find(uint64_t gpa, uint64_t length) const {
  for (const auto& r : regions_) {
    // Written so that no sum can overflow: gpa and length are guest-chosen.
    if (gpa >= r.guest_phys && gpa - r.guest_phys <= r.size &&
        length <= r.size - (gpa - r.guest_phys)) {
      return mapping_.data() + r.file_offset + (gpa - r.guest_phys);
    }
  }
  return nullptr;
}

bool GuestMemory::contains(uint64_t gpa, uint64_t length) const {
  return find(gpa, length) != nullptr;
}

uint8_t* GuestMemory::host_range(uint64_t gpa, uint64_t length) const {
  if (uint8_t* p = find(gpa, length)) return p;
  throw std::out_of_range("guest range " + hex(gpa) + "+" + hex(length) + " is not RAM");
}

}  // namespace keel
