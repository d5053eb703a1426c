#include "common/guest_memory.h"

#include <sys/mman.h>
#include <unistd.h>

#include <stdexcept>
#include <string>
#include <utility>

#include "common/error.h"
#include "common/hex.h"

namespace keel {

namespace {

uint64_t packed_size(const std::vector<GuestRegion>& regions) {
  uint64_t size = 0;
  for (const auto& r : regions) {
    if (r.file_offset != size || r.size == 0) {
      throw std::invalid_argument("guest memory regions must be packed and non-empty");
    }
    size += r.size;
  }
  return size;
}

}  // namespace

GuestMemory::GuestMemory(std::vector<GuestRegion> regions)
    : size_(packed_size(regions)), regions_(std::move(regions)), dirty_(size_) {
  int fd = ::memfd_create("keel-guest-ram", MFD_CLOEXEC);
  if (fd < 0) throw_errno("memfd_create for guest memory");
  fd_.reset(fd);
  if (::ftruncate(fd, static_cast<off_t>(size_)) < 0) throw_errno("ftruncate guest memory");
  mapping_ = MemoryMapping::map(size_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0,
                                "guest memory");
  // Guest memory is not worth a core dump and must not be merged or forked.
  ::madvise(mapping_.data(), size_, MADV_DONTDUMP);
  ::madvise(mapping_.data(), size_, MADV_DONTFORK);
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

uint8_t* GuestMemory::checked(uint64_t gpa, uint64_t length) const {
  if (uint8_t* p = find(gpa, length)) return p;
  throw std::out_of_range("guest range " + hex(gpa) + "+" + hex(length) + " is not RAM");
}

const uint8_t* GuestMemory::host_range(uint64_t gpa, uint64_t length) const {
  return checked(gpa, length);
}

uint8_t* GuestMemory::host_range_for_write(uint64_t gpa, uint64_t length) {
  uint8_t* p = checked(gpa, length);
  dirty_.mark(offset_of(p), length);
  return p;
}

uint8_t* GuestMemory::host_range_for_io(uint64_t gpa, uint64_t length) {
  return checked(gpa, length);
}

void GuestMemory::mark_dirty(uint64_t gpa, uint64_t length) {
  dirty_.mark(offset_of(checked(gpa, length)), length);
}

std::span<uint8_t> GuestMemory::host_all_for_write() {
  dirty_.mark(0, size_);
  return {mapping_.data(), size_};
}

}  // namespace keel
