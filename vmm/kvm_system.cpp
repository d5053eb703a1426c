#include "vmm/kvm_system.h"

#include <fcntl.h>
#include <sys/ioctl.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "common/error.h"

namespace keel {

KvmSystem KvmSystem::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    throw InputError("no usable KVM: cannot open " + path + ": " + std::strerror(errno));
  }
  UniqueFd owned(fd);
  int version = ::ioctl(fd, KVM_GET_API_VERSION, 0);
  if (version != KVM_API_VERSION) {
    throw InputError("no usable KVM: " + path + " reports API version " +
                     std::to_string(version) + ", expected " + std::to_string(KVM_API_VERSION));
  }
  KvmSystem system(std::move(owned));
  for (long cap : {KVM_CAP_IRQCHIP, KVM_CAP_USER_MEMORY, KVM_CAP_PIT2, KVM_CAP_EXT_CPUID}) {
    if (system.check_extension(cap) <= 0) {
      throw InputError("no usable KVM: " + path + " lacks capability " + std::to_string(cap));
    }
  }
  return system;
}

int KvmSystem::check_extension(long capability) const {
  int r = ::ioctl(fd_.get(), KVM_CHECK_EXTENSION, capability);
  return r < 0 ? 0 : r;
}

std::vector<kvm_cpuid_entry2> KvmSystem::supported_cpuid() const {
  // The kernel answers E2BIG until the buffer is large enough.
  for (uint32_t n = 64; n <= 4096; n *= 2) {
    size_t bytes = sizeof(kvm_cpuid2) + n * sizeof(kvm_cpuid_entry2);
    auto storage = std::make_unique<uint64_t[]>((bytes + 7) / 8);
    auto* cpuid = reinterpret_cast<kvm_cpuid2*>(storage.get());
    std::memset(cpuid, 0, bytes);
    cpuid->nent = n;
    if (::ioctl(fd_.get(), KVM_GET_SUPPORTED_CPUID, cpuid) == 0) {
      return std::vector<kvm_cpuid_entry2>(cpuid->entries, cpuid->entries + cpuid->nent);
    }
    if (errno != E2BIG) throw_errno("KVM_GET_SUPPORTED_CPUID");
  }
  throw_errno(E2BIG, "KVM_GET_SUPPORTED_CPUID");
}

KvmVm KvmSystem::create_vm() const {
  int vm_fd = ::ioctl(fd_.get(), KVM_CREATE_VM, 0);
  if (vm_fd < 0) throw_errno("KVM_CREATE_VM");
  int mmap_size = ::ioctl(fd_.get(), KVM_GET_VCPU_MMAP_SIZE, 0);
  if (mmap_size <= 0) {
    ::close(vm_fd);
    throw_errno("KVM_GET_VCPU_MMAP_SIZE");
  }
  return KvmVm(UniqueFd(vm_fd), static_cast<size_t>(mmap_size));
}

}  // namespace keel
