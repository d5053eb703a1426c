#include "vmm/boot/cpuid.h"

#include <gtest/gtest.h>

namespace keel {
namespace {

kvm_cpuid_entry2 leaf(uint32_t function, uint32_t index = 0) {
  kvm_cpuid_entry2 e{};
  e.function = function;
  e.index = index;
  return e;
}

const kvm_cpuid_entry2* find(const std::vector<kvm_cpuid_entry2>& v, uint32_t f, uint32_t i = 0) {
  for (const auto& e : v) {
    if (e.function == f && e.index == i) return &e;
  }
  return nullptr;
}

std::vector<kvm_cpuid_entry2> supported() {
  auto l1 = leaf(1);
  l1.ebx = 0xff00ffff;  // host APIC ID and count must be replaced, the rest kept
  auto hv = leaf(0x40000000);
  hv.eax = 0x40000001;
  auto l4 = leaf(4);
  l4.eax = 0x121;
  // As current KVMs report it: leaf 0xB with subleaf 0 only, all zeros.
  return {leaf(0), l1, l4, leaf(0xb, 0), hv, leaf(0x40000001), leaf(0x80000008), leaf(0x8000001e)};
}

TEST(Cpuid, Leaf1CarriesApicIdCountAndHypervisorBit) {
  auto v = cpuid_for_vcpu(supported(), 3, {4, 0, false});
  const auto* l1 = find(v, 1);
  ASSERT_NE(l1, nullptr);
  EXPECT_EQ(l1->ebx >> 24, 3u);
  EXPECT_EQ((l1->ebx >> 16) & 0xff, 4u);
  EXPECT_EQ(l1->ebx & 0xffff, 0xffffu);
  EXPECT_TRUE(l1->ecx & (1u << 31));
  EXPECT_TRUE(l1->edx & (1u << 28));
}

TEST(Cpuid, TopologyLeavesNumberTheVcpu) {
  auto v = cpuid_for_vcpu(supported(), 5, {6, 0, false});
  for (uint32_t i = 0; i < 3; ++i) EXPECT_EQ(find(v, 0xb, i)->edx, 5u);
  EXPECT_EQ(find(v, 0xb, 0)->ebx, 1u);
  EXPECT_EQ((find(v, 0xb, 0)->ecx >> 8) & 0xff, 1u);  // SMT level
  EXPECT_EQ(find(v, 0xb, 1)->ebx, 6u);
  EXPECT_EQ(find(v, 0xb, 1)->eax, 3u);                // 6 cores need 3 APIC ID bits
  EXPECT_EQ((find(v, 0xb, 1)->ecx >> 8) & 0xff, 2u);  // core level
  EXPECT_EQ((find(v, 0xb, 2)->ecx >> 8) & 0xff, 0u);  // invalid: the end
  EXPECT_EQ(find(v, 4)->eax >> 26, 7u) << "6 cores use 3 APIC ID bits";
  EXPECT_EQ((find(v, 4)->eax >> 14) & 0xfff, 0u);
  EXPECT_EQ(find(v, 0x8000001e)->eax, 5u);
  EXPECT_EQ(find(v, 0x8000001e)->ebx & 0xff, 5u);
  EXPECT_TRUE(find(v, 0xb, 1)->flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX);
  EXPECT_EQ(find(v, 0x1f, 0), nullptr) << "no v2 topology leaf where KVM has none";
  EXPECT_EQ(find(v, 0x80000008)->ecx & 0xff, 5u);
}

TEST(Cpuid, SingleVcpuHasNoHtt) {
  auto v = cpuid_for_vcpu(supported(), 0, {1, 0, false});
  EXPECT_FALSE(find(v, 1)->edx & (1u << 28));
  EXPECT_EQ(find(v, 0xb, 1)->eax, 0u);
}

TEST(Cpuid, TscDeadlineTimerWhenKvmEmulatesIt) {
  EXPECT_FALSE(find(cpuid_for_vcpu(supported(), 0, {1, 0, false}), 1)->ecx & (1u << 24));
  EXPECT_TRUE(find(cpuid_for_vcpu(supported(), 0, {1, 0, true}), 1)->ecx & (1u << 24));
}

TEST(Cpuid, TimingLeafWhenTscKnown) {
  auto v = cpuid_for_vcpu(supported(), 0, {1, 2'400'000, false});
  EXPECT_EQ(find(v, 0x40000000)->eax, 0x40000010u);
  ASSERT_NE(find(v, 0x40000010), nullptr);
  EXPECT_EQ(find(v, 0x40000010)->eax, 2'400'000u);
  auto without = cpuid_for_vcpu(supported(), 0, {1, 0, false});
  EXPECT_EQ(find(without, 0x40000010), nullptr);
  EXPECT_EQ(find(without, 0x40000000)->eax, 0x40000001u);
}

}  // namespace
}  // namespace keel
