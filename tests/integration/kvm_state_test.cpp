// Captures the complete KVM state of a small VM that ran guest code, restores
// it into a fresh VM, compares the two field by field and lets the restored
// vCPU carry on (label kvm: directly or in the KVM test host, via kvm-run).
#include <gtest/gtest.h>
#include <linux/kvm.h>

#include <chrono>
#include <cstring>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/error.h"
#include "common/guest_memory.h"
#include "tests/support/host_kvm_facts.h"
#include "vmm/boot/cpuid.h"
#include "vmm/boot/memory_layout.h"
#include "vmm/boot/page_tables.h"
#include "vmm/boot/x86_boot.h"
#include "vmm/kvm/kvm_system.h"
#include "vmm/state/kvm_state_caps.h"
#include "vmm/state/vcpu_state.h"
#include "vmm/state/vm_state_kvm.h"

namespace keel {
namespace {

namespace pb = state::v1;

constexpr uint64_t kMemSize = 4 << 20;
constexpr uint64_t kCode = 0x1000;
constexpr uint64_t kScratch = 0x3000;  // in kGuestLoop's encoding
constexpr uint64_t kPageTables = 0x10000;
constexpr uint64_t kPvclock = 0x20000;  // the vCPU 0's kvmclock page
constexpr uint16_t kPort = 0x10;
constexpr uint32_t kVcpus = 2;
constexpr uint32_t kMsrTsc = kMsrIa32Tsc;  // vmm/state/tsc_state.h
constexpr uint32_t kMsrKernelGsBase = 0xc0000102;
constexpr uint32_t kMsrHvVpRuntime = 0x40000010;
constexpr uint32_t kMsrHvTimeRefCount = 0x40000020;
constexpr uint32_t kMsrKvmSystemTimeNew = 0x4b564d01;
constexpr uint32_t kMsrKvmWallClockNew = 0x4b564d00;

// A loop in 64-bit mode: count in RBX, copy it to XMM1 (through memory at
// kScratch: PVM's instruction emulator, which runs guest ring 0 there, has
// MOVDQU but not MOVQ xmm, r64) and to IA32_KERNEL_GS_BASE, report it on
// port 0x10 (one exit per round).
constexpr uint8_t kGuestLoop[] = {
    0x48, 0xff,  0xc3,                                      // inc rbx
    0x48, 0x89,  0x1c, 0x25, 0x00, 0x30, 0x00, 0x00,        // mov [kScratch], rbx
    0xf3, 0x0f,  0x6f, 0x0c, 0x25, 0x00, 0x30, 0x00, 0x00,  // movdqu xmm1, [kScratch]
    0xb9, 0x02,  0x01, 0x00, 0xc0,                          // mov ecx, 0xc0000102
    0x89, 0xd8,                                             // mov eax, ebx
    0x31, 0xd2,                                             // xor edx, edx
    0x0f, 0x30,                                             // wrmsr
    0x89, 0xd8,                                             // mov eax, ebx
    0xe6, kPort,                                            // out 0x10, al
    0xeb, 0xdb,                                             // jmp back to inc rbx
};
// kScratch as the two instructions above encode it (disp32, little-endian).
static_assert(kGuestLoop[7] == (kScratch & 0xff) && kGuestLoop[8] == kScratch >> 8 &&
              kGuestLoop[16] == (kScratch & 0xff) && kGuestLoop[17] == kScratch >> 8);

struct SmallVm {
  kvm::Vm vm;
  GuestMemory memory;
  std::vector<kvm::Vcpu> vcpus;
};

// The VM skeleton a boot and a restore share: memory, irqchip, PIT, vCPUs.
std::unique_ptr<SmallVm> create_vm(const kvm::System& kvm) {
  auto vm = std::make_unique<SmallVm>(
      SmallVm{kvm.create_vm(), GuestMemory({GuestRegion{0, kMemSize, 0}}), {}});
  vm->vm.set_tss_address(layout::kKvmTss);
  vm->vm.set_identity_map_address(layout::kKvmIdentityMap);
  vm->vm.set_memory_slot(0, 0, kMemSize, vm->memory.host_base());
  vm->vm.create_irqchip();
  vm->vm.create_pit2();
  for (uint32_t id = 0; id < kVcpus; ++id) vm->vcpus.push_back(vm->vm.create_vcpu(id));
  return vm;
}

void boot(const kvm::System& kvm, SmallVm& vm) {
  vm.memory.write(kCode, kGuestLoop);
  uint64_t cr3 = write_identity_page_tables(vm.memory, kPageTables);
  auto supported = kvm.supported_cpuid();
  CpuidOptions options;
  options.vcpu_count = kVcpus;
  options.tsc_khz = vm.vcpus[0].get_tsc_khz();
  options.tsc_deadline_timer = kvm.check_extension(KVM_CAP_TSC_DEADLINE_TIMER) > 0;
  for (auto& vcpu : vm.vcpus) {
    vcpu.set_cpuid(cpuid_for_vcpu(supported, vcpu.id(), options));
    vcpu.set_msrs(boot_msrs());
  }
  kvm::Vcpu& bsp = vm.vcpus[0];
  set_boot_vcpu_state(bsp, BootEntry{true, kCode, 0, 0, cr3});
  auto sregs = bsp.get_sregs();
  sregs.cr4 |= 1u << 9;  // OSFXSR: SSE
  bsp.set_sregs(sregs);
  kvm_regs regs = bsp.get_regs();
  regs.rbx = 0;
  regs.r15 = 0x5eed'cafe'f00d'0001;  // untouched by the loop: must survive as is
  bsp.set_regs(regs);
  // kvmclock on, as a guest kernel turns it on (the MSR's bit 0: enabled);
  // KVM keeps the page at kPvclock up to date from here on.
  kvm_msr_entry kvmclock{};
  kvmclock.index = kMsrKvmSystemTimeNew;
  kvmclock.data = kPvclock | 1;
  bsp.set_msrs({kvmclock});
  kvm_debugregs dr = bsp.get_debugregs();
  dr.db[0] = 0x1234'5000;  // breakpoint address, not enabled in DR7
  bsp.set_debugregs(dr);
}

// Runs vCPU 0 to its next report on the port and returns the value.
uint8_t run_to_report(kvm::Vcpu& vcpu) {
  for (;;) {
    if (!vcpu.enter()) continue;
    kvm_run* run = vcpu.run();
    if (run->exit_reason == KVM_EXIT_IO && run->io.port == kPort &&
        run->io.direction == KVM_EXIT_IO_OUT) {
      return *(reinterpret_cast<uint8_t*>(run) + run->io.data_offset);
    }
    std::ostringstream why;
    why << "unexpected exit " << run->exit_reason << " at RIP " << std::hex << vcpu.get_regs().rip;
    if (run->exit_reason == KVM_EXIT_INTERNAL_ERROR) {
      why << ", internal error suberror " << std::dec << run->internal.suberror << ", data";
      for (uint32_t i = 0; i < run->internal.ndata && i < 16; ++i)
        why << " " << std::hex << run->internal.data[i];
    }
    ADD_FAILURE() << why.str();
    return 0;
  }
}

// KVM finishes an I/O exit on the next KVM_RUN (api.rst, KVM_RUN: "the
// corresponding operations are complete ... only after userspace has
// re-entered the kernel"): re-enter with immediate_exit before capturing.
void complete_pending_exit(kvm::Vcpu& vcpu) {
  vcpu.request_immediate_exit();
  EXPECT_FALSE(vcpu.enter());
  vcpu.clear_immediate_exit();
}

struct Captured {
  std::vector<pb::VcpuState> vcpus;
  pb::IrqchipState irqchip;
  pb::PitState pit;
  pb::ClockState clock;
};

Captured capture(const KvmStateCaps& caps, const SmallVm& vm) {
  Captured c;
  for (const auto& vcpu : vm.vcpus) c.vcpus.push_back(capture_vcpu_state(caps, vcpu));
  std::vector<pb::VcpuState*> states;
  for (auto& v : c.vcpus) states.push_back(&v);
  capture_tsc(vm.vcpus, states);
  c.irqchip = capture_irqchip(vm.vm);
  c.pit = capture_pit(vm.vm);
  c.clock = capture_clock(vm.vm);  // last: the guest clock stops where the vCPUs stopped
  return c;
}

// Through the wire format, as a snapshot file would carry it.
template <typename M>
M round_trip(const M& message) {
  std::string wire;
  EXPECT_TRUE(message.SerializeToString(&wire));
  M back;
  EXPECT_TRUE(back.ParseFromString(wire));
  return back;
}

uint64_t msr_value(const pb::VcpuState& s, uint32_t index) {
  for (const auto& m : s.msrs()) {
    if (m.index() == index) return m.value();
  }
  ADD_FAILURE() << "MSR " << std::hex << index << " not captured";
  return 0;
}

template <typename T>
T as(const std::string& bytes) {
  T value{};
  EXPECT_EQ(bytes.size(), sizeof(T));
  std::memcpy(&value, bytes.data(), std::min(bytes.size(), sizeof(T)));
  return value;
}

void expect_same_vcpu(const pb::VcpuState& a, const pb::VcpuState& b, uint32_t tsc_khz) {
  SCOPED_TRACE("vCPU " + std::to_string(a.id()));
  EXPECT_EQ(a.id(), b.id());
  auto ra = as<kvm_regs>(a.regs()), rb = as<kvm_regs>(b.regs());
  EXPECT_EQ(ra.rip, rb.rip);
  EXPECT_EQ(ra.rbx, rb.rbx);
  EXPECT_EQ(ra.r15, rb.r15);
  EXPECT_EQ(ra.rflags, rb.rflags);
  EXPECT_EQ(a.regs(), b.regs()) << "kvm_regs differ";
  EXPECT_EQ(a.sregs2(), b.sregs2());
  EXPECT_EQ(a.sregs(), b.sregs()) << "special registers differ";
  EXPECT_EQ(a.xsave(), b.xsave()) << "XSAVE area differs";
  EXPECT_EQ(a.xcrs(), b.xcrs());
  EXPECT_EQ(a.debugregs(), b.debugregs());
  EXPECT_EQ(a.events(), b.events());
  EXPECT_EQ(a.mp_state(), b.mp_state());
  EXPECT_EQ(a.tsc_khz(), b.tsc_khz());
  // LAPIC: all registers but the timer's current count (0x390), which counts
  // down in real time while a timer runs.
  auto la = as<kvm_lapic_state>(a.lapic()), lb = as<kvm_lapic_state>(b.lapic());
  std::memset(la.regs + 0x390, 0, 4);
  std::memset(lb.regs + 0x390, 0, 4);
  EXPECT_EQ(0, std::memcmp(la.regs, lb.regs, sizeof la.regs)) << "LAPIC differs";
  ASSERT_EQ(a.cpuid_size(), b.cpuid_size());
  for (int i = 0; i < a.cpuid_size(); ++i) {
    EXPECT_EQ(a.cpuid(i).SerializeAsString(), b.cpuid(i).SerializeAsString())
        << "CPUID leaf " << std::hex << a.cpuid(i).function() << "." << a.cpuid(i).index();
  }
  // MSRs: the same set, the same values, except the counters that run on
  // between capture and capture. Each restarts at its captured value, so it
  // may only have advanced, and by no more than the test's own runtime (10 s):
  //  IA32_TSC (TSC ticks);
  //  Hyper-V VP_RUNTIME (0x40000010, the vCPU's run time) and
  //  TIME_REF_COUNT (0x40000020, the partition reference time from the
  //  kvmclock), both in 100 ns units; KVM lists and answers them whether or
  //  not the guest was shown Hyper-V.
  ASSERT_EQ(a.msrs_size(), b.msrs_size());
  for (int i = 0; i < a.msrs_size(); ++i) {
    ASSERT_EQ(a.msrs(i).index(), b.msrs(i).index());
    uint32_t index = a.msrs(i).index();
    uint64_t limit = index == kMsrTsc              ? uint64_t{tsc_khz} * 1000 * 10
                     : index == kMsrHvVpRuntime    ? 10 * 10'000'000ull
                     : index == kMsrHvTimeRefCount ? 10 * 10'000'000ull
                                                   : 0;
    if (limit != 0) {
      EXPECT_GE(b.msrs(i).value(), a.msrs(i).value()) << "MSR " << std::hex << index;
      EXPECT_LT(b.msrs(i).value() - a.msrs(i).value(), limit) << "MSR " << std::hex << index;
      continue;
    }
    EXPECT_EQ(a.msrs(i).value(), b.msrs(i).value()) << "MSR " << std::hex << index;
  }
}

class KvmStateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    kvm_ = std::make_unique<kvm::System>(kvm::System::open());
    original_ = create_vm(*kvm_);
    caps_ = KvmStateCaps::probe(*kvm_, original_->vm);
    boot(*kvm_, *original_);
  }

