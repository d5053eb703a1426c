// Guest RAM: one memfd, mapped shared, placed in the guest-physical address
// space as one or more regions (the machine decides where). Every access from
// the VMM and its devices is bounds-checked against those regions: guest
// addresses are hostile input. Every write the VMM makes is marked in a dirty
// bitmap indexed by memfd page (KVM's dirty log sees only the guest's own
// writes; missing the VMM's corrupts a migrated guest silently).
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <type_traits>
#include <vector>

#include "common/dirty_bitmap.h"
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
  // The mapping's start, for reading (and for handing to KVM, which tracks
  // the guest's writes itself). Writers use the calls below.
  const uint8_t* host_base() const { return mapping_.data(); }

  // Host pointer for reading [gpa, gpa+length); throws std::out_of_range
  // unless the whole range is RAM inside one region.
  const uint8_t* host_range(uint64_t gpa, uint64_t length) const;
  // The same for writing at once: marks the range dirty now, so the write
  // must follow straight away, in this thread, under whatever lock the
  // writer holds (a harvest never falls between: it runs on the event loop
  // or with the devices quiesced).
  uint8_t* host_range_for_write(uint64_t gpa, uint64_t length);
  // The same for data that lands later (an io_uring read, a tap read): not
  // marked; the writer calls mark_dirty once the data is in place (a mark
  // at submission would let a harvest in between send stale data and lose
  // the late write).
  uint8_t* host_range_for_io(uint64_t gpa, uint64_t length);
  void mark_dirty(uint64_t gpa, uint64_t length);
  // All of memory for writing (a restore filling it, a test): every page is
  // marked.
  std::span<uint8_t> host_all_for_write();
  // The VMM's own writes since the last harvest.
  DirtyBitmap& dirty() { return dirty_; }
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
  uint8_t* checked(uint64_t gpa, uint64_t length) const;
  uint64_t offset_of(const uint8_t* p) const { return static_cast<uint64_t>(p - mapping_.data()); }
  uint64_t size_;
  std::vector<GuestRegion> regions_;
  UniqueFd fd_;
  MemoryMapping mapping_;
  DirtyBitmap dirty_;
};

}  // namespace keel
