// One KVM vCPU: its fd, its kvm_run page, register access and KVM_RUN.
#pragma once

#include <linux/kvm.h>

#include <atomic>
#include <cstdint>
#include <vector>

#include "common/memory_mapping.h"
#include "common/unique_fd.h"

namespace keel {

class KvmVcpu {
 public:
  KvmVcpu(uint32_t id, UniqueFd fd, MemoryMapping run)
      : id_(id), fd_(std::move(fd)), run_(std::move(run)) {}

  uint32_t id() const { return id_; }
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

}  // namespace keel
