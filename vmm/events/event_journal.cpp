#include "vmm/events/event_journal.h"

#include <fcntl.h>
#include <google/protobuf/util/json_util.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <cerrno>
#include <cstring>
#include <random>

#include "common/error.h"
#include "common/log.h"
#include "control/control_frame.h"

namespace keel {

namespace pb = ::keel::api::v1;
using boost::system::error_code;

namespace {

// Events per write to one subscriber: one write in flight at a time.
constexpr size_t kBatch = 64;

uint64_t random_stream() {
  std::random_device device;
  return (uint64_t{device()} << 32) | device();
}

uint64_t ns_since_epoch(auto clock_now) {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(clock_now.time_since_epoch()).count());
}

}  // namespace

// One subscription: events sent from its position on, one write in flight;
// it sends nothing (anything it sends ends the subscription).
class EventSubscriber : public std::enable_shared_from_this<EventSubscriber> {
 public:
  EventSubscriber(EventJournal& journal, ControlStreamSocket socket, uint64_t after)
      : journal_(journal), socket_(std::move(socket)), after_(after) {}

  void start(const std::vector<uint8_t>& unread) {
    if (!unread.empty()) return fail("an events subscriber sent data after subscribing");
    read_more();
    send_due();
  }

  void send_due() {
    if (!open_ || writing_) return;
    out_.clear();
    after_ = journal_.frames_after(after_, kBatch, out_);
    if (out_.empty()) return;
    writing_ = true;
    boost::asio::async_write(socket_, boost::asio::buffer(out_),
                             [self = shared_from_this()](error_code ec, size_t) {
                               self->writing_ = false;
                               if (!self->open_) return;
                               if (ec) return self->journal_.forget(*self);
                               self->send_due();
                             });
  }

  bool caught_up() const { return !open_ || (!writing_ && after_ + 1 >= journal_.next_seq()); }
  bool open() const { return open_; }

  void close() {
    if (!open_) return;
    open_ = false;
    error_code ignored;
    socket_.shutdown(ControlStreamSocket::shutdown_both, ignored);
    socket_.close(ignored);
  }

 private:
  void read_more() {
    socket_.async_read_some(boost::asio::buffer(chunk_),
                            [self = shared_from_this()](error_code ec, size_t) {
                              if (!self->open_) return;
                              if (ec) return self->journal_.forget(*self);
                              self->fail("an events subscriber sent data after subscribing");
                            });
  }

  void fail(const std::string& why) {
    log::warning("events subscriber disconnected: " + why);
    journal_.forget(*this);
  }

  EventJournal& journal_;
  ControlStreamSocket socket_;
  uint64_t after_;  // the last number sent (or asked to start after)
  bool open_ = true;
  bool writing_ = false;
  std::string out_;
  std::array<uint8_t, 256> chunk_{};
};

EventJournal::EventJournal(boost::asio::io_context& events, const std::string& log_path,
                           Limits limits)
    : events_(events), limits_(limits), stream_(random_stream()) {
  if (log_path.empty()) return;
  // Appended to, as the console log; no link followed (keel-vmm runs as root).
  int fd = ::open(log_path.c_str(),
                  O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NONBLOCK | O_NOFOLLOW, 0600);
  if (fd < 0 && errno == ELOOP) {
    throw InputError("event log " + log_path + " is a symbolic link (not followed)");
  }
  if (fd < 0) throw InputError("cannot open event log " + log_path + ": " + std::strerror(errno));
  log_.reset(fd);
}

EventJournal::~EventJournal() {
  for (auto& s : subscribers_) s->close();
}

void EventJournal::publish(pb::EventType type, std::string detail) {
  pb::Event event;
  event.set_type(type);
  event.set_detail(std::move(detail));
  publish(std::move(event));
}

void EventJournal::publish(pb::Event event) {
  {
    std::lock_guard guard(mutex_);
    event.set_seq(next_seq_++);
    event.set_time_unix_ns(ns_since_epoch(std::chrono::system_clock::now()));
    event.set_monotonic_ns(ns_since_epoch(std::chrono::steady_clock::now()));
    event.clear_missed();
    ring_.push_back(std::move(event));
    while (ring_.size() > limits_.ring_events) ring_.pop_front();
  }
  boost::asio::post(events_, [this] { on_published(); });
}

uint64_t EventJournal::next_seq() const {
  std::lock_guard guard(mutex_);
  return next_seq_;
}

