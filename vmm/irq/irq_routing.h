// The GSI routing of a PC: ISA IRQs to both 8259 PICs and the I/O APIC,
// with ISA IRQ 0 (the PIT) on I/O APIC pin 2 as the MADT's interrupt source
// override says. KVM's default routing puts GSI 0 on pin 0, which leaves
// Linux's check_timer() waiting for a tick that never comes.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <vector>

namespace keel {

inline constexpr unsigned kIoapicPins = 24;

std::vector<kvm_irq_routing_entry> legacy_irq_routing();

}  // namespace keel
