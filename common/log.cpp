#include "common/log.h"

#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <string>

namespace keel::log {
namespace {

// Set once at start-up (init, set_name), before threads log.
std::string& program() {
  static std::string name = "keel";
  return name;
}
std::atomic<int> threshold{static_cast<int>(Level::kInfo)};
std::atomic<int> output_fd{STDERR_FILENO};
std::atomic<bool> to_journal{false};
std::atomic<uint64_t> suppressed{0};

const char* level_word(Level level) {
  switch (level) {
    case Level::kError:
      return "error: ";
    case Level::kWarning:
      return "warning: ";
    case Level::kInfo:
      return "info: ";
    case Level::kDebug:
      return "debug: ";
  }
  return "";
}

// sd-daemon(3)'s priority prefixes, which the journal reads off a stream.
const char* journal_priority(Level level) {
  switch (level) {
    case Level::kError:
      return "<3>";
    case Level::kWarning:
      return "<4>";
    case Level::kInfo:
      return "<6>";
    case Level::kDebug:
      return "<7>";
  }
  return "<6>";
}

// systemd.exec(5): JOURNAL_STREAM is "DEVICE:INODE" of the stream it
// connected; only a descriptor still on that stream is the journal's.
bool is_journal(int fd) {
  const char* stream = std::getenv("JOURNAL_STREAM");
  if (stream == nullptr) return false;
  unsigned long long dev = 0, ino = 0;
  if (std::sscanf(stream, "%llu:%llu", &dev, &ino) != 2) return false;
  struct stat st {};
  return ::fstat(fd, &st) == 0 && st.st_dev == dev && st.st_ino == ino;
}

// "2026-12-07T12:27:13.123Z "
std::string utc_now() {
  const auto now = std::chrono::system_clock::now();
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch());
  const std::time_t seconds = static_cast<std::time_t>(ms.count() / 1000);
  std::tm tm{};
  ::gmtime_r(&seconds, &tm);
  char text[40];
  const size_t n = std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(text + n, sizeof text - n, ".%03dZ ", static_cast<int>(ms.count() % 1000));
  return text;
}

}  // namespace

void init(std::string_view name) {
  program() = std::string(name);
  to_journal.store(is_journal(output_fd.load()));
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

void set_name(std::string_view name) {
  const std::string base = program().substr(0, program().find('['));
  program() = name.empty() ? base : base + "[" + std::string(name) + "]";
}

void set_output_fd(int fd) {
  output_fd.store(fd);
  to_journal.store(is_journal(fd));
}

uint64_t suppressed_total() {
  return suppressed.load(std::memory_order_relaxed);
}

void write(Level level, std::string_view message) {
  if (!enabled(level)) return;
  std::string line = to_journal.load(std::memory_order_relaxed)
                         ? journal_priority(level) + program() + ": "
                         : utc_now() + program() + ": " + level_word(level);
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

bool RateLimit::allow(uint64_t& held_back, Clock::time_point now) {
  std::lock_guard guard(mutex_);
  if (!started_ || now - window_start_ >= period_) {
    started_ = true;
    window_start_ = now;
    in_window_ = 0;
  }
  if (in_window_ >= burst_) {
    ++held_back_;
    ++suppressed_total_;
    suppressed.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  ++in_window_;
  held_back = held_back_;
  held_back_ = 0;
  return true;
}

void RateLimit::write(Level level, std::string_view message, Clock::time_point now) {
  uint64_t held_back = 0;
  if (!allow(held_back, now)) return;
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
