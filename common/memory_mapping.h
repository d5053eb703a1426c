// Owns one mmap()ed range.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <utility>

namespace keel {

class MemoryMapping {
 public:
  MemoryMapping() = default;
  // Maps `length` bytes of `fd` at `offset` (fd -1: anonymous). Throws on failure.
  static MemoryMapping map(size_t length, int prot, int flags, int fd, off_t offset,
                           const char* what);
  MemoryMapping(MemoryMapping&& other) noexcept
      : addr_(std::exchange(other.addr_, nullptr)), length_(std::exchange(other.length_, 0)) {}
  MemoryMapping& operator=(MemoryMapping&& other) noexcept;
  MemoryMapping(const MemoryMapping&) = delete;
  MemoryMapping& operator=(const MemoryMapping&) = delete;
  ~MemoryMapping();

  uint8_t* data() const { return static_cast<uint8_t*>(addr_); }
  size_t size() const { return length_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(addr_);
  }

 private:
  MemoryMapping(void* addr, size_t length) : addr_(addr), length_(length) {}
  void unmap();
  void* addr_ = nullptr;
  size_t length_ = 0;
};

}  // namespace keel
