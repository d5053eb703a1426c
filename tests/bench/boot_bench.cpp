// Benchmark (a program, not a test): time from keel-vmm's start to the test
// guest's ready line, and keel-vmm's own memory beyond the guest RAM it
// touched. Prints one line per run, a summary and a JSON line.
//
//   boot_bench --vmm PATH --kernel PATH [--runs N] [--memory SIZE]
//
// Run it through tools/kvm-run so that it says where it ran (direct or box).
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "common/child_process.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Sample {
  double ready_ms;
  long rss_kib, anon_kib, file_kib, shmem_kib;
};

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

// Reads the child's stdout until a line starting with `prefix`, or EOF.
bool wait_for_line(int fd, std::string& buffer, const std::string& prefix, int timeout_ms) {
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  size_t scanned = 0;
  for (;;) {
    for (size_t nl; (nl = buffer.find('\n', scanned)) != std::string::npos;) {
      if (buffer.compare(scanned, prefix.size(), prefix) == 0) {
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

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string vmm, kernel, memory = "256M";
  int runs = 10;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "boot_bench: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--vmm") vmm = next();
    else if (a == "--kernel") kernel = next();
    else if (a == "--runs") runs = std::atoi(next().c_str());
    else if (a == "--memory") memory = next();
    else {
      std::fprintf(stderr, "usage: boot_bench --vmm PATH --kernel PATH [--runs N] [--memory SIZE]\n");
      return 2;
    }
  }
  if (vmm.empty() || kernel.empty() || runs < 1) {
    std::fprintf(stderr, "usage: boot_bench --vmm PATH --kernel PATH [--runs N] [--memory SIZE]\n");
    return 2;
  }
  const char* where = std::getenv("KEEL_KVM_WHERE");
  std::string place = where ? where : "direct";

  std::vector<Sample> samples;
  for (int r = 0; r < runs; ++r) {
    keel::ChildProcess::Options options;
    options.capture_stdout = true;
    auto start = Clock::now();
    auto child = keel::ChildProcess::spawn(
        {vmm, "--kernel", kernel, "--memory", memory, "--cpus", "1", "--cmdline",
         "job=heartbeat interval_ms=20 count=25"},
        options);
    std::string buffer;
    if (!wait_for_line(child.stdout_fd(), buffer, "testos: ready ", 120000)) {
      std::fprintf(stderr, "boot_bench: run %d: no ready line (exit %d)\n", r, child.wait());
      return 1;
    }
    double ready_ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
    // Let the guest run a little, then read the VMM's memory while it runs.
    if (!wait_for_line(child.stdout_fd(), buffer, "testos: beat seq=5 ", 60000)) {
      std::fprintf(stderr, "boot_bench: run %d: heartbeat did not reach seq=5\n", r);
      return 1;
    }
    auto st = proc_status(child.pid());
    Sample s{ready_ms, st["VmRSS"], st["RssAnon"], st["RssFile"], st["RssShmem"]};
    while (wait_for_line(child.stdout_fd(), buffer, "", 60000)) {
    }
    int code = child.wait();
    if (code != 0) {
      std::fprintf(stderr, "boot_bench: run %d: keel-vmm exited %d\n", r, code);
      return 1;
    }
    std::printf("run %d: ready %.2f ms, VmRSS %ld KiB (anon %ld, file %ld, guest memory %ld)\n", r,
                s.ready_ms, s.rss_kib, s.anon_kib, s.file_kib, s.shmem_kib);
    samples.push_back(s);
  }
  std::vector<double> ready, own;
  for (auto& s : samples) {
    ready.push_back(s.ready_ms);
    own.push_back(static_cast<double>(s.rss_kib - s.shmem_kib));
  }
  double ready_med = median(ready);
  double own_med = median(own);
  std::printf("boot to ready line (%s, %d runs, 1 vCPU, %s): median %.2f ms, min %.2f, max %.2f\n",
              place.c_str(), runs, memory.c_str(), ready_med,
              *std::min_element(ready.begin(), ready.end()),
              *std::max_element(ready.begin(), ready.end()));
  std::printf("keel-vmm RSS beyond guest memory (%s): median %.0f KiB (%.2f MiB)\n", place.c_str(),
              own_med, own_med / 1024);
  std::printf("{\"bench\":\"boot\",\"where\":\"%s\",\"runs\":%d,\"ready_ms_median\":%.3f,"
              "\"vmm_rss_kib_median\":%.0f}\n",
              place.c_str(), runs, ready_med, own_med);
  return 0;
}
