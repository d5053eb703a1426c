// Why a machine stopped, and the keel-vmm exit code for it.
#pragma once

#include <string>

namespace keel {

enum class StopReason {
  kPowerOff,       // the guest powered off (ACPI S5)
  kReboot,         // the guest asked for a reset (i8042, KVM system event)
  kTripleFault,    // the guest crashed: KVM reported a shutdown
  kGuestPanic,     // the guest reported a crash through pvpanic
  kKvmError,       // KVM could not run the guest: internal error, failed entry
  kVmmError,       // something in the VMM failed while the guest ran
  kSignal,         // the operator stopped keel-vmm (SIGINT, SIGTERM)
  kKilled,         // the operator killed the guest through the control socket
                   // (kill, or a shutdown the guest did not honour in time)
  kMigrated,       // the guest moved to another keel-vmm (live migration)
  kReplicaEnded,   // a passive replica's active ended the replication
  kReplicaFailed,  // a passive replica's stream failed before its first epoch
};

struct MachineStop {
  StopReason reason;
  std::string detail;  // one line for the operator; empty for a poweroff
  int signal = 0;
};

// Documented in keel-vmm --help and the README.
int exit_code(const MachineStop& stop);
const char* describe(StopReason reason);

}  // namespace keel
