// The client's end of an events subscription (proto/control.proto,
// EventsSubscribe): the request, then Event frames from the VMM on a
// non-blocking socket (keelctl events, tests, the agent).
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "common/unique_fd.h"
#include "control/control_client.h"
#include "control/stream_frames.h"
#include "proto/control.pb.h"

namespace keel {

class EventConnection {
 public:
  // Connects and subscribes. Throws ControlClientError when the VMM cannot
  // be reached or does not answer, RequestRefused when it refuses.
  EventConnection(const std::string& socket, const keel::api::v1::EventsSubscribe& subscribe,
                  std::chrono::milliseconds timeout);

  const keel::api::v1::EventsSubscribeResult& subscribed() const { return subscribed_; }
  int fd() const { return fd_.get(); }

  // Reads what is there now; complete events go to `events`. False once
  // the VMM closed the connection (after the events before it).
  bool receive(std::vector<keel::api::v1::Event>& events);
  // Blocks up to `timeout` for the next event: false on the connection's
  // end or the timeout.
  bool wait_for(keel::api::v1::Event& event, std::chrono::milliseconds timeout);
  // False once the VMM closed the connection.
  bool open() const { return open_; }

 private:
  UniqueFd fd_;
  keel::api::v1::EventsSubscribeResult subscribed_;
  StreamFrames in_;
  std::vector<keel::api::v1::Event> ready_;
  bool open_ = true;
};

}  // namespace keel
