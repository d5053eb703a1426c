#include "vmm/kvm/kvm_vcpu.h"

#include <sys/ioctl.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

#include "common/error.h"
#include "common/hex.h"
#include "vmm/kvm/kvm_list.h"

namespace keel::kvm {

namespace {

template <typename T>
void vcpu_ioctl(int fd, unsigned long request, T* arg, const char* name) {
  if (::ioctl(fd, request, arg) < 0) throw_errno(name);
}

}  // namespace

kvm_regs Vcpu::get_regs() const {
  kvm_regs regs{};
  vcpu_ioctl(fd_.get(), KVM_GET_REGS, &regs, "KVM_GET_REGS");
  return regs;
}

void Vcpu::set_regs(const kvm_regs& regs) {
  vcpu_ioctl(fd_.get(), KVM_SET_REGS, &regs, "KVM_SET_REGS");
}

kvm_sregs Vcpu::get_sregs() const {
  kvm_sregs sregs{};
  vcpu_ioctl(fd_.get(), KVM_GET_SREGS, &sregs, "KVM_GET_SREGS");
  return sregs;
}

void Vcpu::set_sregs(const kvm_sregs& sregs) {
  vcpu_ioctl(fd_.get(), KVM_SET_SREGS, &sregs, "KVM_SET_SREGS");
}

void Vcpu::set_fpu(const kvm_fpu& fpu) {
  vcpu_ioctl(fd_.get(), KVM_SET_FPU, &fpu, "KVM_SET_FPU");
}

void Vcpu::set_cpuid(const std::vector<kvm_cpuid_entry2>& entries) {
  List<kvm_cpuid_entry2> list(entries);
  if (::ioctl(fd_.get(), kKvmSetCpuid2, list.data()) < 0) throw_errno("KVM_SET_CPUID2");
}

void Vcpu::set_msrs(const std::vector<kvm_msr_entry>& msrs) {
  List<kvm_msr_entry> list(msrs);
  int set = ::ioctl(fd_.get(), kKvmSetMsrs, list.data());
  if (set < 0) throw_errno("KVM_SET_MSRS");
  if (static_cast<size_t>(set) != msrs.size()) {
    throw_errno(EINVAL, "KVM_SET_MSRS refused MSR " + hex(msrs[static_cast<size_t>(set)].index));
  }
}

kvm_lapic_state Vcpu::get_lapic() const {
  kvm_lapic_state lapic{};
  vcpu_ioctl(fd_.get(), KVM_GET_LAPIC, &lapic, "KVM_GET_LAPIC");
  return lapic;
}

void Vcpu::set_lapic(const kvm_lapic_state& lapic) {
  vcpu_ioctl(fd_.get(), KVM_SET_LAPIC, &lapic, "KVM_SET_LAPIC");
}

uint32_t Vcpu::get_tsc_khz() const {
  int khz = ::ioctl(fd_.get(), KVM_GET_TSC_KHZ, 0);
  if (khz < 0) throw_errno("KVM_GET_TSC_KHZ");
  return static_cast<uint32_t>(khz);
}

std::optional<uint64_t> Vcpu::get_tsc_offset() const {
  uint64_t offset = 0;
  kvm_device_attr attr{};
  attr.group = KVM_VCPU_TSC_CTRL;
  attr.attr = KVM_VCPU_TSC_OFFSET;
  attr.addr = reinterpret_cast<uint64_t>(&offset);
  if (::ioctl(fd_.get(), KVM_HAS_DEVICE_ATTR, &attr) != 0) {
    // ENXIO: no such attribute; EINVAL/ENOTTY: no device attributes on vCPUs.
    if (errno == ENXIO || errno == EINVAL || errno == ENOTTY) return std::nullopt;
    throw_errno("KVM_HAS_DEVICE_ATTR (KVM_VCPU_TSC_OFFSET)");
  }
  vcpu_ioctl(fd_.get(), KVM_GET_DEVICE_ATTR, &attr, "KVM_GET_DEVICE_ATTR (KVM_VCPU_TSC_OFFSET)");
  return offset;
}

void Vcpu::set_tsc_offset(uint64_t offset) {
  kvm_device_attr attr{};
  attr.group = KVM_VCPU_TSC_CTRL;
  attr.attr = KVM_VCPU_TSC_OFFSET;
  attr.addr = reinterpret_cast<uint64_t>(&offset);
  vcpu_ioctl(fd_.get(), KVM_SET_DEVICE_ATTR, &attr, "KVM_SET_DEVICE_ATTR (KVM_VCPU_TSC_OFFSET)");
}

kvm_sregs2 Vcpu::get_sregs2() const {
  kvm_sregs2 sregs{};
  vcpu_ioctl(fd_.get(), KVM_GET_SREGS2, &sregs, "KVM_GET_SREGS2");
  return sregs;
}

void Vcpu::set_sregs2(const kvm_sregs2& sregs) {
  vcpu_ioctl(fd_.get(), KVM_SET_SREGS2, &sregs, "KVM_SET_SREGS2");
}

std::vector<uint8_t> Vcpu::get_xsave(size_t size) const {
  constexpr size_t kLegacySize = 4096;
  std::vector<uint8_t> xsave(size == 0 ? kLegacySize : size);
  if (size == 0) {
    vcpu_ioctl(fd_.get(), kKvmGetXsave, xsave.data(), "KVM_GET_XSAVE");
  } else {
    vcpu_ioctl(fd_.get(), kKvmGetXsave2, xsave.data(), "KVM_GET_XSAVE2");
  }
  return xsave;
}

void Vcpu::set_xsave(const std::vector<uint8_t>& xsave) {
  // KVM reads its own size from the buffer: never hand it a short one.
  if (xsave.size() < 4096) throw_errno(EINVAL, "KVM_SET_XSAVE: buffer below 4096 bytes");
  vcpu_ioctl(fd_.get(), kKvmSetXsave, xsave.data(), "KVM_SET_XSAVE");
}

kvm_xcrs Vcpu::get_xcrs() const {
  kvm_xcrs xcrs{};
  vcpu_ioctl(fd_.get(), KVM_GET_XCRS, &xcrs, "KVM_GET_XCRS");
  return xcrs;
}

void Vcpu::set_xcrs(const kvm_xcrs& xcrs) {
  vcpu_ioctl(fd_.get(), KVM_SET_XCRS, &xcrs, "KVM_SET_XCRS");
}

kvm_vcpu_events Vcpu::get_vcpu_events() const {
  kvm_vcpu_events events{};
  vcpu_ioctl(fd_.get(), KVM_GET_VCPU_EVENTS, &events, "KVM_GET_VCPU_EVENTS");
  return events;
}

void Vcpu::set_vcpu_events(const kvm_vcpu_events& events) {
  vcpu_ioctl(fd_.get(), KVM_SET_VCPU_EVENTS, &events, "KVM_SET_VCPU_EVENTS");
}

kvm_mp_state Vcpu::get_mp_state() const {
  kvm_mp_state state{};
  vcpu_ioctl(fd_.get(), KVM_GET_MP_STATE, &state, "KVM_GET_MP_STATE");
  return state;
}

void Vcpu::set_mp_state(const kvm_mp_state& state) {
  vcpu_ioctl(fd_.get(), KVM_SET_MP_STATE, &state, "KVM_SET_MP_STATE");
}

kvm_debugregs Vcpu::get_debugregs() const {
  kvm_debugregs regs{};
  vcpu_ioctl(fd_.get(), KVM_GET_DEBUGREGS, &regs, "KVM_GET_DEBUGREGS");
  return regs;
}

void Vcpu::set_debugregs(const kvm_debugregs& regs) {
  vcpu_ioctl(fd_.get(), KVM_SET_DEBUGREGS, &regs, "KVM_SET_DEBUGREGS");
}

size_t Vcpu::get_msrs(std::vector<kvm_msr_entry>& msrs) const {
  List<kvm_msr_entry> list(msrs);
  int read = ::ioctl(fd_.get(), kKvmGetMsrs, list.data());
  if (read < 0) throw_errno("KVM_GET_MSRS");
  auto entries = list.entries();
  size_t n = std::min(static_cast<size_t>(read), msrs.size());
  for (size_t i = 0; i < n; ++i) msrs[i].data = entries[i].data;
  return n;
}

std::vector<kvm_cpuid_entry2> Vcpu::get_cpuid() const {
  // KVM answers a short buffer with E2BIG and copies the vCPU's entries
  // into a large enough one without saying how many: the entries are
  // pre-filled with a marker no real leaf has, and the ones still holding it
  // were not written.
  kvm_cpuid_entry2 marker{};
  marker.function = marker.index = marker.flags = 0xffffffff;
  marker.eax = marker.ebx = marker.ecx = marker.edx = 0xffffffff;
  for (size_t n = 64; n <= 4096; n *= 2) {
    List<kvm_cpuid_entry2> list(std::vector<kvm_cpuid_entry2>(n, marker));
    if (::ioctl(fd_.get(), kKvmGetCpuid2, list.data()) < 0) {
      if (errno == E2BIG) continue;
      throw_errno("KVM_GET_CPUID2");
    }
    auto entries = list.entries();
    auto written = std::find_if(entries.begin(), entries.end(), [&](const kvm_cpuid_entry2& e) {
      return std::memcmp(&e, &marker, sizeof e) == 0;
    });
    entries.erase(written, entries.end());
    return entries;
  }
  throw_errno(E2BIG, "KVM_GET_CPUID2");
}

void Vcpu::set_tsc_khz(uint32_t khz) {
  if (::ioctl(fd_.get(), KVM_SET_TSC_KHZ, static_cast<unsigned long>(khz)) < 0) {
    throw_errno("KVM_SET_TSC_KHZ " + std::to_string(khz));
  }
}

bool Vcpu::enter() {
  if (::ioctl(fd_.get(), KVM_RUN, 0) < 0) {
    if (errno == EINTR || errno == EAGAIN) return false;
    throw_errno("KVM_RUN on vCPU " + std::to_string(id_));
  }
  return true;
}

}  // namespace keel::kvm
