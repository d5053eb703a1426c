// The KVM system handle (/dev/kvm): capability queries and VM creation.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common/unique_fd.h"
#include "vmm/kvm/kvm_vm.h"

namespace keel::kvm {

class System {
 public:
  // Opens `path` and checks the API version. Throws InputError naming the
  // reason when there is no usable KVM.
  static System open(const std::string& path = "/dev/kvm");

  int check_extension(long capability) const;
  std::vector<kvm_cpuid_entry2> supported_cpuid() const;
  // KVM_GET_MSR_INDEX_LIST: the MSRs whose state KVM saves and restores.
  std::vector<uint32_t> msr_index_list() const;
  Vm create_vm() const;
  int fd() const { return fd_.get(); }

 private:
  explicit System(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;
};

}  // namespace keel::kvm