  std::unique_ptr<kvm::System> kvm_;
  std::unique_ptr<SmallVm> original_;
  KvmStateCaps caps_;
};

TEST_F(KvmStateTest, RestoredVmMatchesAndCarriesOn) {
  kvm::Vcpu& bsp = original_->vcpus[0];
  for (uint8_t expected = 1; expected <= 5; ++expected) ASSERT_EQ(run_to_report(bsp), expected);
  complete_pending_exit(bsp);
  Captured before = capture(caps_, *original_);

  // What the state must hold.
  ASSERT_EQ(before.vcpus.size(), kVcpus);
  const pb::VcpuState& s0 = before.vcpus[0];
  EXPECT_EQ(as<kvm_regs>(s0.regs()).rbx, 5u);
  EXPECT_EQ(msr_value(s0, kMsrKernelGsBase), 5u);
  EXPECT_GT(msr_value(s0, kMsrTsc), 0u);
  EXPECT_EQ(msr_value(s0, kMsrKvmSystemTimeNew), kPvclock | 1);
  msr_value(s0, kMsrKvmWallClockNew);
  EXPECT_EQ(as<kvm_debugregs>(s0.debugregs()).db[0], 0x1234'5000u);
  EXPECT_EQ(s0.mp_state(), KVM_MP_STATE_RUNNABLE);
  EXPECT_EQ(before.vcpus[1].mp_state(), KVM_MP_STATE_UNINITIALIZED);  // an AP waiting for INIT/SIPI
  EXPECT_EQ(s0.xsave().size(), caps_.xsave_size);
  EXPECT_GT(s0.cpuid_size(), 10);
  EXPECT_GT(s0.msrs_size(), 10);
  std::cout << "captured: " << s0.msrs_size() << " of " << caps_.msr_indices.size()
            << " listed MSRs, " << s0.cpuid_size() << " CPUID leaves, XSAVE " << s0.xsave().size()
            << " bytes, sregs2 " << s0.sregs2() << ", TSC " << s0.tsc_khz() << " kHz\n";

  // A fresh VM: the same skeleton, then only what restore puts in.
  auto restored = create_vm(*kvm_);
  std::memcpy(restored->memory.host_all_for_write().data(), original_->memory.host_base(),
              kMemSize);
  original_.reset();  // the original is gone, as after a snapshot
  restore_irqchip(restored->vm, round_trip(before.irqchip));
  restore_pit(restored->vm, round_trip(before.pit));
  TscRestore tsc;
  for (auto& vcpu : restored->vcpus) {
    restore_vcpu_state(caps_, vcpu, round_trip(before.vcpus[vcpu.id()]), tsc);
  }
  restore_clock(restored->vm, round_trip(before.clock));
  Captured after = capture(caps_, *restored);

  for (uint32_t i = 0; i < kVcpus; ++i)
    expect_same_vcpu(before.vcpus[i], after.vcpus[i], s0.tsc_khz());
  EXPECT_EQ(before.irqchip.SerializeAsString(), after.irqchip.SerializeAsString());
  // PIT: all but each channel's count_load_time, the host's monotonic time of
  // the last count load, which KVM_SET_PIT2 sets to "now" as it reloads.
  auto pa = as<kvm_pit_state2>(before.pit.pit2()), pb2 = as<kvm_pit_state2>(after.pit.pit2());
  for (int i = 0; i < 3; ++i) pa.channels[i].count_load_time = pb2.channels[i].count_load_time = 0;
  EXPECT_EQ(0, std::memcmp(&pa, &pb2, sizeof pa)) << "PIT differs";
  // kvmclock: continues from the captured value (no jump by the time between).
  EXPECT_GE(after.clock.clock(), before.clock.clock());
  EXPECT_LT(after.clock.clock() - before.clock.clock(), 10'000'000'000u);

  // The restored guest carries on: the next round reports 6, and RBX, XMM1
  // and IA32_KERNEL_GS_BASE all hold 6.
  kvm::Vcpu& bsp2 = restored->vcpus[0];
  std::memset(restored->memory.host_range_for_write(kPvclock, 32), 0, 32);
  ASSERT_EQ(run_to_report(bsp2), 6);
  // KVM wrote the kvmclock page again on entry (struct pvclock_vcpu_time_info:
  // version at 0, system_time at 16): the restored kvmclock, not a new one
  // from zero.
  auto version = restored->memory.read_obj<uint32_t>(kPvclock);
  auto system_time = restored->memory.read_obj<uint64_t>(kPvclock + 16);
  EXPECT_NE(version, 0u);
  EXPECT_EQ(version % 2, 0u);
  EXPECT_GE(system_time, before.clock.clock());
  EXPECT_LT(system_time - before.clock.clock(), 10'000'000'000u);
  EXPECT_EQ(bsp2.get_regs().rbx, 6u);
  EXPECT_EQ(bsp2.get_regs().r15, 0x5eed'cafe'f00d'0001u);
  ASSERT_EQ(run_to_report(bsp2), 7);
  complete_pending_exit(bsp2);
  auto later = capture_vcpu_state(caps_, bsp2);
  EXPECT_EQ(msr_value(later, kMsrKernelGsBase), 7u);
  uint64_t xmm1;
  std::memcpy(&xmm1, later.xsave().data() + 160 + 16, 8);  // FXSAVE layout: XMM1 at byte 176
  EXPECT_EQ(xmm1, 7u);
}

TEST_F(KvmStateTest, RefusesStateForAnotherVcpuAndUnknownMsrs) {
  Captured before = capture(caps_, *original_);
  auto fresh = create_vm(*kvm_);
  try {
    TscRestore tsc;
    restore_vcpu_state(caps_, fresh->vcpus[1], before.vcpus[0], tsc);
    FAIL() << "vCPU 0's state restored into vCPU 1";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("given to vCPU 1"), std::string::npos) << e.what();
  }
  auto bad = before.vcpus[0];
  bad.add_msrs()->set_index(0x4000'0abc);
  try {
    TscRestore tsc;
    restore_vcpu_state(caps_, fresh->vcpus[0], bad, tsc);
    FAIL() << "unknown MSR accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("0x40000abc"), std::string::npos) << e.what();
  }
  // A CPU feature this host does not offer (the first leaf-7 EBX bit that
  // this host's offered CPUID lacks), as in a snapshot from a richer host.
  uint32_t offered_ebx = 0;
  for (const auto& e : caps_.offered_cpuid) {
    if (e.function == 7 && e.index == 0) offered_ebx = e.ebx;
  }
  unsigned lacking = 0;
  while (offered_ebx & (1u << lacking)) ++lacking;
  auto richer = before.vcpus[0];
  for (auto& e : *richer.mutable_cpuid()) {
    if (e.function() == 7 && e.index() == 0) e.set_ebx(e.ebx() | (1u << lacking));
  }
  try {
    TscRestore tsc;
    restore_vcpu_state(caps_, fresh->vcpus[0], richer, tsc);
    FAIL() << "a CPU feature this host lacks (CPUID.7.0.EBX bit " << lacking << ") accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("lacks CPU features"), std::string::npos) << e.what();
  }
  // Refusals touched nothing: the real state still restores.
  TscRestore tsc;
  EXPECT_NO_THROW(restore_vcpu_state(caps_, fresh->vcpus[0], before.vcpus[0], tsc));
}

uint64_t guest_tsc(const kvm::Vcpu& vcpu) {
  std::vector<kvm_msr_entry> tsc(1);
  tsc[0].index = kMsrTsc;
  EXPECT_EQ(vcpu.get_msrs(tsc), 1u);
  return tsc[0].data;
}

// KVM takes a host write of IA32_TSC within a second of what it expects as
// an attempt to synchronise vCPUs, and keeps its own offset instead
// (vmm/state/tsc_state.h). A guest captured young (its TSC under a second) and
// restored at once into a fresh VM must still see its TSC continue from the
// capture, not from the new VM's creation, and the vCPUs stay in step.
// Where KVM does not offset guest TSCs (PVM) no guest is young and restore
// cannot set a TSC: there the restored TSCs must still run on from the
// capture, in step.
TEST_F(KvmStateTest, YoungGuestsTscContinuesFromTheCaptureOnEveryVcpu) {
  ASSERT_TRUE(original_->vcpus[0].get_tsc_offset())
      << "this KVM lacks KVM_VCPU_TSC_CTRL/KVM_VCPU_TSC_OFFSET (Linux 5.16+), which restore relies "
         "on";
  const bool offsets = testing::kvm_offsets_guest_tsc();
  const uint64_t khz0 = original_->vcpus[0].get_tsc_khz();
  if (offsets) {
    // Old enough (400 ms) that a restore right after would land well behind it.
    while (guest_tsc(original_->vcpus[0]) < khz0 * 400)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
  } else {
    std::cout << "this KVM does not offset guest TSCs (PVM: the guest's TSC is the host's, "
              << guest_tsc(original_->vcpus[0]) / khz0
              << " ms): no young guest here; checking that "
              << "the restored TSCs run on from the capture, in step\n";
  }
  Captured before = capture(caps_, *original_);
  const uint64_t khz = before.vcpus[0].tsc_khz();
  ASSERT_TRUE(before.vcpus[0].has_tsc_at_capture());
  ASSERT_TRUE(before.vcpus[1].has_tsc_at_capture());
  if (offsets) {
    ASSERT_LT(before.vcpus[0].tsc_at_capture(), khz * 1000) << "not young: the test proves nothing";
    ASSERT_GT(before.vcpus[0].tsc_at_capture(), khz * 300) << "too young: the test proves nothing";
  }

  auto restored = create_vm(*kvm_);
  std::memcpy(restored->memory.host_all_for_write().data(), original_->memory.host_base(),
              kMemSize);
  restore_irqchip(restored->vm, before.irqchip);
  restore_pit(restored->vm, before.pit);
  TscRestore tsc;
  for (auto& vcpu : restored->vcpus) restore_vcpu_state(caps_, vcpu, before.vcpus[vcpu.id()], tsc);
  restore_clock(restored->vm, before.clock);

  for (uint32_t i = 0; i < kVcpus; ++i) {
    SCOPED_TRACE("vCPU " + std::to_string(i));
    const uint64_t captured = before.vcpus[i].tsc_at_capture(), now = guest_tsc(restored->vcpus[i]);
    std::cout << "vCPU " << i << ": TSC captured " << captured << ", restored " << now << " ("
              << (now - captured) / khz << " ms later)\n";
    EXPECT_GE(now, captured) << "the TSC went backwards";
    EXPECT_LT(now - captured, khz * 1000 * 5) << "the TSC jumped forward";
  }
  // Both original vCPUs had one offset (KVM synchronised them at creation):
  // so do the restored ones, exactly.
  EXPECT_EQ(original_->vcpus[0].get_tsc_offset(), original_->vcpus[1].get_tsc_offset());
  EXPECT_EQ(restored->vcpus[0].get_tsc_offset(), restored->vcpus[1].get_tsc_offset());
}

}  // namespace
}  // namespace keel
