#include "tests/support/kernel_log.h"

#include <regex>

namespace keel::testing {

namespace {

const std::vector<std::regex>& problem_patterns() {
  static const std::vector<std::regex> patterns = [] {
    std::vector<std::regex> p;
    for (const char* re :
         {// ACPI tables and AML Keel builds.
          // (The tests boot with acpi_force_table_verification, so that
          // Linux checks every table's checksum early.)
          R"(ACPI (BIOS )?(Error|Warning))", R"(Incorrect checksum)", R"(ACPI: .*failed)",
          // Interrupt controllers and routing.
          R"(APIC.*not (detected|present))", R"(No local APIC)", R"(MP-BIOS bug)",
          R"(timer doesn't work)", R"(IRQ.*[Rr]outing.*(fail|error))", R"(nobody cared)",
          R"(No irq handler for vector)",
          // TSC trouble of Keel's making: vCPU TSCs written apart, not the
          // missing invariant-TSC bit of an emulated CPU.
          R"(TSC synchronization)", R"(TSC warp)", R"(clocksource watchdog)",
          // Platform devices Keel provides.
          R"(PCI: Fatal)", R"(rtc_cmos.*broken)", R"(i8042: Can't)", R"(MTRRs disabled)",
          // Anything the kernel considers a bug.
          R"(WARNING:)", R"(BUG:)", R"(Oops)", R"(Kernel panic)", R"(Call Trace)"}) {
      p.emplace_back(re);
    }
    return p;
  }();
  return patterns;
}

}  // namespace

std::vector<std::string> kernel_log_problems(const std::vector<std::string>& console) {
  std::vector<std::string> problems;
  bool in_xsave_artefact = false;
  for (const auto& line : console) {
    // The KVM test host's TCG CPU (-cpu max) reports XSAVE sizes that Linux
    // 6.1 rejects with a WARNING and a stack trace; QEMU's guests in the same
    // box print the very same block. It ends with the trace's end marker.
    if (line.find("XSAVE consistency problem") != std::string::npos) in_xsave_artefact = true;
    if (in_xsave_artefact) {
      if (line.find("---[ end trace") != std::string::npos) in_xsave_artefact = false;
      continue;
    }
    for (const auto& re : problem_patterns()) {
      if (std::regex_search(line, re)) {
        problems.push_back(line);
        break;
      }
    }
  }
  return problems;
}

}  // namespace keel::testing
