// A TCP proxy on loopback that a test can break: every connection to it is
// forwarded to a target port; cut() closes them all, refuse() closes new
// ones at once, hold_replies() keeps what the target sends until released
// (requests reach the server, answers do not reach the client). One
// thread, non-blocking; stopped and joined on destruction.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/unique_fd.h"

namespace keel::testing {

class TcpProxy {
 public:
  explicit TcpProxy(uint16_t target_port);
  ~TcpProxy();
  TcpProxy(const TcpProxy&) = delete;
  TcpProxy& operator=(const TcpProxy&) = delete;

  uint16_t port() const { return port_; }
  void set_target(uint16_t port);
  void cut();
  void refuse(bool on);
  void hold_replies(bool on);
  // Connections accepted and forwarded so far.
  uint64_t connections() const { return connections_.load(); }
  // Bytes the target sent that are being held back.
  uint64_t held_bytes() const { return held_bytes_.load(); }

 private:
  struct Pair {
    UniqueFd client, server;
    std::string to_server, to_client;
  };
  void run();
  void wake();

  UniqueFd listener_;
  UniqueFd wake_;
  uint16_t port_ = 0;
  std::mutex mutex_;
  uint16_t target_;                                                  // guarded
  bool cut_ = false, refuse_ = false, hold_ = false, stop_ = false;  // guarded
  std::atomic<uint64_t> connections_{0}, held_bytes_{0};
  std::vector<Pair> pairs_;
  std::thread thread_;
};

}  // namespace keel::testing
