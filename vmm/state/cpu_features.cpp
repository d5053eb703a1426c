#include "vmm/state/cpu_features.h"

#include <cpuid.h>

#include <array>
#include <cstdio>

#include "common/error.h"

namespace keel {

namespace {

namespace pb = state::v1;

enum Reg { kEax, kEbx, kEcx, kEdx };

struct FeatureLeaf {
  uint32_t function;
  uint32_t index;
  // Bits of each register that are features (the rest are counts, IDs, sizes).
  std::array<uint32_t, 4> feature_mask;
};

// Leaf 1 ECX: OSXSAVE (27) mirrors the guest's CR4, HYPERVISOR (31) is set
// by the VMM. EDX HTT (28) is topology set by the VMM. Leaf 7.0 ECX OSPKE
// (4) mirrors CR4. Leaf 0xD.0 EAX/EDX are the XCR0 bits the guest may set;
// 0xD.1 EAX the XSAVE instruction variants.
constexpr uint32_t kLeaf1EcxDynamic = (1u << 27) | (1u << 31);
// Leaf 1 ECX TSC-deadline (24): the in-kernel LAPIC's, which
// KVM_GET_SUPPORTED_CPUID leaves out; KVM_CAP_TSC_DEADLINE_TIMER reports it.
constexpr uint32_t kLeaf1EcxTscDeadline = 1u << 24;
constexpr uint32_t kLeaf1EdxDynamic = 1u << 28;
constexpr uint32_t kLeaf7EcxDynamic = 1u << 4;

constexpr std::array<FeatureLeaf, 6> kFeatureLeaves{{
    {0x1, 0, {0, 0, ~kLeaf1EcxDynamic, ~kLeaf1EdxDynamic}},
    {0x7, 0, {0, ~0u, ~kLeaf7EcxDynamic, ~0u}},
    {0x7, 1, {~0u, 0, 0, 0}},
    {0xd, 0, {~0u, 0, 0, ~0u}},
    {0xd, 1, {0x1f, 0, 0, 0}},
    {0x80000001, 0, {0, 0, ~0u, ~0u}},
}};

struct FeatureName {
  uint32_t function;
  uint32_t index;
  Reg reg;
  unsigned bit;
  const char* name;
};

// Names as Linux's /proc/cpuinfo spells them (Intel SDM vol. 2A, CPUID; AMD APM vol. 3, E.3).
constexpr FeatureName kNames[] = {
    {1, 0, kEcx, 0, "sse3"},
    {1, 0, kEcx, 1, "pclmulqdq"},
    {1, 0, kEcx, 3, "monitor"},
    {1, 0, kEcx, 5, "vmx"},
    {1, 0, kEcx, 9, "ssse3"},
    {1, 0, kEcx, 12, "fma"},
    {1, 0, kEcx, 13, "cx16"},
    {1, 0, kEcx, 17, "pcid"},
    {1, 0, kEcx, 19, "sse4_1"},
    {1, 0, kEcx, 20, "sse4_2"},
    {1, 0, kEcx, 21, "x2apic"},
    {1, 0, kEcx, 22, "movbe"},
    {1, 0, kEcx, 23, "popcnt"},
    {1, 0, kEcx, 25, "aes"},
    {1, 0, kEcx, 26, "xsave"},
    {1, 0, kEcx, 28, "avx"},
    {1, 0, kEcx, 29, "f16c"},
    {1, 0, kEcx, 30, "rdrand"},
    {1, 0, kEdx, 0, "fpu"},
    {1, 0, kEdx, 4, "tsc"},
    {1, 0, kEdx, 5, "msr"},
    {1, 0, kEdx, 6, "pae"},
    {1, 0, kEdx, 8, "cx8"},
    {1, 0, kEdx, 9, "apic"},
    {1, 0, kEdx, 11, "sep"},
    {1, 0, kEdx, 12, "mtrr"},
    {1, 0, kEdx, 13, "pge"},
    {1, 0, kEdx, 15, "cmov"},
    {1, 0, kEdx, 16, "pat"},
    {1, 0, kEdx, 19, "clflush"},
    {1, 0, kEdx, 23, "mmx"},
    {1, 0, kEdx, 24, "fxsr"},
    {1, 0, kEdx, 25, "sse"},
    {1, 0, kEdx, 26, "sse2"},
    {7, 0, kEbx, 0, "fsgsbase"},
    {7, 0, kEbx, 3, "bmi1"},
    {7, 0, kEbx, 4, "hle"},
    {7, 0, kEbx, 5, "avx2"},
    {7, 0, kEbx, 7, "smep"},
    {7, 0, kEbx, 8, "bmi2"},
    {7, 0, kEbx, 9, "erms"},
    {7, 0, kEbx, 10, "invpcid"},
    {7, 0, kEbx, 11, "rtm"},
    {7, 0, kEbx, 16, "avx512f"},
    {7, 0, kEbx, 17, "avx512dq"},
    {7, 0, kEbx, 18, "rdseed"},
    {7, 0, kEbx, 19, "adx"},
    {7, 0, kEbx, 20, "smap"},
    {7, 0, kEbx, 21, "avx512ifma"},
    {7, 0, kEbx, 23, "clflushopt"},
    {7, 0, kEbx, 24, "clwb"},
    {7, 0, kEbx, 28, "avx512cd"},
    {7, 0, kEbx, 29, "sha_ni"},
    {7, 0, kEbx, 30, "avx512bw"},
    {7, 0, kEbx, 31, "avx512vl"},
    {7, 0, kEcx, 1, "avx512vbmi"},
    {7, 0, kEcx, 2, "umip"},
    {7, 0, kEcx, 3, "pku"},
    {7, 0, kEcx, 6, "avx512_vbmi2"},
    {7, 0, kEcx, 8, "gfni"},
    {7, 0, kEcx, 9, "vaes"},
    {7, 0, kEcx, 10, "vpclmulqdq"},
    {7, 0, kEcx, 11, "avx512_vnni"},
    {7, 0, kEcx, 12, "avx512_bitalg"},
    {7, 0, kEcx, 14, "avx512_vpopcntdq"},
    {7, 0, kEcx, 16, "la57"},
    {7, 0, kEcx, 22, "rdpid"},
    {7, 0, kEdx, 4, "fsrm"},
    {7, 0, kEdx, 10, "md_clear"},
    {7, 0, kEdx, 14, "serialize"},
    {7, 0, kEdx, 24, "amx_tile"},
    {7, 0, kEdx, 26, "spec_ctrl"},
    {7, 0, kEdx, 27, "intel_stibp"},
    {7, 0, kEdx, 29, "arch_capabilities"},
    {7, 0, kEdx, 31, "ssbd"},
    {7, 1, kEax, 4, "avx_vnni"},
    {7, 1, kEax, 5, "avx512_bf16"},
    {0xd, 1, kEax, 0, "xsaveopt"},
    {0xd, 1, kEax, 1, "xsavec"},
    {0xd, 1, kEax, 2, "xgetbv1"},
    {0xd, 1, kEax, 3, "xsaves"},
    {0x80000001, 0, kEcx, 0, "lahf_lm"},
    {0x80000001, 0, kEcx, 2, "svm"},
    {0x80000001, 0, kEcx, 5, "abm"},
    {0x80000001, 0, kEcx, 6, "sse4a"},
    {0x80000001, 0, kEcx, 7, "misalignsse"},
    {0x80000001, 0, kEcx, 8, "3dnowprefetch"},
    {0x80000001, 0, kEcx, 11, "xop"},
    {0x80000001, 0, kEcx, 16, "fma4"},
    {0x80000001, 0, kEcx, 21, "tbm"},
    {0x80000001, 0, kEcx, 22, "topoext"},
    {0x80000001, 0, kEdx, 11, "syscall"},
    {0x80000001, 0, kEdx, 20, "nx"},
    {0x80000001, 0, kEdx, 22, "mmxext"},
    {0x80000001, 0, kEdx, 26, "pdpe1gb"},
    {0x80000001, 0, kEdx, 27, "rdtscp"},
    {0x80000001, 0, kEdx, 29, "lm"},
};

// XSAVE state components (Intel SDM vol. 1, 13.1).
constexpr const char* kXsaveComponents[] = {"x87",    "sse",       "avx",      "bndregs",  "bndcsr",
                                            "opmask", "zmm_hi256", "hi16_zmm", "pt",       "pkru",
                                            "pasid",  "cet_u",     "cet_s",    "hdc",      "uintr",
                                            "lbr",    "hwp",       "xtilecfg", "xtiledata"};

constexpr const char* kRegNames[] = {"EAX", "EBX", "ECX", "EDX"};

std::string hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%#x", v);
  return buf;
}

std::string bit_name(uint32_t function, uint32_t index, Reg reg, unsigned bit) {
  if (function == 0xd && index == 0) {
    unsigned component = reg == kEax ? bit : bit + 32;
    std::string name = "XSAVE component " + std::to_string(component);
    if (component < std::size(kXsaveComponents))
      name += std::string(" (") + kXsaveComponents[component] + ")";
    return name;
  }
  for (const auto& n : kNames) {
    if (n.function == function && n.index == index && n.reg == reg && n.bit == bit) return n.name;
  }
  return "CPUID.(" + hex32(function) + "," + std::to_string(index) + ")." + kRegNames[reg] + "[" +
         std::to_string(bit) + "]";
}

uint32_t reg_of(const pb::CpuidFeatureLeaf& leaf, Reg reg) {
  switch (reg) {
    case kEax:
      return leaf.eax();
    case kEbx:
      return leaf.ebx();
    case kEcx:
      return leaf.ecx();
    case kEdx:
      return leaf.edx();
  }
  return 0;
}

uint32_t reg_of(const kvm_cpuid_entry2& e, Reg reg) {
  switch (reg) {
    case kEax:
      return e.eax;
    case kEbx:
      return e.ebx;
    case kEcx:
      return e.ecx;
    case kEdx:
      return e.edx;
  }
  return 0;
}

const kvm_cpuid_entry2* find_leaf(const std::vector<kvm_cpuid_entry2>& cpuid, uint32_t function,
                                  uint32_t index) {
  for (const auto& e : cpuid) {
    bool indexed = e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
    if (e.function == function && (!indexed || e.index == index)) return &e;
  }
  return nullptr;
}

const FeatureLeaf* feature_leaf(uint32_t function, uint32_t index) {
  for (const auto& l : kFeatureLeaves) {
    if (l.function == function && l.index == index) return &l;
  }
  return nullptr;
}

}  // namespace

