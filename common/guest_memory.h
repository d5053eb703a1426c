// Guest RAM: one memfd, mapped shared, placed in the guest-physical address
// space as one or more regions (the machine decides where). Every access from
// the VMM and its devices is bounds-checked against those regions: guest
// addresses are hostile input.
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

class GuestMemory {
 public:
  // Regions in ascending guest-physical order, their file offsets packed
  // from 0; the memfd is as large as their sum.
  explicit GuestMemory(std::vector<GuestRegion> regions);

  uint64_t size() const { return size_; }
  int fd() const { return fd_.get(); }
  const std::vector<GuestRegion>& regions() const { return regions_; }
  uint8_t* host_base() const { return mapping_.data(); }

  // Host pointer for reading [gpa, gpa+length); throws std::out_of_range
  // unless the whole range is RAM inside one region.
  const uint8_t* host_range(uint64_t gpa, uint64_t length) const;
  // The same for writing. Every write the VMM or a device makes into guest
  // memory goes through here (or write/write_obj, which use it): this is the
  // one place where live migration will mark those pages dirty, since KVM's
  // dirty log sees only the guest's own writes.
  uint8_t* host_range_for_write(uint64_t gpa, uint64_t length);
  bool contains(uint64_t gpa, uint64_t length) const;

  void write(uint64_t gpa, std::span<const uint8_t> bytes) {
    std::memcpy(host_range_for_write(gpa, bytes.size()), bytes.data(), bytes.size());
  }
  void read(uint64_t gpa, std::span<uint8_t> bytes) const {
    std::memcpy(bytes.data(), host_range(gpa, bytes.size()), bytes.size());
  }
  template <typename T>
  void write_obj(uint64_t gpa, const T& value) {
    static_assert(std::is_trivially_copyable_v<T>);
    std::memcpy(host_range_for_write(gpa, sizeof(T)), &value, sizeof(T));
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
