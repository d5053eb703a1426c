// Keel's programs' diagnostics: one line per message, written whole from
// any thread, below a threshold the operator picks with KEEL_LOG (error,
// warning, info, debug; default info). On stderr each line carries the
// time, the program, the VM's or host's name and the level:
//   2026-12-07T12:27:13.123Z keel-vmm[web1]: warning: virtio-blk: ...
// When stderr is the journal's (systemd sets JOURNAL_STREAM), lines carry
// their priority as "<4>" instead, and the journal adds the time. Messages
// a guest can cause again and again go through a RateLimit, so that no
// guest can flood the host's logs; what they held back is counted.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string_view>

namespace keel::log {

enum class Level : int { kError = 0, kWarning = 1, kInfo = 2, kDebug = 3 };

// Once, first thing in main: the program's name for every line, and the
// threshold from KEEL_LOG (an unknown value is said and ignored).
void init(std::string_view program);
// The VM's (keel-vmm --name) or host's (keel-agent) name for every line.
void set_name(std::string_view name);
void set_threshold(Level level);
bool enabled(Level level);
// Where lines go (stderr unless a test says otherwise); whether that is
// the journal is looked at again.
void set_output_fd(int fd);
// Lines every RateLimit of this process held back.
uint64_t suppressed_total();

void write(Level level, std::string_view message);
inline void error(std::string_view message) {
  write(Level::kError, message);
}
inline void warning(std::string_view message) {
  write(Level::kWarning, message);
}
inline void info(std::string_view message) {
  write(Level::kInfo, message);
}
inline void debug(std::string_view message) {
  write(Level::kDebug, message);
}

// At most `burst` messages per `period`; the first one let through after
// some were held back says how many.
class RateLimit {
 public:
  using Clock = std::chrono::steady_clock;
  explicit RateLimit(unsigned burst = 5, Clock::duration period = std::chrono::minutes(1))
      : burst_(burst), period_(period) {}
  void write(Level level, std::string_view message) { write(level, message, Clock::now()); }
  void write(Level level, std::string_view message, Clock::time_point now);
  // For what is not a log line (an event): whether one may go now, and
  // then how many were held back since the last that went.
  bool allow(uint64_t& held_back, Clock::time_point now = Clock::now());
  uint64_t suppressed_total() const;

 private:
  const unsigned burst_;
  const Clock::duration period_;
  mutable std::mutex mutex_;
  Clock::time_point window_start_{};
  bool started_ = false;
  unsigned in_window_ = 0;
  uint64_t held_back_ = 0;  // since the last line let through
  uint64_t suppressed_total_ = 0;
};

}  // namespace keel::log
