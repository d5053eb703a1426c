// A console attach as a poll loop sees it (keelctl console): the VMM's
// control socket (control/console_connection.h), or the agents' relay
// (keelctl vm console). Frames out and in as in proto/control.proto.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "proto/control.pb.h"

namespace keel {

class ConsoleLink {
 public:
  virtual ~ConsoleLink() = default;

  virtual const keel::api::v1::ConsoleAttachResult& attached() const = 0;
  // Poll fd() for poll_events(); then call flush() and receive().
  virtual int fd() const = 0;
  virtual short poll_events() const = 0;
  // Queues input; the caller offers no more while wants_write().
  virtual void send(const std::string& data, bool send_break = false) = 0;
  virtual bool wants_write() const = 0;
  virtual void flush() = 0;
  // The frames that arrived; false once the console ended (after them).
  virtual bool receive(std::vector<keel::api::v1::ConsoleOutput>& frames) = 0;
  // Blocks up to `timeout` for the next frame: false at the end or timeout.
  virtual bool wait_for(keel::api::v1::ConsoleOutput& frame, std::chrono::milliseconds timeout) = 0;
  // Why the console ended, when the far end said ("" otherwise).
  virtual std::string closed_because() const { return ""; }
};

}  // namespace keel
