// keel-vmm's control socket (--api-socket PATH): a Unix stream socket, mode
// 0600, served on the VMM's event loop. Frames and messages:
// control/control_frame.h, proto/control.proto.
//
// Each connection reads one request, hands it to the ControlHandler and reads
// the next only once the answer is written, so a client can hold at most one
// frame (1 MiB, grown only as bytes arrive) and one answer in this process.
// Nothing here blocks the event loop: a client that stops halfway through a
// frame, stops reading, or sits idle between requests, is disconnected after
// a timeout; a frame over
// 1 MiB gets an error and the connection is closed; bytes that are not a
// Request and requests with no operation get an error answer.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "proto/control.pb.h"

namespace keel {

// What the VMM does with a request. handle() runs on the event loop and must
// not block; `reply` is called exactly once, later or at once, from any thread
// (it hands the response to the event loop). A reply dropped without being
// called answers ERROR_CODE_INTERNAL; calls after the first are ignored; a
// reply for a client that went away is dropped. api_version and id are filled
// in by the server. An exception from handle() answers ERROR_CODE_INTERNAL.
// A refusal or failure answer: ok false, `code`, `message` (one line).
keel::api::v1::Response error_response(keel::api::v1::ErrorCode code, const std::string& message);

// A request that turns its connection into a stream (console attach): once
// its ok answer is written, the socket and the bytes the client sent after
// the request go to a TakeConnection, on the event loop, and the server
// forgets the connection (its limits no longer count it).
using ControlStreamSocket = boost::asio::local::stream_protocol::socket;
using TakeConnection = std::function<void(ControlStreamSocket socket, std::vector<uint8_t> unread)>;
bool control_request_streams(const keel::api::v1::Request& request);

class ControlHandler {
 public:
  using Reply = std::function<void(keel::api::v1::Response)>;
  // As Reply, for a request that streams: `take` (may be empty) gets the
  // connection after an ok answer; an error answer keeps it a request's.
  using StreamReply = std::function<void(keel::api::v1::Response, TakeConnection take)>;
  virtual ~ControlHandler() = default;
  virtual void handle(const keel::api::v1::Request& request, Reply reply) = 0;
  // The requests control_request_streams() names; the default refuses them
  // with ERROR_CODE_UNIMPLEMENTED.
  virtual void handle_stream(const keel::api::v1::Request& request, StreamReply reply);
};

struct ControlServerLimits {
  size_t max_connections = 32;
  // A frame begun must be complete within this, an answer read by the
  // client within this; otherwise the connection is closed.
  std::chrono::milliseconds frame_timeout{30000};
  std::chrono::milliseconds write_timeout{30000};
  // A connection with no request begun for this long is closed.
  std::chrono::milliseconds idle_timeout{300000};
};

class ControlServer {
 public:
  // Listens on `path` at once. Refuses (InputError) when `path` is a socket
  // another process serves, or exists and is not a socket; replaces a stale
  // socket file. The file is created with mode 0600 (no moment with wider
  // permissions). `handler` must outlive the server.
  ControlServer(boost::asio::io_context& events, const std::string& path, ControlHandler& handler,
                ControlServerLimits limits = {});
  // Closes the listening socket and every connection, and removes the socket
  // file (unless another one was put in its place). Destroy it before the
  // io_context, on the event loop thread or while the loop is not running.
  ~ControlServer();
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  const std::string& path() const;
  // Open client connections.
  size_t connections() const;

  class Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace keel
