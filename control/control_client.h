// A blocking client for keel-vmm's control socket (proto/control.proto),
// every call bounded by a deadline: keelctl, tests, later the agent.
#pragma once

#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "common/unique_fd.h"
#include "proto/control.pb.h"

namespace keel {

class ControlClientError : public std::runtime_error {
 public:
  enum class Kind {
    kConnect,   // no socket, nobody listening, no permission
    kTimeout,   // the VMM did not answer in time
    kProtocol,  // the connection closed early, or the answer is not a Response
  };
  ControlClientError(Kind kind, const std::string& message)
      : std::runtime_error(message), kind_(kind) {}
  Kind kind() const { return kind_; }

 private:
  Kind kind_;
};

class ControlClient {
 public:
  // Connects to the socket at `path` within `timeout`.
  ControlClient(const std::string& path, std::chrono::milliseconds timeout);

  // Sends `request` (its id set to a fresh one when 0) and waits at most
  // `timeout` for the answer. Throws ControlClientError.
  keel::api::v1::Response call(keel::api::v1::Request request, std::chrono::milliseconds timeout);

  // The connection itself (non-blocking), after a request that turned it
  // into a stream (console attach); the client is done with it.
  UniqueFd release() { return std::move(fd_); }

 private:
  void write_all(const std::string& bytes, std::chrono::steady_clock::time_point deadline);
  void read_exact(uint8_t* data, size_t size, std::chrono::steady_clock::time_point deadline);
  void wait_for(short events, std::chrono::steady_clock::time_point deadline);

  std::string path_;
  UniqueFd fd_;
  uint64_t next_id_ = 1;
};

// The VMM answered a stream's request (a console attach, an events
// subscription) with a refusal: its message and code.
class RequestRefused : public std::runtime_error {
 public:
  explicit RequestRefused(const keel::api::v1::Error& error)
      : std::runtime_error(error.message()), code_(error.code()) {}
  keel::api::v1::ErrorCode code() const { return code_; }

 private:
  keel::api::v1::ErrorCode code_;
};

}  // namespace keel
