#include "tests/support/host_kvm_facts.h"

#include <fcntl.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#include "common/unique_fd.h"

namespace keel::testing {

namespace {

[[noreturn]] void fail(const std::string& what) {
  throw std::runtime_error("/dev/kvm: " + what + ": " + std::strerror(errno));
}

uint64_t tsc_offset(int vcpu) {
  uint64_t offset = 0;
  kvm_device_attr attr{};
  attr.group = KVM_VCPU_TSC_CTRL;
  attr.attr = KVM_VCPU_TSC_OFFSET;
  attr.addr = reinterpret_cast<uint64_t>(&offset);
  if (::ioctl(vcpu, KVM_GET_DEVICE_ATTR, &attr) < 0) fail("KVM_GET_DEVICE_ATTR (TSC offset)");
  return offset;
}

}  // namespace

bool kvm_offsets_guest_tsc() {
  UniqueFd kvm(::open("/dev/kvm", O_RDWR | O_CLOEXEC));
  if (kvm.get() < 0) fail("open");
  UniqueFd vm(::ioctl(kvm.get(), KVM_CREATE_VM, 0));
  if (vm.get() < 0) fail("KVM_CREATE_VM");
  UniqueFd vcpu(::ioctl(vm.get(), KVM_CREATE_VCPU, 0));
  if (vcpu.get() < 0) fail("KVM_CREATE_VCPU");
  const uint64_t before = tsc_offset(vcpu.get());
  uint64_t moved = before - (uint64_t{1} << 40);
  kvm_device_attr attr{};
  attr.group = KVM_VCPU_TSC_CTRL;
  attr.attr = KVM_VCPU_TSC_OFFSET;
  attr.addr = reinterpret_cast<uint64_t>(&moved);
  if (::ioctl(vcpu.get(), KVM_SET_DEVICE_ATTR, &attr) < 0) fail("KVM_SET_DEVICE_ATTR (TSC offset)");
  return tsc_offset(vcpu.get()) != before;
}

}  // namespace keel::testing
