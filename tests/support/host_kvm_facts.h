// Facts about this machine's /dev/kvm that decide what a test may expect,
// found with raw ioctls (independently of Keel's own KVM wrappers, which the
// tests check).
#pragma once

namespace keel::testing {

// Whether KVM offsets guest TSCs: a fresh vCPU's KVM_VCPU_TSC_OFFSET, moved
// by 2^40 cycles, reads back moved. PVM does not (its guests read the host's
// TSC); hardware-assisted KVM since Linux 5.16 does. Throws when /dev/kvm
// cannot make a VM and vCPU, or lacks the attribute (a test that needs the
// fact cannot run).
bool kvm_offsets_guest_tsc();

}  // namespace keel::testing