pb::CpuFeatures cpu_features_of(const std::vector<kvm_cpuid_entry2>& cpuid, uint32_t xsave_size,
                                uint32_t tsc_khz) {
  pb::CpuFeatures features;
  for (const auto& l : kFeatureLeaves) {
    const kvm_cpuid_entry2* e = find_leaf(cpuid, l.function, l.index);
    if (e == nullptr) continue;
    auto* leaf = features.add_leaves();
    leaf->set_function(l.function);
    leaf->set_index(l.index);
    leaf->set_eax(e->eax & l.feature_mask[kEax]);
    leaf->set_ebx(e->ebx & l.feature_mask[kEbx]);
    leaf->set_ecx(e->ecx & l.feature_mask[kEcx]);
    leaf->set_edx(e->edx & l.feature_mask[kEdx]);
  }
  features.set_xsave_size(xsave_size);
  features.set_tsc_khz(tsc_khz);
  return features;
}

pb::CpuFeatures guest_cpu_features(const KvmStateCaps& caps, const kvm::Vcpu& vcpu) {
  return cpu_features_of(caps.guest_sees_host_cpuid ? caps.offered_cpuid : vcpu.get_cpuid(),
                         static_cast<uint32_t>(caps.xsave_size), vcpu.get_tsc_khz());
}

