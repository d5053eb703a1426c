// Guest RAM: one memfd, mapped shared, split around the 32-bit PCI hole.
// Every access from the VMM is bounds-checked against the RAM regions.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <type_traits>
#include <vector>

#include "common/memory_mapping.h"
#include "common/unique_fd.h"

namespace keel {

struct GuestRegion {
  uint64_t guest_phys;
  uint64_t size;
  uint64_t file_offset;  // offset in the memfd and in the host mapping
};

// RAM regions for `size` bytes of guest memory (below the PCI hole first).
std::vector<GuestRegion> guest_ram_regions(uint64_t size);

class GuestMemory {
 public:
  explicit GuestMemory(uint64_t size);

  uint64_t size() const { return size_; }
  int fd() const { return fd_.get(); }
  const std::vector<GuestRegion>& regions() const { return regions_; }
  uint8_t* host_base() const { return mapping_.data(); }

  // Host pointer for [gpa, gpa+length); throws std::out_of_range unless the
  // whole range is RAM inside one region.
  uint8_t* host_range(uint64_t gpa, uint64_t length) const;
  bool contains(uint64_t gpa, uint64_t length) const;

  void write(uint64_t gpa, std::span<const uint8_t> bytes) {
    std::memcpy(host_range(gpa, bytes.size()), bytes.data(), bytes.size());
  }
  void read(uint64_t gpa, std::span<uint8_t> bytes) const {
    std::memcpy(bytes.data(), host_range(gpa, bytes.size()), bytes.size());
  }
  template <typename T>
  void write_obj(uint64_t gpa, const T& value) {
    static_assert(std::is_trivially_copyable_v<T>);
    std::memcpy(host_range(gpa, sizeof(T)), &value, sizeof(T));
  }
  template <typename T>
  T read_obj(uint64_t gpa) const {
    static_assert(std::is_trivially_copyable_v<T>);
    T value;
    std::memcpy(&value, host_range(gpa, sizeof(T)), sizeof(T));
    return value;
  }

 private:
  uint8_t* find(uint64_t gpa, uint64_t length) const;
  uint64_t size_;
  std::vector<GuestRegion> regions_;
  UniqueFd fd_;
  MemoryMapping mapping_;
};

}  // namespace keel
