// The control socket server on a real Unix socket in a scratch directory,
// its event loop in a thread, a fake VMM behind it.
#include "control/control_server.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>
#include <memory>

#include "common/error.h"
#include "control/control_client.h"
#include "tests/support/control_test_support.h"

namespace keel {
namespace {

using testing::FakeHandler;
using testing::RawClient;
using testing::status_request;
namespace control = keel::api::v1;

std::string frame_header(uint32_t length) {
  std::string header(4, '\0');
  std::memcpy(header.data(), &length, 4);  // little-endian, like the hosts
  return header;
}

class ControlServerTest : public ::testing::Test {
 protected:
  void start(ControlServerLimits limits = {}) {
    server_ = std::make_unique<ControlServer>(loop_.events(), path_, handler_, limits);
    loop_.start();
  }
  void TearDown() override {
    loop_.stop();
    server_.reset();
  }
  size_t connections() {
    return loop_.run_on([this] { return server_->connections(); });
  }
  // Polls the server (on its loop) until `count` connections are open.
  bool wait_for_connections(size_t count) {
    for (int i = 0; i < 1000; ++i) {
      if (connections() == count) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }

  testing::TempDir dir_;
  const std::string path_ = dir_.path() + "/vmm.sock";
  FakeHandler handler_;
  testing::EventLoopThread loop_;
  std::unique_ptr<ControlServer> server_;
};

TEST_F(ControlServerTest, EveryOperationRoundTrips) {
  start();
  RawClient client(path_);

  auto status = client.call(status_request(11));
  EXPECT_TRUE(status.ok());
  EXPECT_EQ(status.id(), 11u);
  EXPECT_EQ(status.api_version(), static_cast<uint32_t>(control::API_VERSION_CURRENT));
  ASSERT_EQ(status.result_case(), control::Response::kStatus);
  EXPECT_EQ(status.status().state(), control::RUN_STATE_RUNNING);
  EXPECT_EQ(status.status().vcpus(), 2u);
  EXPECT_EQ(status.status().memory_bytes(), 512ull << 20);
  ASSERT_EQ(status.status().devices_size(), 2);
  EXPECT_EQ(status.status().devices(0).pci_address(), "00:01.0");

  control::Request pause;
  pause.set_id(12);
  pause.mutable_pause();
  auto paused = client.call(pause);
  EXPECT_TRUE(paused.ok());
  EXPECT_EQ(paused.id(), 12u);
  ASSERT_EQ(paused.result_case(), control::Response::kPause);
  EXPECT_EQ(paused.pause().state(), control::RUN_STATE_PAUSED);

  control::Request resume;
  resume.mutable_resume();
  auto resumed = client.call(resume);
  ASSERT_EQ(resumed.result_case(), control::Response::kResume);
  EXPECT_EQ(resumed.resume().state(), control::RUN_STATE_RUNNING);

  control::Request snapshot;
  snapshot.mutable_snapshot()->set_dir("/var/lib/keel/snap1");
  auto snapped = client.call(snapshot);
  ASSERT_EQ(snapped.result_case(), control::Response::kSnapshot);
  EXPECT_EQ(snapped.snapshot().dir(), "/var/lib/keel/snap1");
  EXPECT_EQ(snapped.snapshot().pause_ms(), 42u);

  control::Request shutdown;
  shutdown.mutable_shutdown()->set_timeout_ms(1500);
  auto shut = client.call(shutdown);
  ASSERT_EQ(shut.result_case(), control::Response::kShutdown);
  EXPECT_FALSE(shut.shutdown().forced());

  control::Request kill;
  kill.mutable_kill();
  auto killed = client.call(kill);
  ASSERT_EQ(killed.result_case(), control::Response::kKill);
  EXPECT_EQ(killed.kill().state(), control::RUN_STATE_STOPPED);

  // The handler saw each request as sent, arguments included.
  const auto seen = handler_.requests();
  ASSERT_EQ(seen.size(), 6u);
  EXPECT_EQ(seen[0].id(), 11u);
  EXPECT_EQ(seen[3].snapshot().dir(), "/var/lib/keel/snap1");
  EXPECT_EQ(seen[4].shutdown().timeout_ms(), 1500u);
  EXPECT_EQ(seen[5].operation_case(), control::Request::kKill);
}

TEST_F(ControlServerTest, ErrorAnswersComeBackAsSent) {
  start();
  RawClient client(path_);
  control::Request resume;
  resume.set_id(5);
  resume.mutable_resume();
  auto refused = client.call(resume);
  EXPECT_FALSE(refused.ok());
  EXPECT_EQ(refused.id(), 5u);
  EXPECT_EQ(refused.error().code(), control::ERROR_CODE_INVALID_STATE);
  EXPECT_EQ(refused.error().message(), "the guest is not paused");
}

TEST_F(ControlServerTest, SocketIsMode0600EvenWithAnOpenUmask) {
  const mode_t old = ::umask(0);
  start();
  ::umask(old);
  struct stat st {};
  ASSERT_EQ(::lstat(path_.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(st.st_uid, ::getuid());
}

TEST_F(ControlServerTest, MalformedFrameIsAnsweredAndTheConnectionGoesOn) {
  start();
  RawClient client(path_);
  // Field 1 as a length-delimited field running past the end: not a Request.
  const std::string garbage = "\x0a\x7f\x01\x02";
  client.send_bytes(frame_header(garbage.size()) + garbage);
  auto response = client.read_response();
  ASSERT_TRUE(response);
  EXPECT_FALSE(response->ok());
  EXPECT_EQ(response->error().code(), control::ERROR_CODE_MALFORMED_FRAME);
  EXPECT_EQ(response->id(), 0u);
  EXPECT_TRUE(client.call(status_request(2)).ok());
  EXPECT_EQ(handler_.requests().size(), 1u);
}

TEST_F(ControlServerTest, RequestWithoutAnOperationIsUnknown) {
  start();
  RawClient client(path_);
  control::Request empty;
  empty.set_id(9);
  auto response = client.call(empty);
  EXPECT_FALSE(response.ok());
  EXPECT_EQ(response.id(), 9u);
  EXPECT_EQ(response.error().code(), control::ERROR_CODE_UNKNOWN_REQUEST);

  // An operation from a newer client (field 99, unknown here) and an empty frame.
  const std::string newer = std::string("\x10\x07\x9a\x06\x00", 5);
  client.send_bytes(frame_header(newer.size()) + newer);
  response = *client.read_response();
  EXPECT_EQ(response.error().code(), control::ERROR_CODE_UNKNOWN_REQUEST);
  EXPECT_EQ(response.id(), 7u);
  client.send_bytes(frame_header(0));
  EXPECT_EQ(client.read_response()->error().code(), control::ERROR_CODE_UNKNOWN_REQUEST);
  EXPECT_TRUE(handler_.requests().empty());
}

TEST_F(ControlServerTest, NewerApiVersionIsRefused) {
  start();
  RawClient client(path_);
  auto request = status_request(3);
  request.set_api_version(control::API_VERSION_CURRENT + 1);
  auto response = client.call(request);
  EXPECT_EQ(response.error().code(), control::ERROR_CODE_UNSUPPORTED_VERSION);
  request.set_api_version(control::API_VERSION_CURRENT);
  EXPECT_TRUE(client.call(request).ok());
}

TEST_F(ControlServerTest, OversizedFrameIsRefusedAndClosed) {
  start();
  RawClient client(path_);
  client.send_bytes(frame_header(kControlMaxFrameBytes + 1) + "abc");
  auto response = client.read_response();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->error().code(), control::ERROR_CODE_FRAME_TOO_LARGE);
  EXPECT_TRUE(client.closed_by_server());
  EXPECT_TRUE(wait_for_connections(0));

  // A 4 GiB announcement the same; the server never allocates for it.
  RawClient second(path_);
  second.send_bytes(frame_header(0xffffffffu));
  EXPECT_EQ(second.read_response()->error().code(), control::ERROR_CODE_FRAME_TOO_LARGE);
  EXPECT_TRUE(second.closed_by_server());
}

TEST_F(ControlServerTest, FrameOfExactlyTheLimitIsServed) {
  start();
  RawClient client(path_);
  control::Request request;
  request.set_id(1);
  // A directory name long enough to make the whole Request exactly 1 MiB.
  std::string& dir = *request.mutable_snapshot()->mutable_dir();
  dir.assign(kControlMaxFrameBytes - 16, 'd');
  while (request.ByteSizeLong() > kControlMaxFrameBytes) dir.pop_back();
  while (request.ByteSizeLong() < kControlMaxFrameBytes) dir.push_back('d');
  ASSERT_EQ(request.ByteSizeLong(), kControlMaxFrameBytes);
  auto response = client.call(request);
  ASSERT_EQ(handler_.requests().size(), 1u);
  EXPECT_EQ(handler_.requests()[0].snapshot().dir(), request.snapshot().dir());
  // The fake echoes the directory: its answer is over the limit, and the
  // server says so instead of sending it.
  EXPECT_FALSE(response.ok());
  EXPECT_EQ(response.error().code(), control::ERROR_CODE_INTERNAL);
  EXPECT_NE(response.error().message().find("exceeds the 1 MiB frame limit"), std::string::npos);
  EXPECT_EQ(response.id(), 1u);
  EXPECT_TRUE(client.call(status_request()).ok());
}

TEST_F(ControlServerTest, ClientLeavingHalfwayThroughAFrameDoesNoHarm) {
  start();
  {
    RawClient client(path_);
    client.send_bytes(frame_header(100) + "only part of it");
  }
  {
    RawClient client(path_);
    client.send_bytes(std::string("\x05\x00", 2));  // half a header
  }
  EXPECT_TRUE(wait_for_connections(0));
  RawClient client(path_);
  EXPECT_TRUE(client.call(status_request()).ok());
  EXPECT_TRUE(handler_.requests().size() == 1);
}

TEST_F(ControlServerTest, ClientLeavingBeforeTheAnswerDoesNoHarm) {
  handler_.set_mode(FakeHandler::Mode::kHold);
  start();
  {
    RawClient client(path_);
    client.send_request(status_request());
    handler_.wait_for_held(1);
  }
  EXPECT_TRUE(wait_for_connections(1));  // not noticed until the answer is written
  // Answering into the closed connection: no SIGPIPE, no crash.
  handler_.wait_for_held(1).front()(handler_.answer(status_request()));
  handler_.clear_held();
  EXPECT_TRUE(wait_for_connections(0));
  handler_.set_mode(FakeHandler::Mode::kAnswer);
  RawClient client(path_);
  EXPECT_TRUE(client.call(status_request()).ok());
}

TEST_F(ControlServerTest, TwoClientsAreServedIndependently) {
  handler_.set_mode(FakeHandler::Mode::kHold);
  start();
  RawClient slow(path_);
  RawClient quick(path_);
  control::Request snapshot;
  snapshot.set_id(100);
  snapshot.mutable_snapshot()->set_dir("/snap");
  slow.send_request(snapshot);
  auto held = handler_.wait_for_held(1);
  handler_.set_mode(FakeHandler::Mode::kAnswer);
  // While the snapshot is under way, the other client gets its answers.
  for (uint64_t id = 1; id <= 3; ++id) {
    auto response = quick.call(status_request(id));
    EXPECT_TRUE(response.ok());
    EXPECT_EQ(response.id(), id);
  }
  held.front()(handler_.answer(snapshot));
  held.front()(handler_.answer(status_request()));  // a second reply is ignored
  handler_.clear_held();
  held.clear();
  auto response = slow.read_response();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->id(), 100u);
  EXPECT_EQ(response->result_case(), control::Response::kSnapshot);
  // Exactly one answer: the next one belongs to the next request.
  EXPECT_EQ(slow.call(status_request(101)).id(), 101u);
}

TEST_F(ControlServerTest, PipelinedRequestsAreAnsweredInOrder) {
  start();
  RawClient client(path_);
  std::string frames;
  for (uint64_t id = 1; id <= 20; ++id) frames += encode_control_frame(status_request(id));
  client.send_bytes(frames);
  for (uint64_t id = 1; id <= 20; ++id) {
    auto response = client.read_response();
    ASSERT_TRUE(response);
    EXPECT_EQ(response->id(), id);
  }
}

TEST_F(ControlServerTest, RepliesMayComeFromAnotherThread) {
  handler_.set_mode(FakeHandler::Mode::kAnswerFromThread);
  start();
  RawClient client(path_);
  for (uint64_t id = 1; id <= 5; ++id) EXPECT_EQ(client.call(status_request(id)).id(), id);
}

TEST_F(ControlServerTest, DroppedReplyAndThrowingHandlerAnswerInternal) {
  handler_.set_mode(FakeHandler::Mode::kDrop);
  start();
  RawClient client(path_);
  auto dropped = client.call(status_request(1));
  EXPECT_EQ(dropped.error().code(), control::ERROR_CODE_INTERNAL);
  EXPECT_EQ(dropped.id(), 1u);
  handler_.set_mode(FakeHandler::Mode::kThrow);
  auto thrown = client.call(status_request(2));
  EXPECT_EQ(thrown.error().code(), control::ERROR_CODE_INTERNAL);
  EXPECT_EQ(thrown.error().message(), "handler exploded");
  handler_.set_mode(FakeHandler::Mode::kAnswer);
  EXPECT_TRUE(client.call(status_request(3)).ok());
}

TEST_F(ControlServerTest, HalfFrameTimesOut) {
  start({.max_connections = 32,
         .frame_timeout = std::chrono::milliseconds(200),
         .write_timeout = std::chrono::milliseconds(30000)});
  RawClient client(path_);
  client.send_bytes(frame_header(50) + "slow");
  EXPECT_TRUE(client.closed_by_server());
  // An idle connection with no frame begun stays open.
  RawClient idle(path_);
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  EXPECT_TRUE(idle.call(status_request()).ok());
}

// A client that connects and says nothing, or says nothing more, cannot
// keep one of the few connection slots for good.
TEST_F(ControlServerTest, IdleConnectionsAreClosedAfterTheIdleTimeout) {
  start({.max_connections = 32,
         .frame_timeout = std::chrono::milliseconds(30000),
         .write_timeout = std::chrono::milliseconds(30000),
         .idle_timeout = std::chrono::milliseconds(200)});
  RawClient silent(path_);
  EXPECT_TRUE(silent.closed_by_server());
  RawClient done(path_);
  EXPECT_TRUE(done.call(status_request()).ok());
  EXPECT_TRUE(done.closed_by_server());
  EXPECT_TRUE(wait_for_connections(0));
  RawClient next(path_);
  EXPECT_TRUE(next.call(status_request()).ok()) << "the server serves on";
}

TEST_F(ControlServerTest, ClientThatStopsReadingIsDroppedAndOthersGoOn) {
  handler_.set_status_padding(16384);
  start({.max_connections = 32,
         .frame_timeout = std::chrono::milliseconds(30000),
         .write_timeout = std::chrono::milliseconds(300)});
  RawClient stalled(path_);
  // 2000 requests whose answers (16 KiB each) fill every socket buffer.
  std::string frames;
  for (uint64_t id = 1; id <= 2000; ++id) frames += encode_control_frame(status_request(id));
  stalled.send_bytes(frames);
  handler_.wait_for_requests(10);
  RawClient other(path_);
  EXPECT_TRUE(other.call(status_request()).ok());
  EXPECT_TRUE(wait_for_connections(1));  // the stalled one went
  size_t answers = 0;
  try {
    while (stalled.read_response()) ++answers;
  } catch (const std::runtime_error&) {
    // The answer being written when the server gave up, cut short.
  }
  EXPECT_LT(answers, 2000u);
  EXPECT_TRUE(other.call(status_request()).ok());
}

TEST_F(ControlServerTest, TooManyClientsAreTurnedAway) {
  start({.max_connections = 2,
         .frame_timeout = std::chrono::milliseconds(30000),
         .write_timeout = std::chrono::milliseconds(30000)});
  RawClient first(path_);
  RawClient second(path_);
  EXPECT_TRUE(first.call(status_request()).ok());
  EXPECT_TRUE(second.call(status_request()).ok());
  RawClient third(path_);
  auto busy = third.read_response();
  ASSERT_TRUE(busy);
  EXPECT_EQ(busy->error().code(), control::ERROR_CODE_BUSY);
  EXPECT_TRUE(third.closed_by_server());
  first.close();
  EXPECT_TRUE(wait_for_connections(1));
  RawClient fourth(path_);
  EXPECT_TRUE(fourth.call(status_request()).ok());
}

TEST_F(ControlServerTest, StaleSocketFileIsReplaced) {
  {
    // A socket file nobody listens on, as a killed VMM leaves it.
    UniqueFd stale(::socket(AF_UNIX, SOCK_STREAM, 0));
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::strncpy(address.sun_path, path_.c_str(), sizeof(address.sun_path) - 1);
    ASSERT_EQ(::bind(stale.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  }
  start();
  RawClient client(path_);
  EXPECT_TRUE(client.call(status_request()).ok());
}

TEST_F(ControlServerTest, LiveSocketAndOtherFilesAreRefused) {
  start();
  FakeHandler other;
  EXPECT_THROW(ControlServer(loop_.events(), path_, other), InputError);
  // The first server still serves its socket.
  RawClient client(path_);
  EXPECT_TRUE(client.call(status_request()).ok());

  const std::string file = dir_.path() + "/not-a-socket";
  { std::ofstream(file) << "keep me"; }
  EXPECT_THROW(ControlServer(loop_.events(), file, other), InputError);
  std::ifstream kept(file);
  std::string text;
  std::getline(kept, text);
  EXPECT_EQ(text, "keep me");

  EXPECT_THROW(ControlServer(loop_.events(), dir_.path() + "/missing/dir/vmm.sock", other),
               InputError);
  EXPECT_THROW(ControlServer(loop_.events(), dir_.path() + "/" + std::string(120, 'x'), other),
               InputError);
}

TEST_F(ControlServerTest, SocketFileIsRemovedAtShutdownAndClientsClosed) {
  start();
  RawClient client(path_);
  EXPECT_TRUE(client.call(status_request()).ok());
  loop_.stop();
  server_.reset();
  struct stat st {};
  EXPECT_NE(::lstat(path_.c_str(), &st), 0);
  EXPECT_TRUE(client.closed_by_server());
  // The path is free for the next VMM.
  testing::EventLoopThread loop;
  ControlServer next(loop.events(), path_, handler_);
  EXPECT_EQ(::lstat(path_.c_str(), &st), 0);
}

TEST_F(ControlServerTest, ControlClientTalksToTheServer) {
  start();
  ControlClient client(path_, std::chrono::seconds(5));
  auto response = client.call(status_request(), std::chrono::seconds(5));
  EXPECT_TRUE(response.ok());
  EXPECT_NE(response.id(), 0u);  // the client numbered it
  handler_.set_mode(FakeHandler::Mode::kHold);
  try {
    client.call(status_request(), std::chrono::milliseconds(200));
    ADD_FAILURE() << "no timeout";
  } catch (const ControlClientError& e) {
    EXPECT_EQ(e.kind(), ControlClientError::Kind::kTimeout);
  }
  handler_.clear_held();
}

TEST(ControlClientTest, ReportsMissingAndStaleSockets) {
  testing::TempDir dir;
  try {
    ControlClient(dir.path() + "/none.sock", std::chrono::seconds(1));
    ADD_FAILURE() << "connected to nothing";
  } catch (const ControlClientError& e) {
    EXPECT_EQ(e.kind(), ControlClientError::Kind::kConnect);
    EXPECT_NE(std::string(e.what()).find("no such socket"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace keel