// The log gets what it has not had yet, in order, as one write per event
// (a line each); then every subscriber its due.
void EventJournal::on_published() {
  if (log_.valid()) {
    std::vector<pb::Event> unlogged;
    {
      std::lock_guard guard(mutex_);
      for (const auto& e : ring_) {
        if (e.seq() > logged_) unlogged.push_back(e);
      }
      logged_ = next_seq_ - 1;
    }
    google::protobuf::util::JsonPrintOptions options;
    options.preserve_proto_field_names = true;
    for (const auto& e : unlogged) {
      std::string line;
      if (!google::protobuf::util::MessageToJsonString(e, &line, options).ok()) {
        ++log_failures_;
        continue;
      }
      line += '\n';
      if (::write(log_.get(), line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
        ++log_failures_;
      }
    }
  }
  for (auto& s : std::vector(subscribers_)) s->send_due();
}

uint64_t EventJournal::frames_after(uint64_t after, size_t max, std::string& frames) const {
  std::lock_guard guard(mutex_);
  if (ring_.empty()) return after;
  const uint64_t oldest = ring_.front().seq();
  const uint64_t first = std::max(after + 1, oldest);
  uint64_t last = after;
  for (uint64_t seq = first; seq < next_seq_ && seq - first < max; ++seq) {
    pb::Event e = ring_[static_cast<size_t>(seq - oldest)];
    // The ring moved past what this subscriber had not had: told with the
    // first event it gets.
    if (seq == first) e.set_missed(first - (after + 1));
    frames += encode_control_frame(e);
    last = seq;
  }
  return last;
}

void EventJournal::subscribe(const pb::EventsSubscribe& request,
                             ControlHandler::StreamReply reply) {
  std::erase_if(subscribers_, [](const auto& s) { return !s->open(); });
  if (finished_)
    return reply(error_response(pb::ERROR_CODE_INVALID_STATE, "the VM has stopped"), {});
  if (subscribers_.size() >= limits_.max_subscribers) {
    return reply(
        error_response(pb::ERROR_CODE_BUSY, std::to_string(subscribers_.size()) +
                                                " event subscribers, the most this VMM takes"),
        {});
  }
  uint64_t oldest = 0, next = 0;
  {
    std::lock_guard guard(mutex_);
    next = next_seq_;
    oldest = ring_.empty() ? 0 : ring_.front().seq();
  }
  uint64_t after = next - 1;  // from_now
  switch (request.from_case()) {
    case pb::EventsSubscribe::kFromOldest:
      after = oldest == 0 ? next - 1 : oldest - 1;
      break;
    case pb::EventsSubscribe::kAfterSeq:
      if (request.after_seq() >= next) {
        return reply(error_response(pb::ERROR_CODE_INVALID_ARGUMENT,
                                    "after_seq " + std::to_string(request.after_seq()) +
                                        ": this VMM's newest event is " + std::to_string(next - 1) +
                                        " (a number from another keel-vmm process?)"),
                     {});
      }
      after = request.after_seq();
      break;
    default:
      break;
  }
  pb::Response response;
  response.set_ok(true);
  auto* result = response.mutable_events_subscribe();
  result->set_stream(stream_);
  result->set_oldest_seq(oldest);
  result->set_next_seq(next);
  reply(std::move(response),
        [this, after](ControlStreamSocket socket, std::vector<uint8_t> unread) {
          auto s = std::make_shared<EventSubscriber>(*this, std::move(socket), after);
          // The limit holds at the handover too (others may have been
          // answered meanwhile): the stream then just ends.
          std::erase_if(subscribers_, [](const auto& other) { return !other->open(); });
          if (finished_ || subscribers_.size() >= limits_.max_subscribers) return s->close();
          subscribers_.push_back(s);
          s->start(unread);
        });
}

void EventJournal::forget(EventSubscriber& subscriber) {
  subscriber.close();
  std::erase_if(subscribers_, [&](const auto& s) { return s.get() == &subscriber; });
}

bool EventJournal::caught_up() const {
  return std::all_of(subscribers_.begin(), subscribers_.end(),
                     [](const auto& s) { return s->caught_up(); });
}

void EventJournal::finish(std::chrono::milliseconds grace) {
  const auto until = std::chrono::steady_clock::now() + grace;
  events_.restart();
  events_.poll();  // what was published last: logged, sending begun
  while (!caught_up() && std::chrono::steady_clock::now() < until) {
    events_.run_one_until(until);
  }
  finished_ = true;
  for (auto& s : subscribers_) s->close();
  subscribers_.clear();
}

}  // namespace keel
