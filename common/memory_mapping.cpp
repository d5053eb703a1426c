#include "common/memory_mapping.h"

#include <sys/mman.h>

#include <string>

#include "common/error.h"

namespace keel {

MemoryMapping MemoryMapping::map(size_t length, int prot, int flags, int fd, off_t offset,
                                 const char* what) {
  void* addr = ::mmap(nullptr, length, prot, flags, fd, offset);
  if (addr == MAP_FAILED) throw_errno(std::string("mmap ") + what);
  return MemoryMapping(addr, length);
}

MemoryMapping& MemoryMapping::operator=(MemoryMapping&& other) noexcept {
  if (this != &other) {
    unmap();
    addr_ = std::exchange(other.addr_, nullptr);
    length_ = std::exchange(other.length_, 0);
  }
  return *this;
}

MemoryMapping::~MemoryMapping() {
  unmap();
}

void MemoryMapping::unmap() {
  if (addr_ != nullptr) ::munmap(addr_, length_);
  addr_ = nullptr;
  length_ = 0;
}

}  // namespace keel
