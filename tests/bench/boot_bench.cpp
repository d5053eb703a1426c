// Benchmark (a program, not a test): time from a VMM's start to its guest's
// ready line, and the VMM's resident memory beyond the guest memory it
// touched. Runs the command several times; prints each run, the medians and
// a JSON line.
//
//   boot_bench [--runs N] [--ready PREFIX] [--rss-at PREFIX] [--label NAME]
//              [--viewer SOCKET] [--keep-going] [--run-timeout SEC] -- CMD [ARGS...]
//
// --ready: the console line that ends the measured time (default
// "testos: ready "); --rss-at: read /proc/PID/status when this line appears
// (default: none); --viewer: CMD serves keel-vmm's control socket at SOCKET
// (--api-socket): every other run has a read-only console client attached
// from the VMM's first moments, reading everything (keelctl console's path),
// and the medians with and without it are compared; --keep-going: a run
// whose guest fails (no ready line within --run-timeout, default 600 s,
// or a non-zero exit) is counted, kept apart from the medians and said,
// and the runs go on (the box's nested guests fail now and then); without
// it the first failure ends the bench. Run it through tools/kvm-run so that
// it says where it ran.
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/child_process.h"
#include "control/console_connection.h"

namespace {

using Clock = std::chrono::steady_clock;

std::map<std::string, long> proc_status(pid_t pid) {
  std::map<std::string, long> values;
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::istringstream rest(line.substr(colon + 1));
    long v;
    if (rest >> v) values[line.substr(0, colon)] = v;
  }
  return values;
}

// Reads the child's stdout until a line starting with `prefix` (which may
// appear after other text on the line, as consoles mix in kernel messages),
// or EOF, or the deadline.
bool wait_for_line(int fd, std::string& buffer, const std::string& prefix, int timeout_ms) {
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  size_t scanned = 0;
  for (;;) {
    for (size_t nl; (nl = buffer.find('\n', scanned)) != std::string::npos;) {
      auto at = buffer.find(prefix, scanned);
      if (at != std::string::npos && at < nl) {
        buffer.erase(0, nl + 1);
        return true;
      }
      scanned = nl + 1;
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
    char buf[4096];
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) return false;
    buffer.append(buf, static_cast<size_t>(n));
  }
}

// A console client attached as soon as the VMM's socket answers, reading
// until the VMM ends; counts what it was sent.
class Viewer {
 public:
  Viewer(std::string socket, Clock::time_point deadline)
      : thread_([this, socket, deadline] { view(socket, deadline); }) {}
  ~Viewer() { thread_.join(); }
  uint64_t bytes() const { return bytes_; }
  bool attached() const { return attached_; }

 private:
  void view(const std::string& socket, Clock::time_point deadline) {
    keel::api::v1::ConsoleAttach attach;
    attach.set_from_start(true);
    std::unique_ptr<keel::ConsoleConnection> console;
    while (!console && Clock::now() < deadline) {
      try {
        console =
            std::make_unique<keel::ConsoleConnection>(socket, attach, std::chrono::seconds(5));
      } catch (const std::exception&) {
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
      }
    }
    if (!console) return;
    attached_ = true;
    keel::api::v1::ConsoleOutput frame;
    while (console->wait_for(frame, std::chrono::seconds(600))) bytes_ += frame.data().size();
  }
  uint64_t bytes_ = 0;
  bool attached_ = false;
  std::thread thread_;
};

