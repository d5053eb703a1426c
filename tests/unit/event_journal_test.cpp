// EventJournal (vmm/events) behind a real control socket on its own event
// loop, subscribers through EventConnection: order, resuming, gaps told,
// a slow subscriber skipped ahead, refusals, and the last events (a stop's)
// delivered and logged at the end.
#include "vmm/events/event_journal.h"

#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <fstream>
#include <future>
#include <string>
#include <thread>

#include "control/event_connection.h"
#include "tests/support/scratch_dir.h"

namespace keel {
namespace {

namespace pb = ::keel::api::v1;
constexpr auto kWait = std::chrono::seconds(10);

class EventsHandler : public ControlHandler {
 public:
  explicit EventsHandler(EventJournal& journal) : journal_(journal) {}
  void handle(const pb::Request&, Reply reply) override {
    reply(error_response(pb::ERROR_CODE_UNIMPLEMENTED, "events only"));
  }
  void handle_stream(const pb::Request& request, StreamReply reply) override {
    journal_.subscribe(request.events_subscribe(), std::move(reply));
  }

 private:
  EventJournal& journal_;
};

struct EventJournalTest : ::testing::Test {
  void start(EventJournal::Limits limits = {}, const std::string& log = "") {
    journal_ = std::make_unique<EventJournal>(events_, log, limits);
    handler_ = std::make_unique<EventsHandler>(*journal_);
    server_ = std::make_unique<ControlServer>(events_, socket_, *handler_);
    loop_ = std::thread([this] { events_.run(); });
  }
  // The loop stopped; the journal's end run on this thread.
  void finish() {
    if (!loop_.joinable()) return;
    boost::asio::post(events_, [this] { server_.reset(); });
    work_.reset();
    events_.stop();
    loop_.join();
    journal_->finish(std::chrono::seconds(2));
  }
  void TearDown() override { finish(); }

  void publish(int count, pb::EventType type = pb::EVENT_TYPE_PAUSED) {
    for (int i = 0; i < count; ++i) journal_->publish(type, "event " + std::to_string(i));
  }
  EventConnection subscribe(pb::EventsSubscribe request) {
    return EventConnection(socket_, request, kWait);
  }
  static pb::EventsSubscribe after(uint64_t seq) {
    pb::EventsSubscribe s;
    s.set_after_seq(seq);
    return s;
  }
  std::vector<uint64_t> seqs(EventConnection& c, size_t count) {
    std::vector<uint64_t> got;
    pb::Event e;
    while (got.size() < count && c.wait_for(e, kWait)) got.push_back(e.seq());
    return got;
  }

