// The guest console end to end without KVM: a real COM1 (Uart8250) on an
// I/O bus, the console behind a real control socket on its own event loop,
// clients through ConsoleConnection. The test thread plays the vCPU: it
// prints through the transmit register and reads the receive FIFO.
#include "vmm/console/guest_console.h"

#include <gtest/gtest.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <fstream>
#include <future>
#include <string>
#include <thread>

#include "common/error.h"
#include "control/console_connection.h"
#include "control/control_server.h"
#include "tests/support/scratch_dir.h"

namespace keel {
namespace {

namespace pb = ::keel::api::v1;

constexpr uint16_t kCom1 = 0x3f8;
constexpr auto kWait = std::chrono::seconds(10);

// The console's handler on the control socket, as the machine's.
class ConsoleHandler : public ControlHandler {
 public:
  explicit ConsoleHandler(GuestConsole& console) : console_(console) {}
  void handle(const pb::Request&, Reply reply) override {
    reply(error_response(pb::ERROR_CODE_UNIMPLEMENTED, "console only"));
  }
  void handle_stream(const pb::Request& request, StreamReply reply) override {
    console_.attach(request.console_attach(), std::move(reply));
  }

 private:
  GuestConsole& console_;
};

struct ConsoleFixture : ::testing::Test {
  explicit ConsoleFixture(GuestConsoleLimits limits = {}) : limits_(limits) {}

  void SetUp() override {
    console_ = std::make_unique<GuestConsole>(events_, scratch_ / "console.log", limits_);
    uart_ = std::make_unique<Uart8250>([this](uint8_t b) { console_->put(b); }, [] {});
    bus_.add(kCom1, 8, *uart_);
    console_->connect_input(bus_, *uart_);
    const uint8_t mcr = 0x0b;  // the guest's driver opened the port: DTR, RTS, OUT2
    bus_.write(kCom1 + 4, {&mcr, 1});
    handler_ = std::make_unique<ConsoleHandler>(*console_);
    server_ = std::make_unique<ControlServer>(events_, socket_, *handler_);
    loop_ = std::thread([this] { events_.run(); });
  }

  // Runs `task` on the event loop and waits for it.
  template <typename Task>
  auto on_loop(Task task) {
    std::packaged_task<decltype(task())()> job(std::move(task));
    auto done = job.get_future();
    boost::asio::post(events_, [&job] { job(); });
    return done.get();
  }

  void TearDown() override {
    on_loop([this] {
      server_.reset();
      console_->finish(std::chrono::seconds(1));
    });
    work_.reset();
    events_.stop();
    loop_.join();
  }

  // The guest prints.
  void print(const std::string& text) {
    for (char c : text) {
      const auto byte = static_cast<uint8_t>(c);
      bus_.write(kCom1, {&byte, 1});
    }
  }
  uint8_t port(uint16_t offset) {
    uint8_t v = 0;
    bus_.read(static_cast<uint16_t>(kCom1 + offset), {&v, 1});
    return v;
  }
  // The guest reads what its FIFO holds until `count` bytes came.
  std::string read_input(size_t count) {
    std::string got;
    const auto deadline = std::chrono::steady_clock::now() + kWait;
    while (got.size() < count && std::chrono::steady_clock::now() < deadline) {
      if (port(5) & 0x01) {
        got.push_back(static_cast<char>(port(0)));
      } else {
        std::this_thread::yield();
      }
    }
    return got;
  }

  ConsoleConnection attach(pb::ConsoleAttach request) {
    return ConsoleConnection(socket_, request, kWait);
  }
  static pb::ConsoleAttach from_start(bool write = false) {
    pb::ConsoleAttach a;
    a.set_from_start(true);
    a.set_write(write);
    return a;
  }
  // The output `client` is sent until `text` is in it.
  static std::string read_until(ConsoleConnection& client, const std::string& text,
                                pb::ConsoleOutput* last = nullptr) {
    std::string got;
    pb::ConsoleOutput frame;
    while (got.find(text) == std::string::npos && client.wait_for(frame, kWait)) {
      got += frame.data();
      if (last) *last = frame;
    }
    return got;
  }

