// A child process that this process started and owns: killed and reaped
// when the owner goes away, so that no test or tool leaves one behind.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/unique_fd.h"

namespace keel {

class ChildProcess {
 public:
  struct Options {
    bool capture_stdout = false;  // else inherited
    bool capture_stderr = false;
    std::vector<std::string> extra_env;  // NAME=VALUE added to this process's environment
  };
  // Starts argv[0] (searched in PATH). Throws std::system_error when it
  // cannot be started; exec failures come back as exit code 127.
  static ChildProcess spawn(const std::vector<std::string>& argv, const Options& options);

  ChildProcess(ChildProcess&&) noexcept;
  ChildProcess& operator=(ChildProcess&&) noexcept;
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ~ChildProcess();

  pid_t pid() const { return pid_; }
  int stdout_fd() const { return stdout_.get(); }
  int stderr_fd() const { return stderr_.get(); }
  void signal(int signo) const;
  // Exit code, or 128 + signal number; waits until the child ends.
  int wait();
  std::optional<int> try_wait();

 private:
  ChildProcess() = default;
  void kill_and_reap();
  pid_t pid_ = -1;
  std::optional<int> status_;
  UniqueFd stdout_;
  UniqueFd stderr_;
};

// Runs a command to its end, collecting its output, killing it after
// `timeout` (then timed_out is set and the exit code is 124).
struct CommandResult {
  int exit_code;
  bool timed_out;
  std::string out;
  std::string err;
};
// Called with what the command printed so far and its PID each time more
// arrived; returning true ends the command at once, as a timeout would.
using CommandWatch = std::function<bool(const CommandResult& so_far, pid_t pid)>;
CommandResult run_command(const std::vector<std::string>& argv, std::chrono::milliseconds timeout,
                          const std::vector<std::string>& extra_env = {},
                          const CommandWatch& watch = {});

}  // namespace keel
