// The client side of the Linux guest's ledger job (keel-ledger, see
// guest-images/README.md), for the HA trials: one TCP connection on which
// records 1, 2, 3, ... are asked for one at a time, each answer meaning the
// record is flushed to the guest's disk; and the check of a disk image
// afterwards that every acknowledged record is there whole.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/unique_fd.h"

namespace keel::testing {

class LedgerClient {
 public:
  // Connects to `ip`:`port` (refused or unreachable attempts retried for
  // `connect_wait`: the guest may still be booting), then asks for records
  // on a thread of its own (created here, so in the caller's network
  // namespace). An answer may take `answer_wait` (a failover is under way)
  // before the client gives up on the connection.
  LedgerClient(const std::string& ip, uint16_t port, std::chrono::seconds connect_wait,
               std::chrono::seconds answer_wait);
  ~LedgerClient();
  LedgerClient(const LedgerClient&) = delete;
  LedgerClient& operator=(const LedgerClient&) = delete;

  // Records 1..acked() were acknowledged, in order, on the one connection.
  uint64_t acked() const { return acked_.load(); }
  // The guest's boot= of the first answer ("" before it).
  std::string boot() const;
  // The first thing that went wrong, "" while all is well: no connection,
  // the connection closed or reset, no answer in time, an answer out of
  // order, a boot= that changed (the guest rebooted). The client stops then.
  std::string error() const;
  // Waits until acked() > n or an error, at most `limit`.
  bool wait_beyond(uint64_t n, std::chrono::milliseconds limit) const;
  // The longest time from a request to its answer since the last call.
  std::chrono::milliseconds take_longest_answer();
  // Ends the thread and closes the connection (also done on destruction).
  void stop();

 private:
  void run(std::string ip, uint16_t port, std::chrono::seconds connect_wait,
           std::chrono::seconds answer_wait);
  void fail(const std::string& why);

  mutable std::mutex mutex_;
  std::string boot_, error_;
  std::chrono::milliseconds longest_{0};
  std::atomic<uint64_t> acked_{0};
  std::atomic<bool> stop_{false};
  UniqueFd wake_read_, wake_write_;  // a pipe: stop() wakes the thread's poll
  std::thread thread_;
};

// What is wrong with records 1..acked on disk image `path` (keel-ledger's
// layout: record N in sector N mod the image's sectors, or a later lap's
// record N + k * sectors over it), one line each, at most 8; empty when
// every one is whole.
std::vector<std::string> ledger_problems(const std::string& path, uint64_t acked);

}  // namespace keel::testing
