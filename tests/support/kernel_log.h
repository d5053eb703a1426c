// Reads a stock Linux guest's kernel log for lines that show the VMM built
// something wrong: ACPI errors and checksum warnings, a missing APIC, IRQ
// routing failures, TSC problems Keel causes, warnings and oopses.
#pragma once

#include <string>
#include <vector>

namespace keel::testing {

// The lines of `console` that are problems. Known artefacts of the KVM test
// host's emulated CPU, which QEMU's guests in the same box print too, are
// left out (see kernel_log.cpp).
std::vector<std::string> kernel_log_problems(const std::vector<std::string>& console);

}  // namespace keel::testing
