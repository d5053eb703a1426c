#include "common/log.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <string>
#include <thread>
#include <vector>

#include "common/unique_fd.h"

namespace keel::log {
namespace {

// Lines written while it lives land in a pipe instead of stderr.
class Captured {
 public:
  Captured() {
    int fds[2];
    EXPECT_EQ(::pipe2(fds, O_CLOEXEC | O_NONBLOCK), 0);
    read_.reset(fds[0]);
    write_.reset(fds[1]);
    ::fcntl(write_.get(), F_SETPIPE_SZ, 1 << 20);
    set_output_fd(write_.get());
  }
  ~Captured() {
    set_output_fd(STDERR_FILENO);
    set_threshold(Level::kInfo);
  }
  std::string text() {
    std::string out;
    char buf[4096];
    ssize_t n;
    while ((n = ::read(read_.get(), buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
    return out;
  }

 private:
  UniqueFd read_, write_;
};

TEST(Log, OneLineEachWithTheProgramAndLevel) {
  Captured out;
  init("keel-test");
  error("disk0: cannot open /x: No such file or directory");
  warning("virtio-blk: host failure");
  info("restored");
  debug("not shown at the default threshold");
  EXPECT_EQ(out.text(),
            "keel-test: disk0: cannot open /x: No such file or directory\n"
            "keel-test: warning: virtio-blk: host failure\n"
            "keel-test: restored\n");
  set_threshold(Level::kDebug);
  debug("now shown\n");
  set_threshold(Level::kError);
  warning("hidden");
  EXPECT_EQ(out.text(), "keel-test: debug: now shown\n");
}

TEST(Log, KeelLogPicksTheThresholdAndABadValueIsSaid) {
  Captured out;
  ::setenv("KEEL_LOG", "warning", 1);
  init("keel-test");
  info("hidden");
  warning("shown");
  ::setenv("KEEL_LOG", "loud", 1);
  set_threshold(Level::kInfo);
  init("keel-test");
  ::unsetenv("KEEL_LOG");
  EXPECT_EQ(out.text(),
            "keel-test: warning: shown\n"
            "keel-test: warning: KEEL_LOG=loud is not error, warning, info or debug; using info\n");
}

TEST(Log, LinesFromManyThreadsDoNotInterleave) {
  Captured out;
  init("t");
  std::vector<std::thread> threads;
  const std::string body(200, 'x');
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 100; ++i) info(std::to_string(t) + body);
    });
  }
  for (auto& t : threads) t.join();
  const std::string text = out.text();
  size_t lines = 0, start = 0;
  for (size_t nl; (nl = text.find('\n', start)) != std::string::npos; start = nl + 1, ++lines) {
    const std::string line = text.substr(start, nl - start);
    ASSERT_EQ(line.size(), 3 + 1 + body.size()) << line;
    ASSERT_EQ(line.substr(4), body) << line;
  }
  EXPECT_EQ(lines, 400u);
}

// A guest that triggers the same complaint a million times gets a few lines.
TEST(Log, ARateLimitLetsABurstThroughThenCountsWhatItHeldBack) {
  Captured out;
  init("t");
  RateLimit limit(2, std::chrono::seconds(60));
  const auto t0 = RateLimit::Clock::time_point{} + std::chrono::hours(1);
  for (int i = 0; i < 1000; ++i)
    limit.write(Level::kWarning, "queue 0: bad", t0 + std::chrono::milliseconds(i));
  EXPECT_EQ(limit.suppressed_total(), 998u);
  limit.write(Level::kWarning, "queue 0: bad", t0 + std::chrono::seconds(61));
  EXPECT_EQ(out.text(),
            "t: warning: queue 0: bad\n"
            "t: warning: queue 0: bad\n"
            "t: warning: queue 0: bad (998 similar messages held back before this one)\n");
}

}  // namespace
}  // namespace keel::log
