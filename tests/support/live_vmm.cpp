#include "tests/support/live_vmm.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>

#include "tests/support/vmm_run.h"

namespace keel::testing {

const char* keelctl_path() {
  return KEEL_KEELCTL_PATH;
}

LiveVmm::LiveVmm(const std::vector<std::string>& args) {
  std::string templ = "/tmp/keel-live-vmm-XXXXXX";
  if (!::mkdtemp(templ.data()))
    throw std::runtime_error("mkdtemp /tmp/keel-live-vmm-XXXXXX failed");
  dir_ = templ;
  socket_ = dir_ + "/api.sock";
  std::vector<std::string> argv{vmm_path()};
  argv.insert(argv.end(), args.begin(), args.end());
  argv.insert(argv.end(), {"--api-socket", socket_});
  ChildProcess::Options options;
  options.capture_stdout = true;
  options.capture_stderr = true;
  try {
    child_.emplace(ChildProcess::spawn(argv, options));
  } catch (...) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
    throw;
  }
  reader_ = std::thread([this] { read_output(); });
}

LiveVmm::~LiveVmm() {
  // Killed if still running; the pipes then close and the reader ends.
  if (!exit_code_ && !child_->try_wait()) child_->signal(SIGKILL);
  reader_.join();
  child_.reset();
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

// Until both pipes are closed: stdout split into lines, stderr as it comes.
void LiveVmm::read_output() {
  pollfd fds[2] = {{child_->stdout_fd(), POLLIN, 0}, {child_->stderr_fd(), POLLIN, 0}};
  int open = 2;
  char buf[8192];
  while (open > 0) {
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      std::lock_guard lock(mutex_);
      if (n <= 0) {
        fds[i].fd = -1;
        --open;
        if (i == 0 && !partial_.empty()) {
          if (partial_.back() == '\r') partial_.pop_back();
          console_.push_back(std::move(partial_));
          partial_.clear();
          ended_mid_line_ = true;
        }
      } else if (i == 1) {
        err_.append(buf, static_cast<size_t>(n));
      } else {
        partial_.append(buf, static_cast<size_t>(n));
        size_t start = 0;
        for (size_t nl; (nl = partial_.find('\n', start)) != std::string::npos; start = nl + 1) {
          std::string line = partial_.substr(start, nl - start);
          if (!line.empty() && line.back() == '\r') line.pop_back();
          console_.push_back(std::move(line));
        }
        partial_.erase(0, start);
      }
      changed_.notify_all();
    }
  }
  std::lock_guard lock(mutex_);
  output_closed_ = true;
  changed_.notify_all();
}

std::optional<LiveVmm::Line> LiveVmm::wait_line(const std::string& prefix, size_t from,
                                                std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  size_t checked = from;
  for (;;) {
    for (; checked < console_.size(); ++checked) {
      if (console_[checked].rfind(prefix, 0) == 0) return Line{checked, console_[checked]};
    }
    if (output_closed_) return std::nullopt;
    if (changed_.wait_until(lock, deadline) == std::cv_status::timeout &&
        checked == console_.size()) {
      return std::nullopt;
    }
  }
}

std::vector<LiveVmm::Line> LiveVmm::lines(const std::string& prefix) const {
  std::lock_guard lock(mutex_);
  std::vector<Line> out;
  for (size_t i = 0; i < console_.size(); ++i) {
    if (console_[i].rfind(prefix, 0) == 0) out.push_back(Line{i, console_[i]});
  }
  return out;
}

std::vector<std::string> LiveVmm::console() const {
  std::lock_guard lock(mutex_);
  return console_;
}

LiveVmm::Stopped LiveVmm::stopped_console() const {
  std::lock_guard lock(mutex_);
  Stopped s{console_, ""};
  if (ended_mid_line_ && !s.lines.empty()) {
    s.unfinished = std::move(s.lines.back());
    s.lines.pop_back();
  }
  return s;
}

std::vector<std::string> continue_console(const LiveVmm::Stopped& before,
                                          std::vector<std::string> after) {
  if (!before.unfinished.empty()) {
    if (after.empty()) after.emplace_back();
    after.front() = before.unfinished + after.front();
  }
  return after;
}

