// Buffers for KVM's variable-length ioctl structures: a 32-bit count, 32
// bits of padding or flags, then the entries (kvm_cpuid2, kvm_msrs,
// kvm_irq_routing).
//
// Why not the structs from <linux/kvm.h>: compiled as C++, GCC gives their
// zero-length trailing arrays a different offset and the structs a different
// size than C does (kvm_cpuid2: 12 bytes instead of 8), and the size is part
// of the ioctl number. So the layout and the ioctl numbers are spelled out
// here with the kernel's own (C) sizes.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

namespace keel::kvm {

inline constexpr unsigned long kKvmGetSupportedCpuid = _IOC(_IOC_READ | _IOC_WRITE, KVMIO, 0x05, 8);
inline constexpr unsigned long kKvmSetCpuid2 = _IOC(_IOC_WRITE, KVMIO, 0x90, 8);
inline constexpr unsigned long kKvmGetMsrs = _IOC(_IOC_READ | _IOC_WRITE, KVMIO, 0x88, 8);
inline constexpr unsigned long kKvmSetMsrs = _IOC(_IOC_WRITE, KVMIO, 0x89, 8);
inline constexpr unsigned long kKvmSetGsiRouting = _IOC(_IOC_WRITE, KVMIO, 0x6a, 8);
inline constexpr unsigned long kKvmGetCpuid2 = _IOC(_IOC_READ | _IOC_WRITE, KVMIO, 0x91, 8);
// struct kvm_msr_list: a 32-bit count and the indexes, no padding (4 bytes).
inline constexpr unsigned long kKvmGetMsrIndexList = _IOC(_IOC_READ | _IOC_WRITE, KVMIO, 0x02, 4);
// struct kvm_xsave is 4096 bytes in C; KVM_GET_XSAVE2 and KVM_SET_XSAVE move
// as many bytes as KVM_CHECK_EXTENSION(KVM_CAP_XSAVE2) says, whatever the
// size in the ioctl number.
inline constexpr unsigned long kKvmGetXsave = _IOC(_IOC_READ, KVMIO, 0xa4, 4096);
inline constexpr unsigned long kKvmSetXsave = _IOC(_IOC_WRITE, KVMIO, 0xa5, 4096);
inline constexpr unsigned long kKvmGetXsave2 = _IOC(_IOC_READ, KVMIO, 0xcf, 4096);

template <typename Entry>
class List {
  static_assert(std::is_trivially_copyable_v<Entry>);
  static constexpr size_t kHeader = 8;

 public:
  explicit List(size_t capacity)
      : storage_((kHeader + capacity * sizeof(Entry) + 7) / 8, 0), capacity_(capacity) {
    set_count(static_cast<uint32_t>(capacity));
  }
  explicit List(const std::vector<Entry>& entries) : List(entries.size()) {
    std::memcpy(bytes() + kHeader, entries.data(), entries.size() * sizeof(Entry));
  }

  void* data() { return storage_.data(); }
  uint32_t count() const {
    uint32_t n;
    std::memcpy(&n, storage_.data(), 4);
    return n;
  }
  void set_count(uint32_t n) { std::memcpy(bytes(), &n, 4); }
  // The entries the kernel filled in (at most the capacity given).
  std::vector<Entry> entries() const {
    size_t n = count() < capacity_ ? count() : capacity_;
    std::vector<Entry> out(n);
    std::memcpy(out.data(), reinterpret_cast<const uint8_t*>(storage_.data()) + kHeader,
                n * sizeof(Entry));
    return out;
  }

 private:
  uint8_t* bytes() { return reinterpret_cast<uint8_t*>(storage_.data()); }
  std::vector<uint64_t> storage_;
  size_t capacity_;
};

}  // namespace keel::kvm