void drain(int fd) {
  char buf[4096];
  while (::read(fd, buf, sizeof buf) > 0) {
  }
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

[[noreturn]] void usage() {
  std::fprintf(stderr,
               "usage: boot_bench [--runs N] [--ready PREFIX] [--rss-at PREFIX] [--label NAME] "
               "[--viewer SOCKET] [--keep-going] [--run-timeout SEC] -- CMD [ARGS...]\n");
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  std::string ready = "testos: ready ", rss_at, label = "keel-vmm", viewer_socket;
  int runs = 10, run_timeout_s = 600;
  bool keep_going = false;
  std::vector<std::string> command;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) usage();
      return argv[++i];
    };
    if (a == "--runs")
      runs = std::atoi(next().c_str());
    else if (a == "--ready")
      ready = next();
    else if (a == "--rss-at")
      rss_at = next();
    else if (a == "--label")
      label = next();
    else if (a == "--viewer")
      viewer_socket = next();
    else if (a == "--keep-going")
      keep_going = true;
    else if (a == "--run-timeout")
      run_timeout_s = std::atoi(next().c_str());
    else if (a == "--") {
      command.assign(argv + i + 1, argv + argc);
      break;
    } else
      usage();
  }
  if (command.empty() || runs < 1 || run_timeout_s < 1 || run_timeout_s > 86400) usage();
  const char* where_env = std::getenv("KEEL_KVM_WHERE");
  std::string where = where_env ? where_env : "direct";

  std::vector<double> ready_ms, own_kib, viewed_ms;
  int failed = 0, failed_viewed = 0;
  // A failed run: counted (--keep-going), or the bench ends (false).
  const auto count_failed = [&](bool viewed) {
    if (keep_going) ++(viewed ? failed_viewed : failed);
    return keep_going;
  };
  // With --viewer, runs alternate: without a client, then with one.
  const int total = viewer_socket.empty() ? runs : 2 * runs;
  for (int r = 0; r < total; ++r) {
    const bool viewed = !viewer_socket.empty() && r % 2 == 1;
    const int run = r / (viewer_socket.empty() ? 1 : 2);  // as printed
    keel::ChildProcess::Options options;
    options.capture_stdout = true;
    auto start = Clock::now();
    auto child = keel::ChildProcess::spawn(command, options);
    std::optional<Viewer> viewer;
    if (viewed) viewer.emplace(viewer_socket, start + std::chrono::seconds(60));
    std::string buffer;
    if (!wait_for_line(child.stdout_fd(), buffer, ready, run_timeout_s * 1000)) {
      // Its output ended before the time was up: the VMM is ending.
      const bool ended = Clock::now() - start < std::chrono::seconds(run_timeout_s);
      if (!ended) child.signal(SIGKILL);
      const int code = child.wait();
      std::fprintf(
          stderr, "boot_bench: %s run %d%s: no line '%s' (%s)\n", label.c_str(), run,
          viewed ? " (console viewer)" : "", ready.c_str(),
          ended ? ("the VMM ended, exit " + std::to_string(code)).c_str() : "stalled: killed");
      if (!count_failed(viewed)) return 1;
      continue;
    }
    double ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
    (viewed ? viewed_ms : ready_ms).push_back(ms);
    std::printf("%s run %d%s: ready %.2f ms", label.c_str(), run,
                viewer_socket.empty() ? "" : (viewed ? " (console viewer)" : " (no viewer)"), ms);
    if (!rss_at.empty()) {
      if (!wait_for_line(child.stdout_fd(), buffer, rss_at, 600000)) {
        std::fprintf(stderr, "\nboot_bench: %s run %d: no line '%s'\n", label.c_str(), run,
                     rss_at.c_str());
        return 1;
      }
      // Guest memory is the memfd, counted as shared memory; the rest is the VMM's own.
      auto status = proc_status(child.pid());
      long own = status["VmRSS"] - status["RssShmem"];
      own_kib.push_back(static_cast<double>(own));
      std::printf(", VmRSS %ld KiB (anon %ld, file %ld, guest memory %ld)", status["VmRSS"],
                  status["RssAnon"], status["RssFile"], status["RssShmem"]);
    }
    std::printf("\n");
    drain(child.stdout_fd());
    int code = child.wait();
    if (code != 0) {
      std::fprintf(stderr, "boot_bench: %s run %d%s: exited %d\n", label.c_str(), run,
                   viewed ? " (console viewer)" : "", code);
      (viewed ? viewed_ms : ready_ms).pop_back();  // not a run that went well
      if (!rss_at.empty()) own_kib.pop_back();
      if (!count_failed(viewed)) return 1;
      continue;
    }
    if (viewer) {
      const uint64_t seen = viewer->bytes();
      const bool attached = viewer->attached();
      viewer.reset();
      if (!attached || seen == 0) {
        std::fprintf(stderr, "boot_bench: %s run %d: the console viewer %s\n", label.c_str(), run,
                     attached ? "was sent nothing" : "could not attach");
        return 1;
      }
    }
  }
  if (ready_ms.empty() || (!viewer_socket.empty() && viewed_ms.empty())) {
    std::fprintf(stderr, "boot_bench: no run reached the ready line\n");
    return 1;
  }
  if (keep_going)
    std::printf("%s failed runs: %d of %d%s\n", label.c_str(), failed, runs,
                viewer_socket.empty() ? ""
                                      : (" without a viewer, " + std::to_string(failed_viewed) +
                                         " of " + std::to_string(runs) + " with one")
                                            .c_str());
  double med = median(ready_ms);
  std::printf("%s boot to ready line (%s, %d runs): median %.2f ms, min %.2f, max %.2f\n",
              label.c_str(), where.c_str(), static_cast<int>(ready_ms.size()), med,
              *std::min_element(ready_ms.begin(), ready_ms.end()),
              *std::max_element(ready_ms.begin(), ready_ms.end()));
  std::string rss_json;
  if (!own_kib.empty()) {
    double own = median(own_kib);
    std::printf("%s RSS beyond guest memory (%s): median %.0f KiB (%.2f MiB)\n", label.c_str(),
                where.c_str(), own, own / 1024);
    rss_json = ",\"rss_beyond_guest_kib_median\":" + std::to_string(static_cast<long>(own));
  }
  std::string viewer_json;
  if (!viewed_ms.empty()) {
    const double with = median(viewed_ms);
    std::printf(
        "%s boot to ready line with a console viewer (%s, %d runs): median %.2f ms, "
        "min %.2f, max %.2f; %.3f x without\n",
        label.c_str(), where.c_str(), static_cast<int>(viewed_ms.size()), with,
        *std::min_element(viewed_ms.begin(), viewed_ms.end()),
        *std::max_element(viewed_ms.begin(), viewed_ms.end()), with / med);
    viewer_json = ",\"viewer_failed_runs\":" + std::to_string(failed_viewed) +
                  ",\"viewer_ready_ms_median\":" + std::to_string(with) +
                  ",\"viewer_ratio\":" + std::to_string(with / med);
  }
  std::printf(
      "{\"bench\":\"boot\",\"label\":\"%s\",\"where\":\"%s\",\"runs\":%d,"
      "\"ready_ms_median\":%.3f,\"failed_runs\":%d%s%s}\n",
      label.c_str(), where.c_str(), static_cast<int>(ready_ms.size()), med, failed + failed_viewed,
      rss_json.c_str(), viewer_json.c_str());
  return 0;
}
