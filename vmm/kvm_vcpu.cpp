#include "vmm/kvm_vcpu.h"

#include <sys/ioctl.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "common/error.h"
#include "common/hex.h"
#include "vmm/kvm_list.h"

namespace keel {

namespace {

template <typename T>
void vcpu_ioctl(int fd, unsigned long request, T* arg, const char* name) {
  if (::ioctl(fd, request, arg) < 0) throw_errno(name);
}

}  // namespace

kvm_regs KvmVcpu::get_regs() const {
  kvm_regs regs{};
  vcpu_ioctl(fd_.get(), KVM_GET_REGS, &regs, "KVM_GET_REGS");
  return regs;
}

void KvmVcpu::set_regs(const kvm_regs& regs) {
  vcpu_ioctl(fd_.get(), KVM_SET_REGS, &regs, "KVM_SET_REGS");
}

kvm_sregs KvmVcpu::get_sregs() const {
  kvm_sregs sregs{};
  vcpu_ioctl(fd_.get(), KVM_GET_SREGS, &sregs, "KVM_GET_SREGS");
  return sregs;
}

void KvmVcpu::set_sregs(const kvm_sregs& sregs) {
  vcpu_ioctl(fd_.get(), KVM_SET_SREGS, &sregs, "KVM_SET_SREGS");
}

void KvmVcpu::set_fpu(const kvm_fpu& fpu) { vcpu_ioctl(fd_.get(), KVM_SET_FPU, &fpu, "KVM_SET_FPU"); }

void KvmVcpu::set_cpuid(const std::vector<kvm_cpuid_entry2>& entries) {
  KvmList<kvm_cpuid_entry2> list(entries);
  if (::ioctl(fd_.get(), kKvmSetCpuid2, list.data()) < 0) throw_errno("KVM_SET_CPUID2");
}

void KvmVcpu::set_msrs(const std::vector<kvm_msr_entry>& msrs) {
  KvmList<kvm_msr_entry> list(msrs);
  int set = ::ioctl(fd_.get(), kKvmSetMsrs, list.data());
  if (set < 0) throw_errno("KVM_SET_MSRS");
  if (static_cast<size_t>(set) != msrs.size()) {
    throw_errno(EINVAL, "KVM_SET_MSRS refused MSR " + hex(msrs[static_cast<size_t>(set)].index));
  }
}

kvm_lapic_state KvmVcpu::get_lapic() const {
  kvm_lapic_state lapic{};
  vcpu_ioctl(fd_.get(), KVM_GET_LAPIC, &lapic, "KVM_GET_LAPIC");
  return lapic;
}

void KvmVcpu::set_lapic(const kvm_lapic_state& lapic) {
  vcpu_ioctl(fd_.get(), KVM_SET_LAPIC, &lapic, "KVM_SET_LAPIC");
}

uint32_t KvmVcpu::get_tsc_khz() const {
  int khz = ::ioctl(fd_.get(), KVM_GET_TSC_KHZ, 0);
  if (khz < 0) throw_errno("KVM_GET_TSC_KHZ");
  return static_cast<uint32_t>(khz);
}

bool KvmVcpu::enter() {
  if (::ioctl(fd_.get(), KVM_RUN, 0) < 0) {
    if (errno == EINTR || errno == EAGAIN) return false;
    throw_errno("KVM_RUN on vCPU " + std::to_string(id_));
  }
  return true;
}

}  // namespace keel
