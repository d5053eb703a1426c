// Starting a pool VM's keel-vmm as a process of its own: keelctl's `vm
// start` and keel-agent's supervisor. The VMM is detached (a new session,
// reparented to init, so that it outlives whoever started it: an agent
// restarts without taking its guests down), its stdout and stderr appended
// to a log, its PID in storage::vm_pid_file (storage/vm_runtime.h).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "proto/control.pb.h"

namespace keel::cluster {

struct VmmLaunch {
  std::string vm;                 // the VM's name (its run directory, socket, PID file)
  std::vector<std::string> argv;  // keel-vmm and its arguments (with --api-socket)
  std::filesystem::path log;      // stdout and stderr, appended
  // When the VMM counts as started; empty: its control socket answers (a
  // keel-vmm --incoming opens it only once its source connected).
  std::function<bool()> ready;
};

// Starts it and returns its PID once its control socket answers. One start
// of a VM at a time (a lock in its run directory); InputError when its
// keel-vmm runs already, or when it ends at start (with its log's tail);
// std::runtime_error when it does not answer within 30 s (it is killed).
// The run directory also gets keel-vmm.log, a link to the log. The run
// before's console (--serial file=PATH) is kept as PATH.1.
pid_t launch_vmm(const VmmLaunch& launch);

// keel-vmm: $KEEL_VMM, beside the running program, in the build tree
// (from tools/keelctl or keel-agent), or on PATH.
std::string vmm_program();

// A request to the VM's keel-vmm on its control socket; its answer, or
// ControlClientError when there was none within `wait`.
keel::api::v1::Response call_vmm(const std::string& vm, keel::api::v1::Request request,
                                 std::chrono::milliseconds wait);

// A TCP port free on `address` now (the kernel's choice) for a keel-vmm
// that waits for a stream there (--incoming, --replica-of); IPv4.
uint16_t free_port(const std::string& address);
// Whether a socket of this network namespace listens on TCP `port`: such a
// keel-vmm counts as started then.
bool listening(uint16_t port);

// The last line of the file that is not empty: a VMM's last words in its
// log (why it stopped). Empty when there is none.
std::string last_line(const std::filesystem::path& file);

}  // namespace keel::cluster