std::string LiveVmm::errors() const {
  std::lock_guard lock(mutex_);
  return err_;
}

std::string LiveVmm::incoming_address(std::chrono::milliseconds timeout, const std::string& says) {
  std::unique_lock lock(mutex_);
  std::string address;
  changed_.wait_for(lock, timeout, [&] {
    const auto at = err_.find(says);
    const auto end = at == std::string::npos ? at : err_.find('\n', at);
    if (end != std::string::npos) address = err_.substr(at + says.size(), end - at - says.size());
    return !address.empty() || output_closed_;
  });
  return address;
}

size_t LiveVmm::line_count() const {
  std::lock_guard lock(mutex_);
  return console_.size();
}

bool LiveVmm::output_closed() const {
  std::lock_guard lock(mutex_);
  return output_closed_;
}

std::optional<int> LiveVmm::wait_exit(std::chrono::milliseconds timeout) {
  if (exit_code_) return exit_code_;
  {
    std::unique_lock lock(mutex_);
    if (!changed_.wait_for(lock, timeout, [this] { return output_closed_; })) {
      lock.unlock();
      child_->signal(SIGKILL);
      return std::nullopt;
    }
  }
  exit_code_ = child_->wait();
  return exit_code_;
}

CommandResult LiveVmm::keelctl(const std::vector<std::string>& args,
                               std::chrono::milliseconds timeout) const {
  std::vector<std::string> argv{keelctl_path(), "--socket", socket_};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_command(argv, timeout);
}

std::string LiveVmm::describe() const {
  std::lock_guard lock(mutex_);
  std::string text = "console:\n";
  for (const auto& l : console_) text += l + "\n";
  if (!partial_.empty()) text += partial_ + " (no newline yet)\n";
  return text + "keel-vmm stderr:\n" + err_;
}

namespace {

bool inside_box() {
  const char* where = std::getenv("KEEL_KVM_WHERE");
  return where != nullptr && std::string(where) == "box";
}

// The guest kernel's RCU stall report, before anything from its init.
bool stalled_before_init(const LiveVmm& vmm) {
  if (!vmm.lines("keel-guest: ").empty()) return false;
  for (const auto& line : vmm.console()) {
    if (line.find("rcu: INFO: ") != std::string::npos &&
        line.find("detected stalls") != std::string::npos) {
      return true;
    }
  }
  return false;
}

}  // namespace

namespace {

// Nothing from the guest's kernel says it failed itself.
bool kernel_silent(const LiveVmm& vmm) {
  const std::string text = vmm.describe();
  for (const char* bad : {"Kernel panic", "Oops", "BUG:"}) {
    if (text.find(bad) != std::string::npos) return false;
  }
  return true;
}

}  // namespace

bool box_triple_fault(LiveVmm& vmm) {
  return inside_box() && vmm.wait_exit(std::chrono::seconds(10)) == 11 && kernel_silent(vmm);
}

bool box_boot_glitch(LiveVmm& vmm, const std::string& who) {
  if (!inside_box()) return false;
  if (!vmm.lines("keel-guest: ").empty()) return false;
  if (stalled_before_init(vmm)) {
    if (!kernel_silent(vmm)) return false;
    vmm.wait_exit(std::chrono::milliseconds(0));  // killed
    std::fprintf(stderr, "%s: box glitch? a vCPU stalled before init; booting again\n",
                 who.c_str());
    ::testing::Test::RecordProperty("box_retry", "RCU stall before init");
    return true;
  }
  if (!box_triple_fault(vmm)) return false;
  std::fprintf(stderr, "%s: box glitch? triple fault before init; booting again\n", who.c_str());
  ::testing::Test::RecordProperty("box_retry", "triple fault before init");
  return true;
}

std::optional<LiveVmm::Line> wait_boot_line(LiveVmm& vmm, const std::string& prefix,
                                            std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return std::nullopt;
    if (auto line = vmm.wait_line(prefix, 0, std::min(left, std::chrono::milliseconds(5000))))
      return line;
    if (vmm.output_closed()) return std::nullopt;
    if (inside_box() && stalled_before_init(vmm)) return std::nullopt;
  }
}

}  // namespace keel::testing
