#include "common/log.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <regex>
#include <sstream>
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
  // What was written, each line's time checked and taken off.
  std::string text() {
    std::string raw, out;
    char buf[4096];
    ssize_t n;
    while ((n = ::read(read_.get(), buf, sizeof buf)) > 0) raw.append(buf, static_cast<size_t>(n));
    const std::regex stamp("^\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d\\.\\d{3}Z ");
    std::istringstream lines(raw);
    for (std::string line; std::getline(lines, line);) {
      std::smatch m;
      EXPECT_TRUE(std::regex_search(line, m, stamp)) << "no time: " << line;
      out += m.suffix().str() + "\n";
    }
    return out;
  }
  // As written (the journal's lines have no time).
  std::string raw() {
    std::string out;
    char buf[4096];
    ssize_t n;
    while ((n = ::read(read_.get(), buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
    return out;
  }
  int fd() const { return write_.get(); }

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
            "keel-test: error: disk0: cannot open /x: No such file or directory\n"
            "keel-test: warning: virtio-blk: host failure\n"
            "keel-test: info: restored\n");
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
    ASSERT_EQ(line.size(), 9 + 1 + body.size()) << line;
    ASSERT_EQ(line.substr(10), body) << line;
  }
  EXPECT_EQ(lines, 400u);
}

TEST(Log, TheNameOfTheVmOrHostFollowsTheProgram) {
  Captured out;
  init("keel-vmm");
  set_name("web1");
  warning("a");
  set_name("web2");
  info("b");
  set_name("");
  info("c");
  EXPECT_EQ(out.text(),
            "keel-vmm[web1]: warning: a\n"
            "keel-vmm[web2]: info: b\n"
            "keel-vmm: info: c\n");
}

// Under systemd, stderr is the journal's stream: priorities, no time.
TEST(Log, TheJournalGetsPrioritiesInsteadOfTimes) {
  Captured out;
  struct stat st {};
  ASSERT_EQ(::fstat(out.fd(), &st), 0);
  ::setenv("JOURNAL_STREAM", (std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino)).c_str(),
           1);
  set_output_fd(out.fd());
  init("keel-agent");
  set_name("h1");
  error("e");
  warning("w");
  info("i");
  ::unsetenv("JOURNAL_STREAM");
  set_output_fd(out.fd());
  set_name("");
  EXPECT_EQ(out.raw(), "<3>keel-agent[h1]: e\n<4>keel-agent[h1]: w\n<6>keel-agent[h1]: i\n");
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
  EXPECT_GE(suppressed_total(), 998u) << "the process's count";
  limit.write(Level::kWarning, "queue 0: bad", t0 + std::chrono::seconds(61));
  EXPECT_EQ(out.text(),
            "t: warning: queue 0: bad\n"
            "t: warning: queue 0: bad\n"
            "t: warning: queue 0: bad (998 similar messages held back before this one)\n");
}

}  // namespace
}  // namespace keel::log
