// Validation of captured vCPU and VM state as untrusted input: needs no KVM.
#include "vmm/state/vcpu_state.h"

#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <string>

#include "common/error.h"
#include "vmm/state/cpu_features.h"
#include "vmm/state/vm_state_kvm.h"

namespace keel {
namespace {

namespace pb = state::v1;

kvm_cpuid_entry2 leaf(uint32_t function, uint32_t index, uint32_t eax, uint32_t ebx, uint32_t ecx,
                      uint32_t edx) {
  kvm_cpuid_entry2 e{};
  e.function = function;
  e.index = index;
  e.flags = (function == 7 || function == 0xd) ? KVM_CPUID_FLAG_SIGNIFCANT_INDEX : 0;
  e.eax = eax;
  e.ebx = ebx;
  e.ecx = ecx;
  e.edx = edx;
  return e;
}

constexpr uint32_t kAvx2 = 1u << 5, kAvx512f = 1u << 16, kBit30 = 1u << 30;

KvmStateCaps host_caps() {
  KvmStateCaps caps;
  caps.msr_indices = {0x10, 0x3b, 0x6e0, 0xc0000102, 0x4b564d00, 0x4b564d01};
  caps.xsave_size = 4096;
  caps.xsave2 = true;
  caps.sregs2 = true;
  caps.tsc_deadline_timer = true;
  caps.offered_cpuid = {
      leaf(0, 0, 0xd, 0, 0, 0),
      leaf(1, 0, 0x806f8, 0, 0x76f8320b, 0x178bfbff),
      leaf(7, 0, 0, 0x219c07ab | kAvx2, 0x4, 0),
      leaf(0xd, 0, 0x7, 0x340, 0x340, 0),
      leaf(0xd, 1, 0xf, 0, 0, 0),
      leaf(0x80000001, 0, 0, 0, 0x75c237ff, 0x2fd3fbff),
  };
  return caps;
}

template <typename T>
std::string zero_blob() {
  return std::string(sizeof(T), '\0');
}

pb::VcpuState valid_state(const KvmStateCaps& caps) {
  pb::VcpuState s;
  s.set_id(1);
  s.set_regs(zero_blob<kvm_regs>());
  s.set_sregs(zero_blob<kvm_sregs2>());
  s.set_sregs2(true);
  s.set_xsave(std::string(caps.xsave_size, '\0'));
  s.set_xcrs(zero_blob<kvm_xcrs>());
  s.set_lapic(zero_blob<kvm_lapic_state>());
  s.set_events(zero_blob<kvm_vcpu_events>());
  s.set_debugregs(zero_blob<kvm_debugregs>());
  s.set_mp_state(KVM_MP_STATE_RUNNABLE);
  s.set_tsc_khz(2000000);
  for (uint32_t index : {0x10u, 0x4b564d01u}) {
    auto* m = s.add_msrs();
    m->set_index(index);
    m->set_value(42);
  }
  for (const auto& e : caps.offered_cpuid) {
    auto* c = s.add_cpuid();
    c->set_function(e.function);
    c->set_index(e.index);
    c->set_flags(e.flags);
    c->set_eax(e.eax);
    c->set_ebx(e.ebx);
    c->set_ecx(e.ecx);
    c->set_edx(e.edx);
  }
  // Bits the VMM sets itself or the guest's CR4 mirrors: never "missing".
  auto* l1 = s.mutable_cpuid(1);
  l1->set_ecx(l1->ecx() | (1u << 27) | (1u << 31) | (1u << 24));
  l1->set_edx(l1->edx() | (1u << 28));
  return s;
}

pb::CpuidEntry* find(pb::VcpuState& s, uint32_t function, uint32_t index) {
  for (auto& e : *s.mutable_cpuid()) {
    if (e.function() == function && e.index() == index) return &e;
  }
  return nullptr;
}

std::string refusal(const KvmStateCaps& caps, uint32_t id, const pb::VcpuState& s) {
  try {
    validate_vcpu_state(caps, id, s);
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

TEST(VcpuStateValidation, AcceptsAConsistentState) {
  auto caps = host_caps();
  EXPECT_NO_THROW(validate_vcpu_state(caps, 1, valid_state(caps)));
}

TEST(VcpuStateValidation, SurvivesAProtobufRoundTrip) {
  auto caps = host_caps();
  std::string wire;
  ASSERT_TRUE(valid_state(caps).SerializeToString(&wire));
  pb::VcpuState back;
  ASSERT_TRUE(back.ParseFromString(wire));
  EXPECT_NO_THROW(validate_vcpu_state(caps, 1, back));
}

TEST(VcpuStateValidation, RefusesAnotherVcpusState) {
  auto caps = host_caps();
  EXPECT_NE(refusal(caps, 0, valid_state(caps)).find("for vCPU 1 given to vCPU 0"),
            std::string::npos);
}

TEST(VcpuStateValidation, RefusesBlobsOfTheWrongSize) {
  auto caps = host_caps();
  auto s = valid_state(caps);
  s.set_regs(std::string(sizeof(kvm_regs) - 1, '\0'));
  EXPECT_NE(refusal(caps, 1, s).find("regs (struct kvm_regs) is 143 bytes"), std::string::npos);

  s = valid_state(caps);
  s.set_lapic(std::string(2048, '\0'));
  EXPECT_NE(refusal(caps, 1, s).find("lapic"), std::string::npos);

  s = valid_state(caps);
  s.set_sregs2(false);  // kvm_sregs2 bytes labelled as kvm_sregs
  EXPECT_NE(refusal(caps, 1, s).find("struct kvm_sregs)"), std::string::npos);

  s = valid_state(caps);
  s.set_events("");
  EXPECT_NE(refusal(caps, 1, s).find("events"), std::string::npos);
}

TEST(VcpuStateValidation, XsaveMustHaveThisHostsSize) {
  auto caps = host_caps();
  auto s = valid_state(caps);
  caps.xsave_size = 11008;  // an AMX host
  std::string why = refusal(caps, 1, s);
  EXPECT_NE(why.find("xsave (struct kvm_xsave) is 4096 bytes, this host's KVM expects 11008"),
            std::string::npos)
      << why;
}

TEST(VcpuStateValidation, NamesMsrsThisHostDoesNotSave) {
  auto caps = host_caps();
  auto s = valid_state(caps);
  for (uint32_t index : {0xdeadu, 0xc0010117u}) {
    auto* m = s.add_msrs();
    m->set_index(index);
  }
  std::string why = refusal(caps, 1, s);
  EXPECT_NE(why.find("does not save: 0xdead, 0xc0010117"), std::string::npos) << why;
}

TEST(VcpuStateValidation, RefusesAnMsrGivenTwice) {
  auto caps = host_caps();
  auto s = valid_state(caps);
  s.add_msrs()->set_index(0x10);
  EXPECT_NE(refusal(caps, 1, s).find("MSR 0x10 given twice"), std::string::npos);
}

TEST(VcpuStateValidation, NamesMissingCpuFeatures) {
  auto caps = host_caps();
  auto s = valid_state(caps);
  auto* l7 = find(s, 7, 0);
  l7->set_ebx(l7->ebx() | kAvx512f | kBit30 | (1u << 2));  // avx512f, avx512bw, a nameless bit
  auto* xsave = find(s, 0xd, 0);
  xsave->set_eax(xsave->eax() | 0xe0);  // opmask, zmm_hi256, hi16_zmm
  std::string why = refusal(caps, 1, s);
  EXPECT_NE(why.find("lacks CPU features"), std::string::npos) << why;
  EXPECT_NE(why.find("avx512f"), std::string::npos) << why;
  EXPECT_NE(why.find("avx512bw"), std::string::npos) << why;
  EXPECT_NE(why.find("CPUID.(0x7,0).EBX[2]"), std::string::npos) << why;
  EXPECT_NE(why.find("XSAVE component 7 (hi16_zmm)"), std::string::npos) << why;
  EXPECT_EQ(why.find("avx2"), std::string::npos) << why;  // the host has that one
}

TEST(VcpuStateValidation, TscDeadlineNeedsTheCapability) {
  auto caps = host_caps();
  auto s = valid_state(caps);
  caps.tsc_deadline_timer = false;
  EXPECT_NE(refusal(caps, 1, s).find("tsc_deadline_timer"), std::string::npos);
}

TEST(VcpuStateValidation, RefusesDuplicateOrMissingCpuid) {
  auto caps = host_caps();
  auto s = valid_state(caps);
  *s.add_cpuid() = s.cpuid(2);
  EXPECT_NE(refusal(caps, 1, s).find("CPUID leaf 0x7.0 given twice"), std::string::npos);
  s = valid_state(caps);
  s.clear_cpuid();
  EXPECT_NE(refusal(caps, 1, s).find("no CPUID"), std::string::npos);
  s = valid_state(caps);
  for (uint32_t i = 0; i < 300; ++i) s.add_cpuid()->set_function(0x40000100 + i);
  EXPECT_NE(refusal(caps, 1, s).find("at most 256"), std::string::npos);
}

TEST(VcpuStateValidation, Sregs2WithPdptrsNeedsSregs2) {
  auto caps = host_caps();
  auto s = valid_state(caps);
  kvm_sregs2 s2{};
  s2.flags = KVM_SREGS2_FLAGS_PDPTRS_VALID;
  s.set_sregs(std::string(reinterpret_cast<const char*>(&s2), sizeof s2));
  EXPECT_NO_THROW(validate_vcpu_state(caps, 1, s));
  caps.sregs2 = false;
  EXPECT_NE(refusal(caps, 1, s).find("KVM_CAP_SREGS2"), std::string::npos);
  s2.flags = 0;  // no PDPTRs: KVM_SET_SREGS does
  s.set_sregs(std::string(reinterpret_cast<const char*>(&s2), sizeof s2));
  EXPECT_NO_THROW(validate_vcpu_state(caps, 1, s));
  s2.flags = 0x80;
  s.set_sregs(std::string(reinterpret_cast<const char*>(&s2), sizeof s2));
  EXPECT_NE(refusal(caps, 1, s).find("unknown sregs2 flags 0x80"), std::string::npos);
}

TEST(VcpuStateValidation, RefusesTooManyXcrsAndUnknownMpState) {
  auto caps = host_caps();
  auto s = valid_state(caps);
  kvm_xcrs xcrs{};
  xcrs.nr_xcrs = 1000;
  s.set_xcrs(std::string(reinterpret_cast<const char*>(&xcrs), sizeof xcrs));
  EXPECT_NE(refusal(caps, 1, s).find("1000 XCRs"), std::string::npos);
  s = valid_state(caps);
  s.set_mp_state(77);
  EXPECT_NE(refusal(caps, 1, s).find("unknown MP state 77"), std::string::npos);
}

TEST(CpuFeatures, CapturesOnlyFeatureBits) {
  auto caps = host_caps();
  std::vector<kvm_cpuid_entry2> cpuid = caps.offered_cpuid;
  cpuid[1].ebx = 0x01020800;  // APIC ID and counts: not features
  auto f = cpu_features_of(cpuid, 4096, 2000000);
  ASSERT_EQ(f.leaves_size(), 5);  // 7.1 absent
  EXPECT_EQ(f.leaves(0).function(), 1u);
  EXPECT_EQ(f.leaves(0).ebx(), 0u);
  EXPECT_EQ(f.xsave_size(), 4096u);
  EXPECT_TRUE(missing_cpu_features(f, caps).empty());
  caps.xsave_size = 8192;
  auto missing = missing_cpu_features(f, caps);
  ASSERT_EQ(missing.size(), 1u);
  EXPECT_EQ(missing[0], "XSAVE area of 4096 bytes (host: 8192)");
}

TEST(CpuFeatures, AHostWithoutALeafLacksAllItsFeatures) {
  auto caps = host_caps();
  auto f = cpu_features_of(caps.offered_cpuid, 4096, 0);
  caps.offered_cpuid.pop_back();  // no 0x80000001
  std::string why;
  try {
    check_cpu_features(f, caps);
  } catch (const InputError& e) {
    why = e.what();
  }
  EXPECT_NE(why.find("lm"), std::string::npos) << why;
  EXPECT_NE(why.find("nx"), std::string::npos) << why;
}

std::string vm_refusal(const std::function<void()>& f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

// On a KVM whose guests see the host's own CPUID (PVM), a snapshot records
// the host's features and a host offers its own: the same host restores its
// snapshots, a host lacking one of them refuses by name.
TEST(CpuFeatures, AHostWhoseGuestsSeeItsCpuidOffersItsOwnFeatures) {
  const auto host = host_feature_leaves();
  auto leaf_of = [&](uint32_t function, uint32_t index) -> const kvm_cpuid_entry2* {
    for (const auto& e : host) {
      if (e.function == function && e.index == index) return &e;
    }
    return nullptr;
  };
  const auto* l1 = leaf_of(1, 0);
  const auto* ext = leaf_of(0x80000001, 0);
  ASSERT_NE(l1, nullptr);
  ASSERT_NE(ext, nullptr);
  EXPECT_TRUE(l1->edx & (1u << 26)) << "sse2: every x86-64 CPU has it";
  EXPECT_TRUE(ext->edx & (1u << 29)) << "lm: every x86-64 CPU has it";
  ASSERT_NE(leaf_of(7, 0), nullptr);
  EXPECT_EQ(leaf_of(7, 0)->flags, static_cast<uint32_t>(KVM_CPUID_FLAG_SIGNIFCANT_INDEX));

  KvmStateCaps caps = host_caps();
  caps.guest_sees_host_cpuid = true;
  caps.offered_cpuid = host;
  const auto features = cpu_features_of(host, 4096, 2000000);
  EXPECT_TRUE(missing_cpu_features(features, caps).empty());

  // A source with one feature more than this host: the first leaf-7 EBX
  // feature bit the host lacks (no CPU sets them all).
  auto richer = features;
  for (auto& leaf : *richer.mutable_leaves()) {
    if (leaf.function() != 7 || leaf.index() != 0) continue;
    unsigned bit = 0;
    while (leaf.ebx() & (1u << bit)) ++bit;
    leaf.set_ebx(leaf.ebx() | (1u << bit));
  }
  const std::string why = vm_refusal([&] { check_cpu_features(richer, caps); });
  EXPECT_NE(why.find("lacks CPU features"), std::string::npos) << why;
  EXPECT_NE(why.find("the host's own CPUID"), std::string::npos) << why;
}

TEST(VmStateValidation, Irqchip) {
  pb::IrqchipState s;
  s.set_pic_master(zero_blob<kvm_pic_state>());
  s.set_pic_slave(zero_blob<kvm_pic_state>());
  s.set_ioapic(zero_blob<kvm_ioapic_state>());
  EXPECT_NO_THROW(validate_irqchip(s));
  auto bad = s;
  bad.set_ioapic(std::string(512, '\0'));
  EXPECT_NE(vm_refusal([&] { validate_irqchip(bad); }).find("IOAPIC"), std::string::npos);
  bad = s;
  kvm_pic_state pic{};
  pic.init_state = 9;
  bad.set_pic_slave(std::string(reinterpret_cast<const char*>(&pic), sizeof pic));
  EXPECT_NE(vm_refusal([&] { validate_irqchip(bad); }).find("slave PIC init state 9"),
            std::string::npos);
}

TEST(VmStateValidation, Pit) {
  kvm_pit_state2 pit{};
  for (auto& ch : pit.channels) ch.mode = 0xff;  // as KVM creates them
  pit.channels[0].mode = 2;
  pit.channels[0].count = 0x10000;
  pb::PitState s;
  s.set_pit2(std::string(reinterpret_cast<const char*>(&pit), sizeof pit));
  EXPECT_NO_THROW(validate_pit(s));
  pit.channels[2].mode = 7;
  s.set_pit2(std::string(reinterpret_cast<const char*>(&pit), sizeof pit));
  EXPECT_NE(vm_refusal([&] { validate_pit(s); }).find("PIT channel 2 out of range (mode 7"),
            std::string::npos);
  pit.channels[2].mode = 0;
  pit.flags = 0x100;
  s.set_pit2(std::string(reinterpret_cast<const char*>(&pit), sizeof pit));
  EXPECT_NE(vm_refusal([&] { validate_pit(s); }).find("unknown PIT flags 0x100"),
            std::string::npos);
  s.set_pit2("short");
  EXPECT_NE(vm_refusal([&] { validate_pit(s); }).find("is 5 bytes"), std::string::npos);
}

}  // namespace
}  // namespace keel
