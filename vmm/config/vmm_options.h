// keel-vmm's command line: the machine (the one configuration model,
// proto/vm_config.proto) and what this process does with it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "proto/vm_config.pb.h"
#include "vmm/jail/process_jail.h"

namespace keel {

struct VmmOptions {
  // --kernel, --initrd, --cmdline, --cpus, --memory, --disk, --net, --rng.
  // After parsing, every disk has its serial and every adapter its MAC
  // (defaults filled in), except on --restore, where they stay as given
  // and the snapshot's fill them (config_for_restore).
  state::v1::VmConfig config;
  // --serial stdout (default) or file=PATH
  std::string serial_file;  // empty: stdout
  std::string api_socket;   // --api-socket PATH; empty: none
  // --snapshot-root DIR: where `keelctl snapshot` may write; empty: snapshots
  // are refused.
  std::string snapshot_root;
  // --fence-file PATH: the host's fence deadline (common/fence_deadline.h),
  // which keel-agent moves forward while its lease holds; once it passes,
  // the guest is paused. Empty: none.
  std::string fence_file;
  // --event-log PATH: every event (keelctl events) as a line of JSON,
  // appended. Empty: none.
  std::string event_log;
  // --name NAME: the VM's name in keel-vmm's log lines. Empty: none.
  std::string name;
  // --restore DIR: the machine comes from a snapshot (its configuration,
  // memory and state); --disk and --net name its disks and taps one for
  // one, --serial and --api-socket apply as usual.
  std::string restore_dir;
  // --incoming tcp:ADDR:PORT: the machine comes from a live migration
  // received there; --disk and --net as for --restore.
  std::string incoming;
  // --replica-of tcp:ADDR:PORT: the machine is a passive replica kept up to
  // date from a running guest's checkpoints received there (keelctl
  // replicate), run only on keelctl takeover or a switchover; --disk and
  // --net as for --restore.
  std::string replica_of;
  // --jail UID[:GID]: run as that user in a pid and mount namespace of
  // its own, with a seccomp filter (vmm/jail/process_jail.h).
  std::optional<jail::JailUser> jail;
  bool help = false;
  // The guest comes over a stream (--incoming or --replica-of): its disk
  // images are not this process's until it takes over the guest.
  bool streamed() const { return !incoming.empty() || !replica_of.empty(); }
  // From KEEL_KVM_DEVICE, for tests that need a missing or broken KVM
  // (ignored in jailed mode).
  std::string kvm_device = "/dev/kvm";
};

// Throws InputError with one line naming the bad argument. Checks only what
// needs no host knowledge; sizes against the host are checked at start-up.
VmmOptions parse_vmm_options(const std::vector<std::string>& args);

// A configuration from elsewhere (a snapshot, a migration stream), checked
// as the command line is: vCPU and memory bounds, device count, disk
// serials, tap names and MACs. Throws InputError starting with `source`.
void check_vm_config(const state::v1::VmConfig& config, const std::string& source);

// The snapshot's configuration with the command line's --disk and --net in
// place of its disks and taps: as many as the snapshot has, none taken from
// it (a snapshot file authenticates nothing, so it never picks host files).
// The guest's view stays the snapshot's: a disk keeps its serial and
// read-only flag, an adapter its MAC; a --disk or --net that says otherwise
// is refused by name.
// `from` names where the configuration came from in messages.
state::v1::VmConfig config_for_restore(const VmmOptions& options,
                                       const state::v1::VmConfig& snapshot,
                                       const std::string& from = "snapshot");

extern const char* const kVmmUsage;

inline constexpr uint64_t kMinGuestMemory = 16ull << 20;
inline constexpr uint64_t kMaxGuestMemory = 1ull << 46;
inline constexpr uint32_t kMaxVcpus = 255;       // xAPIC IDs, one MADT entry each
inline constexpr size_t kMaxVirtioDevices = 24;  // PCI slots 1-24 on bus 0

}  // namespace keel