  GuestConsoleLimits limits_;
  testing::ScratchDir scratch_{"keel-console-test"};
  const std::string socket_ = scratch_ / "api.sock";
  boost::asio::io_context events_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_{
      events_.get_executor()};
  std::unique_ptr<GuestConsole> console_;
  std::unique_ptr<Uart8250> uart_;
  IoBus bus_;
  std::unique_ptr<ConsoleHandler> handler_;
  std::unique_ptr<ControlServer> server_;
  std::thread loop_;
};

TEST_F(ConsoleFixture, ViewersSeeTheHistoryAndWhatFollows) {
  print("boot line\nlogin: ");
  auto all = attach(from_start());
  EXPECT_EQ(all.attached().offset(), 0u);
  EXPECT_FALSE(all.attached().writer());
  pb::ConsoleAttach back;
  back.set_bytes_back(7);
  auto tail = attach(back);
  EXPECT_EQ(tail.attached().offset(), 10u);
  EXPECT_EQ(read_until(all, "login: "), "boot line\nlogin: ");
  EXPECT_EQ(read_until(tail, "login: "), "login: ");
  auto now = attach(pb::ConsoleAttach());  // from the end
  print("root\n");
  EXPECT_EQ(read_until(now, "root\n"), "root\n");
  EXPECT_EQ(read_until(all, "root\n"), "root\n");
}

// Batches of 20 ms here: long enough to tell from a frame per byte however
// slowly a loaded machine runs the test.
struct SlowBatches : ConsoleFixture {
  SlowBatches()
      : ConsoleFixture(GuestConsoleLimits{.output_batch = std::chrono::milliseconds(20)}) {}
};

// A guest printing a byte per exit at a UART's pace (a byte every 50 us or
// more, 100 ms or more in all): its viewer gets it whole and in order, a
// frame or two per batch, not a frame per byte.
TEST_F(SlowBatches, OutputPrintedByteByByteReachesViewersInBatches) {
  auto viewer = attach(pb::ConsoleAttach());
  std::string text;
  for (int i = 0; i < 2000; ++i) text.push_back(static_cast<char>('a' + i % 26));
  text += "\n";
  const auto begin = std::chrono::steady_clock::now();
  std::thread guest([&] {
    for (char c : text) {
      print(std::string(1, c));
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  });
  std::string got;
  size_t frames = 0;
  pb::ConsoleOutput frame;
  while (got.size() < text.size() && viewer.wait_for(frame, kWait)) {
    got += frame.data();
    ++frames;
  }
  guest.join();
  const auto batches = (std::chrono::steady_clock::now() - begin) / limits_.output_batch + 1;
  EXPECT_EQ(got, text);
  EXPECT_LE(frames, static_cast<size_t>(2 * batches + 2)) << "over " << batches << " batches";
  EXPECT_LT(frames, text.size() / 5) << "a frame per byte or so: output is not batched";
}

// Batches that never end by themselves: only the console's finish sends.
struct EndlessBatches : ConsoleFixture {
  EndlessBatches() : ConsoleFixture(GuestConsoleLimits{.output_batch = std::chrono::hours(1)}) {}
};

// What the guest printed last, in a batch not yet sent when the VM stops,
// reaches the viewers before the console closes.
TEST_F(EndlessBatches, TheLastBatchReachesViewersAtTheEnd) {
  auto viewer = attach(pb::ConsoleAttach());
  print("$");  // a byte after a quiet spell: out at once, and the batch begins
  EXPECT_EQ(read_until(viewer, "$"), "$");
  on_loop([] {});                 // that write's completion has run: nothing is left to send
  print("reboot: Power down\n");  // in the batch, which never ends
  on_loop([this] { console_->finish(std::chrono::seconds(1)); });
  std::string got;
  pb::ConsoleOutput frame;
  while (viewer.wait_for(frame, kWait)) got += frame.data();
  EXPECT_EQ(got, "reboot: Power down\n");
}

TEST_F(ConsoleFixture, OneWriterAndATakeoverThatIsTold) {
  auto first = attach(from_start(true));
  EXPECT_TRUE(first.attached().writer());
  try {
    attach(from_start(true));
    FAIL() << "a second writer was let in";
  } catch (const ConsoleRefused& e) {
    EXPECT_EQ(e.code(), pb::ERROR_CODE_BUSY);
    EXPECT_NE(std::string(e.what()).find("force"), std::string::npos) << e.what();
  }
  pb::ConsoleAttach force = from_start(true);
  force.set_force(true);
  auto second = attach(force);
  EXPECT_TRUE(second.attached().took_over());
  pb::ConsoleOutput frame;
  while (first.wait_for(frame, kWait) && frame.notice().empty()) {
  }
  EXPECT_FALSE(frame.writer());
  EXPECT_NE(frame.notice().find("read-only"), std::string::npos) << frame.notice();
  // The old writer's keys no longer reach the guest; the new one's do.
  first.send("old");
  first.flush();
  while (first.wait_for(frame, kWait) && frame.notice().empty()) {
  }
  EXPECT_NE(frame.notice().find("ignored"), std::string::npos) << frame.notice();
  second.send("new");
  second.flush();
  EXPECT_EQ(read_input(3), "new");
  EXPECT_EQ(port(5) & 0x01, 0) << "nothing else arrived";
}

// 64 KiB pasted at once reach the guest whole and in order through a
// 16-byte FIFO: the console feeds it as the guest reads, never overruns.
TEST_F(ConsoleFixture, PastedInputArrivesWholeAtTheGuestsPace) {
  auto writer = attach(from_start(true));
  std::string paste;
  for (size_t i = 0; paste.size() < 64 * 1024; ++i) paste += "line " + std::to_string(i) + "\n";
  paste.resize(64 * 1024);
  writer.send(paste);
  std::thread client([&] {
    pb::ConsoleOutput frame;
    while (writer.wants_write()) writer.wait_for(frame, std::chrono::milliseconds(100));
  });
  const std::string got = read_input(paste.size());
  client.join();
  EXPECT_EQ(got.size(), paste.size());
  EXPECT_TRUE(got == paste) << "input lost or reordered";
  EXPECT_EQ(port(5) & 0x02, 0) << "no overrun";
  EXPECT_EQ(on_loop([this] { return console_->counters().bytes_in; }), paste.size());
}

TEST_F(ConsoleFixture, BreakReachesTheLine) {
  auto writer = attach(from_start(true));
  writer.send("x", true);
  writer.flush();
  EXPECT_EQ(read_input(1), "x");
  const auto deadline = std::chrono::steady_clock::now() + kWait;
  uint8_t lsr = 0;
  while (!((lsr = port(5)) & 0x01) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::yield();
  }
  EXPECT_EQ(lsr & 0x11, 0x11) << "BI with the NUL at the head";
  EXPECT_EQ(port(0), 0);
}

// A client that stops reading costs the guest nothing: it prints on, the
// others keep up, and the slow one is told how much it missed.
struct SmallHistory : ConsoleFixture {
  SmallHistory() : ConsoleFixture(GuestConsoleLimits{.history_bytes = 64 * 1024}) {}
};

TEST_F(SmallHistory, AStuckViewerMissesBytesAndStallsNobody) {
  auto stuck = attach(pb::ConsoleAttach());
  auto live = attach(pb::ConsoleAttach());
  const std::string line(99, 'x');
  std::thread reader(
      [&] { EXPECT_NE(read_until(live, "the end\n").find("the end"), std::string::npos); });
  for (int i = 0; i < 100000; ++i) print(line + "\n");  // 10 MB past a stuck client
  print("the end\n");
  reader.join();
  uint64_t missed = 0;
  std::string got;
  pb::ConsoleOutput frame;
  while (got.find("the end\n") == std::string::npos && stuck.wait_for(frame, kWait)) {
    missed += frame.missed();
    got += frame.data();
  }
  EXPECT_GT(missed, 0u);
  EXPECT_NE(got.find("the end\n"), std::string::npos);
  // Counted for every client (the live one may have fallen behind too).
  EXPECT_GE(on_loop([this] { return console_->counters().client_missed; }), missed);
}

TEST_F(ConsoleFixture, TheHistoryTravelsInTheState) {
  print("before the snapshot\n");
  const auto state = on_loop([this] { return console_->save(); });
  EXPECT_EQ(state.end_offset(), 20u);
  boost::asio::io_context other_events;
  GuestConsole restored(other_events, scratch_ / "restored.log");
  restored.restore(state);
  EXPECT_EQ(restored.save().history(), "before the snapshot\n");
  state::v1::ConsoleState bad = state;
  bad.set_end_offset(3);
  EXPECT_THROW(restored.restore(bad), InputError);
  bad.set_end_offset(UINT64_MAX);  // would wrap at the next byte
  EXPECT_THROW(restored.restore(bad), InputError);
  restored.finish(std::chrono::seconds(1));
}

TEST_F(ConsoleFixture, MalformedInputEndsThatClientOnly) {
  auto bad = attach(from_start(true));
  auto viewer = attach(pb::ConsoleAttach());
  const uint8_t garbage[] = {8, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  ASSERT_EQ(::send(bad.fd(), garbage, sizeof garbage, MSG_NOSIGNAL),
            static_cast<ssize_t>(sizeof garbage));
  pb::ConsoleOutput frame;
  std::string notices;
  while (bad.wait_for(frame, kWait)) notices += frame.notice();
  EXPECT_NE(notices.find("not a keel.api.v1.ConsoleInput"), std::string::npos) << notices;
  const uint8_t huge[] = {0, 0, 1, 0};  // a 64 KiB input frame
  auto big = attach(from_start(true));
  ::send(big.fd(), huge, sizeof huge, MSG_NOSIGNAL);
  notices.clear();
  while (big.wait_for(frame, kWait)) notices += frame.notice();
  EXPECT_NE(notices.find("input frame of 65536 bytes"), std::string::npos) << notices;
  print("still here\n");
  EXPECT_EQ(read_until(viewer, "still here\n"), "still here\n");
}

TEST_F(ConsoleFixture, APromptReachesTheLogWhenTheGuestGoesQuiet) {
  print("login: ");
  const std::string log = scratch_ / "console.log";
  const auto deadline = std::chrono::steady_clock::now() + kWait;
  std::string text;
  while (text != "login: " && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    std::ifstream in(log);
    text.assign(std::istreambuf_iterator<char>(in), {});
  }
  EXPECT_EQ(text, "login: ");
}

}  // namespace
}  // namespace keel
