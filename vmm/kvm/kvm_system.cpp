#include "vmm/kvm/kvm_system.h"

#include <fcntl.h>
#include <sys/ioctl.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/error.h"
#include "vmm/kvm/kvm_list.h"

namespace keel::kvm {

System System::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    throw InputError("no usable KVM: cannot open " + path + ": " + std::strerror(errno));
  }
  UniqueFd owned(fd);
  int version = ::ioctl(fd, KVM_GET_API_VERSION, 0);
  if (version < 0) {
    throw InputError("no usable KVM: KVM_GET_API_VERSION on " + path + ": " + std::strerror(errno));
  }
  if (version != KVM_API_VERSION) {
    throw InputError("no usable KVM: " + path + " reports API version " + std::to_string(version) +
                     ", expected " + std::to_string(KVM_API_VERSION));
  }
  System system(std::move(owned));
  for (long cap : {KVM_CAP_IRQCHIP, KVM_CAP_USER_MEMORY, KVM_CAP_PIT2, KVM_CAP_EXT_CPUID}) {
    if (system.check_extension(cap) <= 0) {
      throw InputError("no usable KVM: " + path + " lacks capability " + std::to_string(cap));
    }
  }
  return system;
}

int System::check_extension(long capability) const {
  int r = ::ioctl(fd_.get(), KVM_CHECK_EXTENSION, capability);
  return r < 0 ? 0 : r;
}

std::vector<kvm_cpuid_entry2> System::supported_cpuid() const {
  // The kernel answers E2BIG until the buffer is large enough.
  for (size_t n = 64; n <= 4096; n *= 2) {
    List<kvm_cpuid_entry2> list(n);
    if (::ioctl(fd_.get(), kKvmGetSupportedCpuid, list.data()) == 0) return list.entries();
    if (errno != E2BIG) throw_errno("KVM_GET_SUPPORTED_CPUID");
  }
  throw_errno(E2BIG, "KVM_GET_SUPPORTED_CPUID");
}

std::vector<uint32_t> System::msr_index_list() const {
  // struct kvm_msr_list: a 32-bit count, then the indexes. KVM answers
  // E2BIG with the count it needs.
  std::vector<uint32_t> buffer(1, 0);
  if (::ioctl(fd_.get(), kKvmGetMsrIndexList, buffer.data()) == 0) return {};
  if (errno != E2BIG) throw_errno("KVM_GET_MSR_INDEX_LIST");
  uint32_t n = buffer[0];
  buffer.assign(1 + n, 0);
  buffer[0] = n;
  if (::ioctl(fd_.get(), kKvmGetMsrIndexList, buffer.data()) < 0)
    throw_errno("KVM_GET_MSR_INDEX_LIST");
  n = std::min<uint32_t>(buffer[0], n);
  return std::vector<uint32_t>(buffer.begin() + 1, buffer.begin() + 1 + n);
}

Vm System::create_vm() const {
  int vm_fd = ::ioctl(fd_.get(), KVM_CREATE_VM, 0);
  if (vm_fd < 0) throw_errno("KVM_CREATE_VM");
  UniqueFd owned(vm_fd);
  int mmap_size = ::ioctl(fd_.get(), KVM_GET_VCPU_MMAP_SIZE, 0);
  if (mmap_size <= 0) throw_errno("KVM_GET_VCPU_MMAP_SIZE");
  return Vm(std::move(owned), static_cast<size_t>(mmap_size));
}

}  // namespace keel::kvm
