// The client's end of a console attach (proto/control.proto, ConsoleAttach):
// the attach request, then ConsoleOutput frames in and ConsoleInput frames
// out on a non-blocking socket, for a poll loop (keelctl console, tests, the
// agent's relay). Input is queued here and written as the VMM reads it; the
// caller stops offering input while wants_write() (the guest is slower).
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "common/unique_fd.h"
#include "control/console_link.h"
#include "control/control_client.h"
#include "control/stream_frames.h"
#include "proto/control.pb.h"

namespace keel {

class ConsoleConnection final : public ConsoleLink {
 public:
  // Connects and attaches. Throws ControlClientError when the VMM cannot be
  // reached or does not answer, ConsoleRefused when it refuses the attach.
  ConsoleConnection(const std::string& socket, const keel::api::v1::ConsoleAttach& attach,
                    std::chrono::milliseconds timeout);

  const keel::api::v1::ConsoleAttachResult& attached() const override { return attached_; }
  int fd() const override { return fd_.get(); }
  short poll_events() const override;

  // Queues input; at most 4096 bytes of `data` go in one frame (longer
  // data is split).
  void send(const std::string& data, bool send_break = false) override;
  bool wants_write() const override { return !out_.empty(); }
  // Writes what the socket takes now. Throws ControlClientError when the
  // VMM closed the connection.
  void flush() override;
  // Reads what is there now; the frames that became complete go to
  // `frames`. False once the VMM closed the connection (after the frames
  // before it). Throws ControlClientError on a malformed frame.
  bool receive(std::vector<keel::api::v1::ConsoleOutput>& frames) override;
  // Blocks up to `timeout` for the next frame (tests, scripts): false on
  // the connection's end or the timeout.
  bool wait_for(keel::api::v1::ConsoleOutput& frame, std::chrono::milliseconds timeout) override;

 private:
  std::string socket_;
  UniqueFd fd_;
  keel::api::v1::ConsoleAttachResult attached_;
  std::string out_;
  StreamFrames in_;
  std::vector<keel::api::v1::ConsoleOutput> ready_;  // wait_for's frames not yet returned
};

using ConsoleRefused = RequestRefused;

}  // namespace keel
