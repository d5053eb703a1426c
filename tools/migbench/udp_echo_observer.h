// The outside world's view through the network: a UDP datagram to the
// guest's echo port every millisecond, from the benchmark's namespace, and
// the harness-clock time each answer came back. The longest stretch
// without an answer across a migration is the pause a network peer saw.
#pragma once

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/unique_fd.h"
#include "tools/migbench/timed_console.h"

namespace keel::migbench {

class UdpEchoObserver {
 public:
  // Sends from `local` to `guest`:`port` until destroyed. Throws
  // std::runtime_error when the socket cannot be set up.
  UdpEchoObserver(const std::string& local, const std::string& guest, unsigned port);
  ~UdpEchoObserver();
  UdpEchoObserver(const UdpEchoObserver&) = delete;
  UdpEchoObserver& operator=(const UdpEchoObserver&) = delete;

  // Waits up to `timeout` for the guest's first answer.
  bool wait_answering(std::chrono::milliseconds timeout);
  // When each answer arrived, in order.
  std::vector<Clock::time_point> answers() const;
  uint64_t sent() const { return sent_.load(); }

 private:
  void send_loop();
  void receive_loop();

  UniqueFd socket_;
  std::atomic<bool> stopping_{false};
  std::atomic<uint64_t> sent_{0};
  mutable std::mutex mutex_;
  std::condition_variable answered_;
  std::vector<Clock::time_point> answers_;
  std::thread sender_, receiver_;
};

// The longest stretch between two answers in [from, to], counted from the
// last answer before `from`; 0 with fewer than two answers.
double longest_silence_ms(const std::vector<Clock::time_point>& answers, Clock::time_point from,
                          Clock::time_point to);

}  // namespace keel::migbench
