#include "control/event_connection.h"

#include <poll.h>

#include <cerrno>

#include "common/error.h"

namespace keel {

namespace pb = ::keel::api::v1;
using Kind = ControlClientError::Kind;

EventConnection::EventConnection(const std::string& socket, const pb::EventsSubscribe& subscribe,
                                 std::chrono::milliseconds timeout)
    : in_("the VMM at " + socket, "event frame") {
  ControlClient client(socket, timeout);
  pb::Request request;
  *request.mutable_events_subscribe() = subscribe;
  const pb::Response response = client.call(request, timeout);
  if (!response.ok()) throw RequestRefused(response.error());
  if (!response.has_events_subscribe()) {
    throw ControlClientError(
        Kind::kProtocol, "the VMM at " + socket + " answered the subscription with something else");
  }
  subscribed_ = response.events_subscribe();
  fd_ = client.release();
}

bool EventConnection::receive(std::vector<pb::Event>& events) {
  if (open_) open_ = in_.read(fd_.get());
  pb::Event event;
  while (in_.next(event)) events.push_back(std::move(event));
  return open_;
}

bool EventConnection::wait_for(pb::Event& event, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (ready_.empty() && open_) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          deadline - std::chrono::steady_clock::now())
                          .count();
    if (left <= 0) return false;
    pollfd p{fd_.get(), POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left)) < 0 && errno != EINTR) throw_errno("poll events");
    receive(ready_);
  }
  if (ready_.empty()) return false;
  event = std::move(ready_.front());
  ready_.erase(ready_.begin());
  return true;
}

}  // namespace keel