  testing::ScratchDir scratch_{"keel-events-test"};
  const std::string socket_ = scratch_ / "vmm.sock";
  boost::asio::io_context events_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_ =
      boost::asio::make_work_guard(events_);
  std::unique_ptr<EventJournal> journal_;
  std::unique_ptr<EventsHandler> handler_;
  std::unique_ptr<ControlServer> server_;
  std::thread loop_;
};

TEST_F(EventJournalTest, SubscribersGetEveryEventInOrderFromWhereTheyAsked) {
  start();
  publish(3);
  pb::EventsSubscribe oldest;
  oldest.set_from_oldest(true);
  auto all = subscribe(oldest);
  EXPECT_NE(all.subscribed().stream(), 0u);
  EXPECT_EQ(all.subscribed().oldest_seq(), 1u);
  EXPECT_EQ(all.subscribed().next_seq(), 4u);
  auto resumed = subscribe(after(2));
  auto now = subscribe(pb::EventsSubscribe());  // from now on
  EXPECT_EQ(seqs(all, 3), (std::vector<uint64_t>{1, 2, 3}));
  EXPECT_EQ(seqs(resumed, 1), (std::vector<uint64_t>{3}));
  publish(2, pb::EVENT_TYPE_SNAPSHOT_TAKEN);
  EXPECT_EQ(seqs(all, 2), (std::vector<uint64_t>{4, 5}));
  EXPECT_EQ(seqs(resumed, 2), (std::vector<uint64_t>{4, 5}));
  pb::Event e;
  ASSERT_TRUE(now.wait_for(e, kWait));
  EXPECT_EQ(e.seq(), 4u);
  EXPECT_EQ(e.type(), pb::EVENT_TYPE_SNAPSHOT_TAKEN);
  EXPECT_EQ(e.missed(), 0u);
  EXPECT_GT(e.time_unix_ns(), 0u);
  EXPECT_GT(e.monotonic_ns(), 0u);
}

TEST_F(EventJournalTest, AResumeFromBeyondTheRingIsToldWhatItMissed) {
  start({.ring_events = 4, .max_subscribers = 16});
  publish(10);
  auto c = subscribe(after(2));
  EXPECT_EQ(c.subscribed().oldest_seq(), 7u);
  pb::Event e;
  ASSERT_TRUE(c.wait_for(e, kWait));
  EXPECT_EQ(e.seq(), 7u);
  EXPECT_EQ(e.missed(), 4u) << "3, 4, 5 and 6 are gone";
  EXPECT_EQ(seqs(c, 3), (std::vector<uint64_t>{8, 9, 10}));
}

// A subscriber that does not read never holds the others or the publisher
// up; when it reads again it is told how many it missed, and the counts
// add up.
TEST_F(EventJournalTest, ASlowSubscriberIsSkippedAheadNotWaitedFor) {
  start({.ring_events = 64, .max_subscribers = 16});
  auto slow = subscribe(pb::EventsSubscribe());
  auto quick = subscribe(pb::EventsSubscribe());
  constexpr int kCount = 50000;
  std::thread quick_reader([&] { EXPECT_EQ(seqs(quick, 1).size(), 1u); });
  publish(kCount);
  quick_reader.join();
  uint64_t received = 0, missed = 0, last = 0;
  pb::Event e;
  while (last < kCount && slow.wait_for(e, kWait)) {
    ++received;
    missed += e.missed();
    EXPECT_GT(e.seq(), last);
    last = e.seq();
  }
  EXPECT_EQ(last, uint64_t{kCount});
  EXPECT_GT(missed, 0u) << "the socket cannot hold 50000 events";
  EXPECT_EQ(received + missed, uint64_t{kCount});
}

TEST_F(EventJournalTest, RefusalsAndASubscriberThatSendsData) {
  start({.ring_events = 16, .max_subscribers = 2});
  publish(2);
  try {
    subscribe(after(3));
    FAIL() << "a number past the newest was taken";
  } catch (const RequestRefused& e) {
    EXPECT_EQ(e.code(), pb::ERROR_CODE_INVALID_ARGUMENT);
    EXPECT_NE(std::string(e.what()).find("newest event is 2"), std::string::npos) << e.what();
  }
  auto chatty = subscribe(after(2));
  auto good = subscribe(after(2));
  try {
    subscribe(after(2));
    FAIL() << "a third subscriber was taken";
  } catch (const RequestRefused& e) {
    EXPECT_EQ(e.code(), pb::ERROR_CODE_BUSY);
  }
  ASSERT_EQ(::send(chatty.fd(), "x", 1, MSG_NOSIGNAL), 1);
  pb::Event e;
  EXPECT_FALSE(chatty.wait_for(e, kWait)) << "the chatty subscriber was not let go";
  publish(1);
  ASSERT_TRUE(good.wait_for(e, kWait));
  EXPECT_EQ(e.seq(), 3u);
  auto third = subscribe(after(3));  // the chatty one's slot is free again
  publish(1);
  ASSERT_TRUE(third.wait_for(e, kWait));
  EXPECT_EQ(e.seq(), 4u);
}

TEST_F(EventJournalTest, TheLastEventsReachSubscribersAndTheLogAtTheEnd) {
  const std::string log = scratch_ / "events.ndjson";
  start({}, log);
  auto c = subscribe(pb::EventsSubscribe());
  publish(2);
  EXPECT_EQ(seqs(c, 2).size(), 2u);
  // The machine stops its loop, then tells of the stop.
  boost::asio::post(events_, [this] { server_.reset(); });
  work_.reset();
  events_.stop();
  loop_.join();
  journal_->publish(pb::EVENT_TYPE_POWERED_OFF, "the guest powered off");
  journal_->finish(std::chrono::seconds(2));
  pb::Event e;
  ASSERT_TRUE(c.wait_for(e, kWait));
  EXPECT_EQ(e.seq(), 3u);
  EXPECT_EQ(e.type(), pb::EVENT_TYPE_POWERED_OFF);
  EXPECT_FALSE(c.wait_for(e, kWait)) << "the stream ends after the last event";
  std::ifstream in(log);
  std::string line;
  uint64_t n = 0;
  while (std::getline(in, line)) {
    pb::Event logged;
    ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(line, &logged).ok()) << line;
    EXPECT_EQ(logged.seq(), ++n);
  }
  EXPECT_EQ(n, 3u);
}

}  // namespace
}  // namespace keel
