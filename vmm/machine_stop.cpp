#include "vmm/machine_stop.h"

namespace keel {

int exit_code(const MachineStop& stop) {
  switch (stop.reason) {
    case StopReason::kPowerOff:
      return 0;
    case StopReason::kReboot:
      return 10;
    case StopReason::kTripleFault:
    case StopReason::kGuestPanic:
      return 11;
    case StopReason::kKvmError:
      return 12;
    case StopReason::kVmmError:
      return 13;
    case StopReason::kSignal:
      return 128 + stop.signal;
    case StopReason::kKilled:
      return 14;
    case StopReason::kMigrated:
    case StopReason::kReplicaEnded:
      return 0;
    case StopReason::kReplicaFailed:
      return 1;
  }
  return 13;
}

const char* describe(StopReason reason) {
  switch (reason) {
    case StopReason::kPowerOff:
      return "guest powered off";
    case StopReason::kReboot:
      return "guest requested a reboot";
    case StopReason::kTripleFault:
      return "guest crashed (triple fault)";
    case StopReason::kGuestPanic:
      return "guest crashed (reported through pvpanic)";
    case StopReason::kKvmError:
      return "KVM could not run the guest";
    case StopReason::kVmmError:
      return "VMM failure";
    case StopReason::kSignal:
      return "stopped by signal";
    case StopReason::kKilled:
      return "killed through the control socket";
    case StopReason::kMigrated:
      return "the guest migrated to another keel-vmm";
    case StopReason::kReplicaEnded:
      return "the replication ended; the passive copy is dropped";
    case StopReason::kReplicaFailed:
      return "the replica stream failed before its first epoch";
  }
  return "unknown";
}

}  // namespace keel
