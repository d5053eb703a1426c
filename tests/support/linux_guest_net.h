// The Linux guest image's net job seen from the host: keel-net (static,
// from the image's bin/) as the guest's peer, and the figures it prints.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/child_process.h"

namespace keel::testing {

// The Linux guest programs' pattern generator (keel-guest.h's kg_mix).
uint64_t splitmix64(uint64_t x);

// guest-images/README.md, keel-net: word i of the stream is
// splitmix64((seed << 40) ^ i); sum = FNV-1a 64 over the little-endian words.
std::string net_stream_sum(uint64_t mib, uint64_t seed);

// The line of `out` that starts with `prefix`, or "".
std::string line_of(const std::string& out, const std::string& prefix);

// The host's side of the net job: keel-net commands run one after another
// on a thread of their own (recv, then send, for net_mode=both), started
// before the guest boots so that the first listener is there when the guest
// connects. The thread is created by the test thread, so it and its children
// live in the test's network namespace.
class HostKeelNet {
 public:
  struct Result {
    int exit_code = -1;
    std::string out;
  };

  explicit HostKeelNet(std::vector<std::vector<std::string>> commands);
  ~HostKeelNet() { finish(std::chrono::seconds(0)); }
  HostKeelNet(const HostKeelNet&) = delete;
  HostKeelNet& operator=(const HostKeelNet&) = delete;

  // Waits up to `grace` for the commands to end by themselves (they do once
  // the guest has finished its transfers), then kills the one running and
  // skips the rest.
  std::vector<Result> finish(std::chrono::seconds grace);

 private:
  void run(const std::vector<std::vector<std::string>>& commands);

  std::mutex mutex_;
  std::condition_variable done_cv_;
  bool done_ = false;
  bool aborted_ = false;
  ChildProcess* current_ = nullptr;
  std::vector<Result> results_;
  std::thread thread_;
};

}  // namespace keel::testing
