#include "vmm/kvm/coalesced_io.h"

#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <span>

#include "common/error.h"

namespace keel::kvm {

namespace {

// The ring's layout as the kernel (C) defines it: u32 first, u32 last, then
// entries of { u64 phys_addr; u32 len; u32 pio; u8 data[8] }. Spelled out
// because <linux/kvm.h> compiled as C++ puts the entries at another offset.
constexpr size_t kRingHeader = 8;
constexpr size_t kEntrySize = 24;

size_t ring_capacity() {
  return (static_cast<size_t>(::sysconf(_SC_PAGESIZE)) - kRingHeader) / kEntrySize;
}

}  // namespace

CoalescedIo::CoalescedIo(uint8_t* vcpu_run_mapping, int ring_page_offset)
    : ring_(vcpu_run_mapping +
            static_cast<size_t>(ring_page_offset) * static_cast<size_t>(::sysconf(_SC_PAGESIZE))) {}

void CoalescedIo::register_port(Vm& vm, uint16_t port, uint32_t length) {
  kvm_coalesced_mmio_zone zone{};
  zone.addr = port;
  zone.size = length;
  zone.pio = 1;
  if (::ioctl(vm.fd(), KVM_REGISTER_COALESCED_MMIO, &zone) < 0) {
    throw_errno("KVM_REGISTER_COALESCED_MMIO for port " + std::to_string(port));
  }
}

size_t CoalescedIo::drain(IoBus& bus) {
  std::atomic_ref<uint32_t> first(*reinterpret_cast<uint32_t*>(ring_));
  std::atomic_ref<uint32_t> last(*reinterpret_cast<uint32_t*>(ring_ + 4));
  // Most exits find the ring empty: no lock for them.
  if (first.load(std::memory_order_acquire) == last.load(std::memory_order_acquire)) return 0;
  std::lock_guard guard(mutex_);
  const size_t capacity = ring_capacity();
  uint32_t at = first.load(std::memory_order_relaxed);
  // KVM writes an entry, then publishes it by moving `last`; drain up to the
  // `last` seen now. Never trust an index, even the kernel's.
  const uint32_t end = last.load(std::memory_order_acquire);
  if (at >= capacity || end >= capacity) return 0;
  size_t taken = 0;
  while (at != end) {
    const uint8_t* entry = ring_ + kRingHeader + at * kEntrySize;
    uint64_t address;
    uint32_t length, pio;
    std::memcpy(&address, entry, 8);
    std::memcpy(&length, entry + 8, 4);
    std::memcpy(&pio, entry + 12, 4);
    if (pio && length >= 1 && length <= 4 && address <= 0xffff) {
      bus.write(static_cast<uint16_t>(address), std::span<const uint8_t>(entry + 16, length));
    }
    at = static_cast<uint32_t>((at + 1) % capacity);
    first.store(at, std::memory_order_release);
    ++taken;
  }
  return taken;
}

}  // namespace keel::kvm
