// One KVM vCPU: its fd, its kvm_run page, register access and KVM_RUN.
#pragma once

#include <linux/kvm.h>

#include <atomic>
#include <cstdint>
#include <optional>
#include <vector>

#include "common/memory_mapping.h"
#include "common/unique_fd.h"

namespace keel::kvm {

class Vcpu {
 public:
  Vcpu(uint32_t id, UniqueFd fd, MemoryMapping run)
      : id_(id), fd_(std::move(fd)), run_(std::move(run)) {}

  uint32_t id() const { return id_; }
  int fd() const { return fd_.get(); }
  kvm_regs get_regs() const;
  void set_regs(const kvm_regs& regs);
  kvm_sregs get_sregs() const;
  void set_sregs(const kvm_sregs& sregs);
  void set_fpu(const kvm_fpu& fpu);
  void set_cpuid(const std::vector<kvm_cpuid_entry2>& entries);
  void set_msrs(const std::vector<kvm_msr_entry>& msrs);
  kvm_lapic_state get_lapic() const;
  void set_lapic(const kvm_lapic_state& lapic);
  uint32_t get_tsc_khz() const;

  // State capture and restore (vmm/state/vcpu_state.h).
  kvm_sregs2 get_sregs2() const;
  void set_sregs2(const kvm_sregs2& sregs);
  // `size`: KVM_CHECK_EXTENSION(KVM_CAP_XSAVE2), or 0 for plain KVM_GET_XSAVE (4096 bytes).
  std::vector<uint8_t> get_xsave(size_t size) const;
  // `xsave` must have the size KVM expects (see get_xsave).
  void set_xsave(const std::vector<uint8_t>& xsave);
  kvm_xcrs get_xcrs() const;
  void set_xcrs(const kvm_xcrs& xcrs);
  kvm_vcpu_events get_vcpu_events() const;
  void set_vcpu_events(const kvm_vcpu_events& events);
  kvm_mp_state get_mp_state() const;
  void set_mp_state(const kvm_mp_state& state);
  kvm_debugregs get_debugregs() const;
  void set_debugregs(const kvm_debugregs& regs);
  // Reads msrs[i].data for each msrs[i].index; KVM stops at the first MSR it
  // cannot read: returns how many were read.
  size_t get_msrs(std::vector<kvm_msr_entry>& msrs) const;
  std::vector<kvm_cpuid_entry2> get_cpuid() const;
  void set_tsc_khz(uint32_t khz);
  // The TSC offset (KVM_VCPU_TSC_CTRL / KVM_VCPU_TSC_OFFSET, Linux 5.16+):
  // guest TSC = host TSC scaled to the guest's rate + offset. nullopt where
  // KVM lacks the attribute. Setting it is exact: unlike a host write of
  // IA32_TSC, KVM does not bend it towards the other vCPUs' TSC.
  std::optional<uint64_t> get_tsc_offset() const;
  void set_tsc_offset(uint64_t offset);

  // Enters the guest until the next exit. Returns false when interrupted by
  // a signal or an immediate-exit request, true with run() describing the exit.
  bool enter();
  kvm_run* run() const { return run_.as<kvm_run>(); }
  uint8_t* run_mapping() const { return run_.data(); }
  size_t run_mapping_size() const { return run_.size(); }
  // Makes the next or the current KVM_RUN return at once; the caller then
  // sends the vCPU thread a signal to break out of a running guest.
  void request_immediate_exit() {
    std::atomic_ref<uint8_t>(run()->immediate_exit).store(1, std::memory_order_seq_cst);
  }
  void clear_immediate_exit() {
    std::atomic_ref<uint8_t>(run()->immediate_exit).store(0, std::memory_order_seq_cst);
  }

 private:
  uint32_t id_;
  UniqueFd fd_;
  MemoryMapping run_;
};

}  // namespace keel::kvm
