// keel-vmm's jailed mode (--jail UID[:GID]): what stands between a future
// emulation bug and the host. Two steps, because KVM ties a VM to the
// process that made it:
//  1. enter_pid_namespace(), first thing: keel-vmm forks into a pid
//     namespace of its own; the parent stays behind as a small supervisor
//     (forwards SIGINT/SIGTERM/SIGHUP, exits with the child's status,
//     removes the API socket) and never returns.
//  2. enter_jail(), once the machine is built (every disk, tap, file and
//     socket it needs is open): an empty read-only root in a private mount
//     namespace, the unprivileged user, no new privileges, not dumpable,
//     resource limits, and the process's system-call filter
//     (syscall_filter.h).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

namespace keel::jail {

struct JailUser {
  uid_t uid = 0;
  gid_t gid = 0;
};

// "UID" or "UID:GID", numeric, not 0 (root). InputError otherwise.
JailUser parse_jail_user(const std::string& text);

// Closes every descriptor above stderr that keel-vmm did not open itself:
// a jailed VMM holds nothing it was handed by accident.
void close_inherited_fds();

// Step 1. Returns in the child (PID 1 of the new namespace, root still,
// killed if the supervisor dies); the supervisor exits the process with
// the child's status. `api_socket` (may be empty) is removed when the
// child is gone: the child cannot reach it any more.
void enter_pid_namespace(const std::string& api_socket);

struct JailLimits {
  uint64_t largest_file = 0;  // the biggest file the VMM writes (a disk, a memory image)
  unsigned threads = 0;       // vCPUs and the VMM's own threads
  std::string writable_dir;   // --snapshot-root (empty: none); must belong to the user
};

// Step 2. Throws InputError (naming the setting and its fix) or
// std::system_error; on any failure the caller must not run the guest.
void enter_jail(const JailUser& user, const JailLimits& limits);

// The PID of the process the operator started, as the host sees it: in
// jailed mode the supervisor's (signals sent there reach the VMM; getpid()
// says 1 in the jail's pid namespace).
pid_t started_pid();

}  // namespace keel::jail
