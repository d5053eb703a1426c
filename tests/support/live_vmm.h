// keel-vmm running as a child process with a control socket, for tests that
// talk to the VMM while its guest runs: the console is read line by line as
// it arrives, keelctl runs against the socket, and the process is killed and
// its socket directory removed when the test is done (also on failure).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/child_process.h"

namespace keel::testing {

class LiveVmm {
 public:
  // keel-vmm `args` plus --api-socket in a fresh private directory under
  // /tmp (a tmpfs of its own inside the KVM test host).
  explicit LiveVmm(const std::vector<std::string>& args);
  ~LiveVmm();
  LiveVmm(const LiveVmm&) = delete;
  LiveVmm& operator=(const LiveVmm&) = delete;

  const std::string& socket_path() const { return socket_; }
  pid_t pid() const { return child_->pid(); }

  struct Line {
    size_t index;  // position in the console, from 0
    std::string text;
  };
  // The first console line at position `from` or later that starts with
  // `prefix`, waiting up to `timeout` for it to arrive; nullopt if it did
  // not (or keel-vmm ended first).
  std::optional<Line> wait_line(const std::string& prefix, size_t from = 0,
                                std::chrono::milliseconds timeout = std::chrono::seconds(120));
  // Every console line so far that starts with `prefix`.
  std::vector<Line> lines(const std::string& prefix) const;
  // Every console line so far, as text.
  std::vector<std::string> console() const;
  // Once the output has closed: the complete lines, and the line the guest
  // was printing when it stopped (a kill mid-line), if any.
  struct Stopped {
    std::vector<std::string> lines;
    std::string unfinished;
  };
  Stopped stopped_console() const;
  size_t line_count() const;
  // True once keel-vmm's console output has ended (it exited).
  bool output_closed() const;

  // keel-vmm's exit code once it has ended, waiting up to `timeout`; then
  // it is killed and nullopt returned.
  std::optional<int> wait_exit(std::chrono::milliseconds timeout);

  // keelctl --socket <this socket> `args`.
  CommandResult keelctl(const std::vector<std::string>& args,
                        std::chrono::milliseconds timeout = std::chrono::seconds(60)) const;

  // Console and stderr so far, for failure messages.
  std::string describe() const;
  // keel-vmm's own messages (stderr) so far.
  std::string errors() const;
  // For keel-vmm --incoming (or --replica-of, with its `says`): the address
  // it says it listens on ("tcp:127.0.0.1:40123", the port filled in),
  // waiting up to `timeout` for the line; empty if it ended or said nothing
  // by then.
  std::string incoming_address(std::chrono::milliseconds timeout = std::chrono::seconds(60),
                               const std::string& says = "waiting for a migration on ");

 private:
  void read_output();

  std::string dir_;
  std::string socket_;
  std::optional<ChildProcess> child_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<std::string> console_;
  std::string partial_;
  std::string err_;
  bool output_closed_ = false;
  bool ended_mid_line_ = false;
  std::optional<int> exit_code_;
  std::thread reader_;
};

const char* keelctl_path();

// A restored guest's console `after` continuing a stopped one: a line the
// guest was printing when it was stopped is finished by the restored guest,
// so its first line is joined to `before.unfinished`.
std::vector<std::string> continue_console(const LiveVmm::Stopped& before,
                                          std::vector<std::string> after);

// The KVM test host emulates AMD-V with TCG, and about one nested boot of a
// stock kernel in fifty dies there in a triple fault before init (QEMU's
// guests in the same box too); now and then one of its vCPUs stops making
// progress instead, and the guest kernel reports an RCU stall, again before
// init. True, after saying so on stderr (as `who`), when `vmm` is such a
// boot: inside the box only, nothing from the guest's init ("keel-guest: "),
// no panic, oops or BUG, and exit 11 (triple fault) or the stall report (the
// VMM is then killed). The caller then boots once more.
bool box_boot_glitch(LiveVmm& vmm, const std::string& who);
// Inside the box only: keel-vmm ended (within 10 s) in a triple fault
// (exit 11) with the guest kernel silent (no panic, oops or BUG).
bool box_triple_fault(LiveVmm& vmm);

// wait_line for a booting guest's `prefix` from the start of its console,
// ending early (nullopt) when keel-vmm ended or, inside the box, when the
// guest kernel reports an RCU stall before init (see box_boot_glitch): such
// a boot never gets there, so its caller need not wait out `timeout`.
std::optional<LiveVmm::Line> wait_boot_line(LiveVmm& vmm, const std::string& prefix,
                                            std::chrono::milliseconds timeout);

}  // namespace keel::testing
