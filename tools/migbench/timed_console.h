// A guest's VMM as a child process whose console lines are stamped with
// the harness's own monotonic clock as they arrive: the outside observer
// that measures a migration's pause (DESIGN.md: measure pauses from outside).
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/child_process.h"

namespace keel::migbench {

using Clock = std::chrono::steady_clock;

struct TimedLine {
  Clock::time_point at;
  std::string text;
};

class TimedConsole {
 public:
  explicit TimedConsole(const std::vector<std::string>& argv);
  // Kills the child if it still runs.
  ~TimedConsole();
  TimedConsole(const TimedConsole&) = delete;
  TimedConsole& operator=(const TimedConsole&) = delete;

  // Waits until a line starting with `prefix` arrived (at index `from` or
  // later); false after `timeout` or when the child's output closed.
  bool wait_line(const std::string& prefix, std::chrono::milliseconds timeout, size_t from = 0);
  // Waits until `count` lines starting with `prefix` arrived at index
  // `from` or later.
  bool wait_lines(const std::string& prefix, size_t count, std::chrono::milliseconds timeout,
                  size_t from = 0);
  // Waits until a line of its stderr holds `text`.
  bool wait_error(const std::string& text, std::chrono::milliseconds timeout);
  std::vector<TimedLine> lines() const;
  // What came after the last end of line (a line the guest is printing).
  std::string unfinished() const;
  std::string errors() const;
  // Its stderr by lines, stamped as they arrived.
  std::vector<TimedLine> error_lines() const;
  // Sends `signo` to the child (SIGSTOP: frozen, as a dead host looks).
  void signal(int signo);
  // The exit code once it ended within `timeout`; else killed, nullopt.
  std::optional<int> wait_exit(std::chrono::milliseconds timeout);

 private:
  void read_output();

  std::optional<ChildProcess> child_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<TimedLine> lines_;
  std::string partial_;
  std::vector<TimedLine> error_lines_;
  std::string error_partial_;
  bool closed_ = false;
  std::optional<int> exit_code_;
  std::thread reader_;
};

}  // namespace keel::migbench
