#include "common/log.h"

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <string>

namespace keel::log {
namespace {

std::string& program() {
  static std::string name = "keel";
  return name;
}
std::atomic<int> threshold{static_cast<int>(Level::kInfo)};
std::atomic<int> output_fd{STDERR_FILENO};

const char* level_word(Level level) {
  switch (level) {
    case Level::kError:
    case Level::kInfo:
      return "";  // errors say what failed; information needs no label
    case Level::kWarning:
      return "warning: ";
    case Level::kDebug:
      return "debug: ";
  }
  return "";
}

}  // namespace

void init(std::string_view name) {
  program() = std::string(name);
  const char* value = std::getenv("KEEL_LOG");
  if (!value || !*value) return;
  const std::string_view v(value);
  if (v == "error") {
    set_threshold(Level::kError);
  } else if (v == "warning") {
    set_threshold(Level::kWarning);
  } else if (v == "info") {
    set_threshold(Level::kInfo);
  } else if (v == "debug") {
    set_threshold(Level::kDebug);
  } else {
    warning("KEEL_LOG=" + std::string(v) + " is not error, warning, info or debug; using info");
  }
}

void set_threshold(Level level) {
  threshold.store(static_cast<int>(level));
}

bool enabled(Level level) {
  return static_cast<int>(level) <= threshold.load(std::memory_order_relaxed);
}

void set_output_fd(int fd) {
  output_fd.store(fd);
}

void write(Level level, std::string_view message) {
  if (!enabled(level)) return;
  std::string line = program() + ": " + level_word(level);
  line.append(message);
  if (line.empty() || line.back() != '\n') line.push_back('\n');
  // One write(2) per line: lines from vCPU threads and the event loop do
  // not interleave. A log that cannot be written is not worth failing for.
  const int fd = output_fd.load();
  size_t done = 0;
  while (done < line.size()) {
    const ssize_t n = ::write(fd, line.data() + done, line.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    done += static_cast<size_t>(n);
  }
}

void RateLimit::write(Level level, std::string_view message, Clock::time_point now) {
  uint64_t held_back = 0;
  {
    std::lock_guard guard(mutex_);
    if (!started_ || now - window_start_ >= period_) {
      started_ = true;
      window_start_ = now;
      in_window_ = 0;
    }
    if (in_window_ >= burst_) {
      ++held_back_;
      ++suppressed_total_;
      return;
    }
    ++in_window_;
    held_back = held_back_;
    held_back_ = 0;
  }
  if (held_back == 0) {
    log::write(level, message);
  } else {
    log::write(level, std::string(message) + " (" + std::to_string(held_back) +
                          " similar messages held back before this one)");
  }
}

uint64_t RateLimit::suppressed_total() const {
  std::lock_guard guard(mutex_);
  return suppressed_total_;
}

}  // namespace keel::log
