// What happened to the VM, numbered (vmm/events): the newest events in a
// ring, an optional NDJSON log, and subscribers on the control socket
// (EventsSubscribe, proto/control.proto) that get every event from where
// they asked, or are told how many they missed. A subscriber that reads
// too slowly is skipped ahead, never waited for.
//
// Threading: publish() from any thread; the rest on the event loop.
#pragma once

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/unique_fd.h"
#include "control/control_server.h"
#include "proto/control.pb.h"

namespace keel {

class EventSubscriber;

class EventJournal {
 public:
  struct Limits {
    size_t ring_events = 4096;
    size_t max_subscribers = 16;
  };
  // `log_path`: the NDJSON log (appended, created 0600, not through a
  // link; InputError when it cannot be opened); empty: none.
  EventJournal(boost::asio::io_context& events, const std::string& log_path, Limits limits);
  EventJournal(boost::asio::io_context& events, const std::string& log_path)
      : EventJournal(events, log_path, Limits{}) {}
  ~EventJournal();
  EventJournal(const EventJournal&) = delete;
  EventJournal& operator=(const EventJournal&) = delete;

  // Numbers and stamps `event`, keeps it, and (on the event loop) logs it
  // and sends it to the subscribers. Any thread.
  void publish(keel::api::v1::Event event);
  void publish(keel::api::v1::EventType type, std::string detail);

  // A subscription request (event loop).
  void subscribe(const keel::api::v1::EventsSubscribe& request, ControlHandler::StreamReply reply);

  // At the end: the event loop is run (by the caller's io_context) until
  // every subscriber has been sent every event, or `grace` passed; then
  // they are disconnected.
  void finish(std::chrono::milliseconds grace);

  uint64_t next_seq() const;
  uint64_t log_failures() const { return log_failures_; }

 private:
  friend class EventSubscriber;
  // Up to `max` events after number `after` into frames (the first with
  // the count of those the ring no longer has); returns the last number
  // put in, `after` when none.
  uint64_t frames_after(uint64_t after, size_t max, std::string& frames) const;
  void on_published();  // event loop
  void forget(EventSubscriber& subscriber);
  bool caught_up() const;

  boost::asio::io_context& events_;
  const Limits limits_;
  const uint64_t stream_;
  mutable std::mutex mutex_;
  std::deque<keel::api::v1::Event> ring_;
  uint64_t next_seq_ = 1;
  uint64_t logged_ = 0;  // events written to the log so far (event loop)
  UniqueFd log_;
  uint64_t log_failures_ = 0;
  std::vector<std::shared_ptr<EventSubscriber>> subscribers_;
  bool finished_ = false;
};

}  // namespace keel
