#include "vmm/state/vcpu_state.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "common/error.h"
#include "common/hex.h"
#include "vmm/state/cpu_features.h"

namespace keel {

namespace {

namespace pb = state::v1;

constexpr uint32_t kMsrIa32TscDeadline = 0x6e0;
// KVM refuses KVM_GET/SET_MSRS with 256 entries or more (MAX_IO_MSRS).
constexpr size_t kMsrBatch = 255;
// KVM_MAX_CPUID_ENTRIES.
constexpr int kMaxCpuidEntries = 256;
// TSC frequencies within 250 ppm count as the same: hosts calibrate their
// TSC at boot with about that much spread (the tolerance QEMU and
// Firecracker use too).
constexpr uint64_t kTscTolerancePpm = 250;

template <typename T>
std::string blob(const T& value) {
  static_assert(std::is_trivially_copyable_v<T>);
  return std::string(reinterpret_cast<const char*>(&value), sizeof(T));
}

// Sizes were checked by validate_vcpu_state.
template <typename T>
T unblob(const std::string& bytes) {
  T value{};
  std::memcpy(&value, bytes.data(), std::min(bytes.size(), sizeof(T)));
  return value;
}

void check_size(const std::string& bytes, size_t expected, const char* what) {
  if (bytes.size() != expected) {
    throw InputError(std::string("vCPU state: ") + what + " is " + std::to_string(bytes.size()) +
                     " bytes, this host's KVM expects " + std::to_string(expected));
  }
}

pb::CpuidEntry to_proto(const kvm_cpuid_entry2& e) {
  pb::CpuidEntry out;
  out.set_function(e.function);
  out.set_index(e.index);
  out.set_flags(e.flags);
  out.set_eax(e.eax);
  out.set_ebx(e.ebx);
  out.set_ecx(e.ecx);
  out.set_edx(e.edx);
  return out;
}

kvm_cpuid_entry2 from_proto(const pb::CpuidEntry& e) {
  kvm_cpuid_entry2 out{};
  out.function = e.function();
  out.index = e.index();
  out.flags = e.flags();
  out.eax = e.eax();
  out.ebx = e.ebx();
  out.ecx = e.ecx();
  out.edx = e.edx();
  return out;
}

std::vector<kvm_cpuid_entry2> cpuid_of(const pb::VcpuState& state) {
  std::vector<kvm_cpuid_entry2> out;
  out.reserve(static_cast<size_t>(state.cpuid_size()));
  for (const auto& e : state.cpuid()) out.push_back(from_proto(e));
  return out;
}

// Every MSR of the index list this vCPU can read. KVM lists some MSRs that a
// given vCPU has no use for (another vendor's, a feature its CPUID lacks);
// KVM_GET_MSRS stops at the first such one: it is left out and the rest read.
std::vector<kvm_msr_entry> read_saveable_msrs(const KvmStateCaps& caps, const kvm::Vcpu& vcpu) {
  std::vector<kvm_msr_entry> out;
  out.reserve(caps.msr_indices.size());
  size_t next = 0;
  while (next < caps.msr_indices.size()) {
    size_t n = std::min(kMsrBatch, caps.msr_indices.size() - next);
    std::vector<kvm_msr_entry> batch(n);
    for (size_t i = 0; i < n; ++i) batch[i].index = caps.msr_indices[next + i];
    size_t read = vcpu.get_msrs(batch);
    out.insert(out.end(), batch.begin(), batch.begin() + static_cast<long>(read));
    next += read;
    if (read < n) ++next;  // the unreadable one
  }
  return out;
}

void set_msr_batches(kvm::Vcpu& vcpu, const std::vector<kvm_msr_entry>& msrs) {
  for (size_t i = 0; i < msrs.size(); i += kMsrBatch) {
    size_t n = std::min(kMsrBatch, msrs.size() - i);
    vcpu.set_msrs(std::vector<kvm_msr_entry>(msrs.begin() + static_cast<long>(i),
                                             msrs.begin() + static_cast<long>(i + n)));
  }
}

bool tsc_khz_close(uint32_t a, uint32_t b) {
  uint64_t diff = a > b ? a - b : b - a;
  return diff * 1000000 <= static_cast<uint64_t>(b) * kTscTolerancePpm;
}

}  // namespace

pb::VcpuState capture_vcpu_state(const KvmStateCaps& caps, const kvm::Vcpu& vcpu) {
  // Order (facts from the KVM code, as Firecracker's save path notes too):
  // KVM_GET_MP_STATE first, since it makes the LAPIC accept pending INIT and
  // SIPI events and so may change other state; KVM_GET_VCPU_EVENTS last, after
  // every getter that could move a pending event.
  pb::VcpuState state;
  state.set_id(vcpu.id());
  state.set_mp_state(vcpu.get_mp_state().mp_state);
  state.set_regs(blob(vcpu.get_regs()));
  if (caps.sregs2) {
    state.set_sregs(blob(vcpu.get_sregs2()));
    state.set_sregs2(true);
  } else {
    state.set_sregs(blob(vcpu.get_sregs()));
  }
  auto xsave = vcpu.get_xsave(caps.xsave2 ? caps.xsave_size : 0);
  state.set_xsave(std::string(xsave.begin(), xsave.end()));
  state.set_xcrs(blob(vcpu.get_xcrs()));
  state.set_debugregs(blob(vcpu.get_debugregs()));
  state.set_lapic(blob(vcpu.get_lapic()));
  state.set_tsc_khz(vcpu.get_tsc_khz());
  for (const auto& e : vcpu.get_cpuid()) *state.add_cpuid() = to_proto(e);
  for (const auto& m : read_saveable_msrs(caps, vcpu)) {
    auto* msr = state.add_msrs();
    msr->set_index(m.index);
    msr->set_value(m.data);
  }
  state.set_events(blob(vcpu.get_vcpu_events()));
  return state;
}

void validate_vcpu_state(const KvmStateCaps& caps, uint32_t vcpu_id, const pb::VcpuState& state) {
  if (state.id() != vcpu_id) {
    throw InputError("vCPU state for vCPU " + std::to_string(state.id()) + " given to vCPU " +
                     std::to_string(vcpu_id));
  }
  check_size(state.regs(), sizeof(kvm_regs), "regs (struct kvm_regs)");
  if (state.sregs2()) {
    check_size(state.sregs(), sizeof(kvm_sregs2), "sregs (struct kvm_sregs2)");
    auto s2 = unblob<kvm_sregs2>(state.sregs());
    if (!caps.sregs2 && (s2.flags & KVM_SREGS2_FLAGS_PDPTRS_VALID)) {
      throw InputError(
          "vCPU state holds PAE PDPTRs, which only KVM_SET_SREGS2 restores; "
          "this host's KVM lacks KVM_CAP_SREGS2");
    }
    if (s2.flags & ~static_cast<uint64_t>(KVM_SREGS2_FLAGS_PDPTRS_VALID)) {
      throw InputError("vCPU state: unknown sregs2 flags " + hex(s2.flags));
    }
  } else {
    check_size(state.sregs(), sizeof(kvm_sregs), "sregs (struct kvm_sregs)");
  }
  check_size(state.xsave(), caps.xsave_size, "xsave (struct kvm_xsave)");
  check_size(state.xcrs(), sizeof(kvm_xcrs), "xcrs (struct kvm_xcrs)");
  auto xcrs = unblob<kvm_xcrs>(state.xcrs());
  if (xcrs.nr_xcrs > KVM_MAX_XCRS) {
    throw InputError("vCPU state: " + std::to_string(xcrs.nr_xcrs) + " XCRs, at most " +
                     std::to_string(KVM_MAX_XCRS));
  }
  check_size(state.lapic(), sizeof(kvm_lapic_state), "lapic (struct kvm_lapic_state)");
  check_size(state.events(), sizeof(kvm_vcpu_events), "events (struct kvm_vcpu_events)");
  check_size(state.debugregs(), sizeof(kvm_debugregs), "debugregs (struct kvm_debugregs)");
  if (state.mp_state() > KVM_MP_STATE_AP_RESET_HOLD) {
    throw InputError("vCPU state: unknown MP state " + std::to_string(state.mp_state()));
  }

  // MSRs: only ones this host's KVM saves, each once.
  std::vector<uint32_t> unknown;
  std::set<uint32_t> seen;
  for (const auto& m : state.msrs()) {
    if (!caps.saves_msr(m.index())) unknown.push_back(m.index());
    if (!seen.insert(m.index()).second) {
      throw InputError("vCPU state: MSR " + hex(m.index()) + " given twice");
    }
  }
  if (!unknown.empty()) {
    std::string list;
    for (uint32_t i : unknown) list += (list.empty() ? "" : ", ") + hex(i);
    throw InputError("vCPU state has MSRs this host's KVM does not save: " + list);
  }

  // CPUID: KVM's own limit, one entry per leaf, features this host offers.
  if (state.cpuid_size() == 0) throw InputError("vCPU state has no CPUID");
  if (state.cpuid_size() > kMaxCpuidEntries) {
    throw InputError("vCPU state: " + std::to_string(state.cpuid_size()) +
                     " CPUID entries, at most " + std::to_string(kMaxCpuidEntries));
  }
  std::set<std::pair<uint32_t, uint32_t>> leaves;
  for (const auto& e : state.cpuid()) {
    if (!leaves.insert({e.function(), e.index()}).second) {
      throw InputError("vCPU state: CPUID leaf " + hex(e.function()) + "." +
                       std::to_string(e.index()) + " given twice");
    }
  }
  check_cpu_features(cpu_features_of(cpuid_of(state), static_cast<uint32_t>(state.xsave().size()),
                                     state.tsc_khz()),
                     caps);
}

void restore_vcpu_state(const KvmStateCaps& caps, kvm::Vcpu& vcpu, const pb::VcpuState& state,
                        TscRestore& tsc) {
  validate_vcpu_state(caps, vcpu.id(), state);

  // Restore order, and why (Documentation/virt/kvm/api.rst and the KVM x86
  // code; QEMU and Firecracker order the same constraints alike):
  //  1. CPUID first: KVM checks CR4 and EFER bits (SET_SREGS), XCR0 and the
  //     XSAVE header (SET_XCRS, SET_XSAVE), DR6/DR7 and many MSRs (SET_MSRS)
  //     against the guest's CPUID, and refuses a changed CPUID after KVM_RUN.
  //  2. TSC frequency (KVM_SET_TSC_KHZ) before the TSC value: the offset
  //     (tsc_state.h) or the MSR write is taken at the vCPU's rate.
  //  3. REGS before VCPU_EVENTS: KVM_SET_REGS drops pending exceptions.
  //  4. SREGS before LAPIC: KVM_SET_SREGS writes the APIC base (xAPIC or
  //     x2APIC mode), which KVM_SET_LAPIC's register layout depends on.
  //  5. XSAVE, XCRS, DEBUGREGS: need only CPUID.
  //  6. LAPIC before MSRs: KVM_SET_LAPIC restarts the LAPIC timer, so the
  //     TSC-deadline MSR is set after it, and after IA32_TSC (KVM arms the
  //     deadline timer against the current guest TSC): TSC_DEADLINE goes in a
  //     batch of its own at the end. kvmclock MSRs here too: KVM refreshes
  //     the guest's pvclock pages on the next entry, and again when the VM's
  //     clock is set (KVM_SET_CLOCK, vm_state_kvm.h, after every vCPU).
  //  7. MP state after the LAPIC: INIT/SIPI-received states live in the
  //     LAPIC's pending events.
  //  8. VCPU_EVENTS last: pending/injected exceptions, NMI, interrupt
  //     shadow, SMM; the setters before may each clear some of these.
  vcpu.set_cpuid(cpuid_of(state));

  uint32_t host_khz = vcpu.get_tsc_khz();
  if (state.tsc_khz() != 0 && !tsc_khz_close(state.tsc_khz(), host_khz)) {
    if (!caps.tsc_control) {
      throw InputError("vCPU state has a TSC of " + std::to_string(state.tsc_khz()) +
                       " kHz, this host's is " + std::to_string(host_khz) +
                       " kHz and its KVM cannot scale it (no KVM_CAP_TSC_CONTROL)");
    }
    vcpu.set_tsc_khz(state.tsc_khz());
  }

  vcpu.set_regs(unblob<kvm_regs>(state.regs()));
  if (state.sregs2() && caps.sregs2) {
    vcpu.set_sregs2(unblob<kvm_sregs2>(state.sregs()));
  } else if (state.sregs2()) {
    // No PDPTRs to keep (validated): the same registers through KVM_SET_SREGS.
    auto s2 = unblob<kvm_sregs2>(state.sregs());
    kvm_sregs s{};
    s.cs = s2.cs, s.ds = s2.ds, s.es = s2.es, s.fs = s2.fs, s.gs = s2.gs, s.ss = s2.ss;
    s.tr = s2.tr, s.ldt = s2.ldt, s.gdt = s2.gdt, s.idt = s2.idt;
    s.cr0 = s2.cr0, s.cr2 = s2.cr2, s.cr3 = s2.cr3, s.cr4 = s2.cr4, s.cr8 = s2.cr8;
    s.efer = s2.efer, s.apic_base = s2.apic_base;
    vcpu.set_sregs(s);
  } else {
    vcpu.set_sregs(unblob<kvm_sregs>(state.sregs()));
  }
  vcpu.set_xsave(std::vector<uint8_t>(state.xsave().begin(), state.xsave().end()));
  vcpu.set_xcrs(unblob<kvm_xcrs>(state.xcrs()));
  vcpu.set_debugregs(unblob<kvm_debugregs>(state.debugregs()));
  vcpu.set_lapic(unblob<kvm_lapic_state>(state.lapic()));

  // The TSC before the other MSRs, so that MSRs read against it see the
  // restored one: exactly through its offset where the capture allows
  // (tsc_state.h), else IA32_TSC first in the batch.
  const std::optional<uint64_t> tsc_offset = tsc.offset_for(vcpu, state);
  if (tsc_offset) vcpu.set_tsc_offset(*tsc_offset);
  std::vector<kvm_msr_entry> msrs, deferred;
  for (const auto& m : state.msrs()) {
    if (m.index() == kMsrIa32Tsc && tsc_offset) continue;
    kvm_msr_entry e{};
    e.index = m.index();
    e.data = m.value();
    (m.index() == kMsrIa32TscDeadline ? deferred : msrs).push_back(e);
  }
  std::stable_partition(msrs.begin(), msrs.end(),
                        [](const kvm_msr_entry& e) { return e.index == kMsrIa32Tsc; });
  set_msr_batches(vcpu, msrs);
  set_msr_batches(vcpu, deferred);

  kvm_mp_state mp{};
  mp.mp_state = state.mp_state();
  vcpu.set_mp_state(mp);
  vcpu.set_vcpu_events(unblob<kvm_vcpu_events>(state.events()));
}

}  // namespace keel