std::vector<kvm_cpuid_entry2> host_feature_leaves() {
  std::vector<kvm_cpuid_entry2> leaves;
  const uint32_t max_basic = __get_cpuid_max(0, nullptr);
  const uint32_t max_extended = __get_cpuid_max(0x80000000, nullptr);
  for (const auto& l : kFeatureLeaves) {
    if (l.function > (l.function >= 0x80000000 ? max_extended : max_basic)) continue;
    kvm_cpuid_entry2 e{};
    e.function = l.function;
    e.index = l.index;
    if (l.function == 0x7 || l.function == 0xd) e.flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
    __cpuid_count(l.function, l.index, e.eax, e.ebx, e.ecx, e.edx);
    leaves.push_back(e);
  }
  return leaves;
}

std::vector<std::string> missing_cpu_features(const pb::CpuFeatures& features,
                                              const KvmStateCaps& host) {
  std::vector<std::string> missing;
  for (const auto& leaf : features.leaves()) {
    const FeatureLeaf* known = feature_leaf(leaf.function(), leaf.index());
    if (known == nullptr) {
      missing.push_back("feature leaf CPUID.(" + hex32(leaf.function()) + "," +
                        std::to_string(leaf.index()) + ") unknown to this Keel");
      continue;
    }
    const kvm_cpuid_entry2* offered = find_leaf(host.offered_cpuid, leaf.function(), leaf.index());
    for (Reg reg : {kEax, kEbx, kEcx, kEdx}) {
      uint32_t want = reg_of(leaf, reg) & known->feature_mask[reg];
      uint32_t have = offered ? reg_of(*offered, reg) : 0;
      if (leaf.function() == 1 && reg == kEcx) want &= ~kLeaf1EcxTscDeadline;
      uint32_t lacking = want & ~have;
      for (unsigned bit = 0; bit < 32; ++bit) {
        if (lacking & (1u << bit))
          missing.push_back(bit_name(leaf.function(), leaf.index(), reg, bit));
      }
    }
    // TSC-deadline mode is the in-kernel LAPIC's, reported by a capability.
    if (leaf.function() == 1 && (leaf.ecx() & kLeaf1EcxTscDeadline) && !host.tsc_deadline_timer) {
      missing.push_back("tsc_deadline_timer");
    }
  }
  if (features.xsave_size() != host.xsave_size) {
    missing.push_back("XSAVE area of " + std::to_string(features.xsave_size()) +
                      " bytes (host: " + std::to_string(host.xsave_size) + ")");
  }
  return missing;
}

void check_cpu_features(const pb::CpuFeatures& features, const KvmStateCaps& host) {
  auto missing = missing_cpu_features(features, host);
  if (missing.empty()) return;
  std::string list;
  for (const auto& m : missing) list += (list.empty() ? "" : ", ") + m;
  throw InputError(
      std::string("this host lacks CPU features the VM state needs (checked against ") +
      (host.guest_sees_host_cpuid ? "the host's own CPUID, which guests see on this KVM"
                                  : "KVM_GET_SUPPORTED_CPUID") +
      "): " + list);
}

}  // namespace keel
