#include "tools/migbench/timed_console.h"

#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>

namespace keel::migbench {

TimedConsole::TimedConsole(const std::vector<std::string>& argv) {
  ChildProcess::Options options;
  options.capture_stdout = true;
  options.capture_stderr = true;
  child_.emplace(ChildProcess::spawn(argv, options));
  reader_ = std::thread([this] { read_output(); });
}

TimedConsole::~TimedConsole() {
  if (!exit_code_ && !child_->try_wait()) child_->signal(SIGKILL);
  reader_.join();
}

void TimedConsole::read_output() {
  // The observer must not wait for a CPU while the guests spin on all of
  // them (a line read late is a pause that did not happen): real-time
  // priority where allowed (root), else as it is.
  sched_param priority{};
  priority.sched_priority = 10;
  ::pthread_setschedparam(::pthread_self(), SCHED_FIFO, &priority);
  pollfd fds[2] = {{child_->stdout_fd(), POLLIN, 0}, {child_->stderr_fd(), POLLIN, 0}};
  int open = 2;
  char buf[16384];
  while (open > 0) {
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    const auto now = Clock::now();
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
      if (n <= 0) {
        fds[i].fd = -1;
        --open;
        continue;
      }
      std::lock_guard lock(mutex_);
      std::vector<TimedLine>& lines = i == 1 ? error_lines_ : lines_;
      std::string& partial = i == 1 ? error_partial_ : partial_;
      for (ssize_t k = 0; k < n; ++k) {
        if (buf[k] == '\n') {
          lines.push_back({now, std::move(partial)});
          partial.clear();
        } else if (buf[k] != '\r') {
          partial.push_back(buf[k]);
        }
      }
      changed_.notify_all();
    }
  }
  std::lock_guard lock(mutex_);
  closed_ = true;
  changed_.notify_all();
}

bool TimedConsole::wait_line(const std::string& prefix, std::chrono::milliseconds timeout,
                             size_t from) {
  std::unique_lock lock(mutex_);
  size_t seen = from;
  return changed_.wait_for(lock, timeout, [&] {
    for (; seen < lines_.size(); ++seen) {
      if (lines_[seen].text.rfind(prefix, 0) == 0) return true;
    }
    return closed_;
  }) && seen < lines_.size();
}

bool TimedConsole::wait_lines(const std::string& prefix, size_t count,
                              std::chrono::milliseconds timeout, size_t from) {
  std::unique_lock lock(mutex_);
  size_t seen = from, found = 0;
  return changed_.wait_for(lock, timeout, [&] {
    for (; seen < lines_.size(); ++seen) found += lines_[seen].text.rfind(prefix, 0) == 0;
    return found >= count || closed_;
  }) && found >= count;
}

bool TimedConsole::wait_error(const std::string& text, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  auto said = [&] {
    for (const auto& l : error_lines_)
      if (l.text.find(text) != std::string::npos) return true;
    return error_partial_.find(text) != std::string::npos;
  };
  return changed_.wait_for(lock, timeout, [&] { return said() || closed_; }) && said();
}

std::vector<TimedLine> TimedConsole::lines() const {
  std::lock_guard lock(mutex_);
  return lines_;
}

std::string TimedConsole::unfinished() const {
  std::lock_guard lock(mutex_);
  return partial_;
}

std::vector<TimedLine> TimedConsole::error_lines() const {
  std::lock_guard lock(mutex_);
  return error_lines_;
}

std::string TimedConsole::errors() const {
  std::lock_guard lock(mutex_);
  std::string all;
  for (const auto& l : error_lines_) all += l.text + "\n";
  return all + error_partial_;
}

void TimedConsole::signal(int signo) {
  if (!exit_code_) child_->signal(signo);
}

std::optional<int> TimedConsole::wait_exit(std::chrono::milliseconds timeout) {
  if (exit_code_) return exit_code_;
  {
    std::unique_lock lock(mutex_);
    if (!changed_.wait_for(lock, timeout, [this] { return closed_; })) {
      lock.unlock();
      child_->signal(SIGKILL);
      return std::nullopt;
    }
  }
  exit_code_ = child_->wait();
  return exit_code_;
}

}  // namespace keel::migbench
