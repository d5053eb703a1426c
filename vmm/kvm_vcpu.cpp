#include "vmm/kvm_vcpu.h"

#include <sys/ioctl.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <string>

#include "common/error.h"

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
  size_t bytes = sizeof(kvm_cpuid2) + entries.size() * sizeof(kvm_cpuid_entry2);
  auto storage = std::make_unique<uint64_t[]>((bytes + 7) / 8);
  auto* cpuid = reinterpret_cast<kvm_cpuid2*>(storage.get());
  std::memset(cpuid, 0, bytes);
  cpuid->nent = static_cast<uint32_t>(entries.size());
  std::memcpy(cpuid->entries, entries.data(), entries.size() * sizeof(kvm_cpuid_entry2));
  vcpu_ioctl(fd_.get(), KVM_SET_CPUID2, cpuid, "KVM_SET_CPUID2");
}

void KvmVcpu::set_msrs(const std::vector<kvm_msr_entry>& msrs) {
  size_t bytes = sizeof(kvm_msrs) + msrs.size() * sizeof(kvm_msr_entry);
  auto storage = std::make_unique<uint64_t[]>((bytes + 7) / 8);
  auto* list = reinterpret_cast<kvm_msrs*>(storage.get());
  std::memset(list, 0, bytes);
  list->nmsrs = static_cast<uint32_t>(msrs.size());
  std::memcpy(list->entries, msrs.data(), msrs.size() * sizeof(kvm_msr_entry));
  int set = ::ioctl(fd_.get(), KVM_SET_MSRS, list);
  if (set < 0) throw_errno("KVM_SET_MSRS");
  if (static_cast<size_t>(set) != msrs.size()) {
    char index[16];
    std::snprintf(index, sizeof index, "0x%x", msrs[static_cast<size_t>(set)].index);
    throw_errno(EINVAL, std::string("KVM_SET_MSRS refused MSR ") + index);
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

void KvmVcpu::set_tsc_khz(uint32_t khz) {
  if (::ioctl(fd_.get(), KVM_SET_TSC_KHZ, static_cast<unsigned long>(khz)) < 0) {
    throw_errno("KVM_SET_TSC_KHZ");
  }
}

uint32_t KvmVcpu::get_tsc_khz() const {
  int khz = ::ioctl(fd_.get(), KVM_GET_TSC_KHZ, 0);
  if (khz < 0) throw_errno("KVM_GET_TSC_KHZ");
  return static_cast<uint32_t>(khz);
}

bool KvmVcpu::enter() {
  if (::ioctl(fd_.get(), KVM_RUN, 0) < 0) {
    if (errno == EINTR || errno == EAGAIN) {
      std::atomic_ref<uint8_t>(run()->immediate_exit).store(0, std::memory_order_relaxed);
      return false;
    }
    throw_errno("KVM_RUN on vCPU " + std::to_string(id_));
  }
  return true;
}

}  // namespace keel
