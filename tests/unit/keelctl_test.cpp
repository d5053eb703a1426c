// The keelctl binary against a control server in this test: what it prints,
// and its exit codes (documented in keelctl --help).
#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <filesystem>
#include <memory>

#include "common/child_process.h"
#include "control/control_server.h"
#include "tests/support/control_test_support.h"

namespace keel {
namespace {

using testing::FakeHandler;
namespace control = keel::api::v1;

constexpr int kDone = 0, kRefused = 1, kBadCommandLine = 2, kNoConnection = 3, kNoAnswer = 4;

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

class KeelctlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = std::make_unique<ControlServer>(loop_.events(), path_, handler_);
    loop_.start();
  }
  void TearDown() override {
    loop_.stop();
    server_.reset();
  }

  CommandResult keelctl(std::vector<std::string> arguments) {
    arguments.insert(arguments.begin(), KEELCTL_PATH);
    return run_command(arguments, std::chrono::seconds(30));
  }
  CommandResult keelctl_on_socket(std::vector<std::string> arguments) {
    arguments.insert(arguments.begin(), {"--socket", path_});
    return keelctl(arguments);
  }

  testing::TempDir dir_;
  const std::string path_ = dir_.path() + "/vmm.sock";
  FakeHandler handler_;
  testing::EventLoopThread loop_;
  std::unique_ptr<ControlServer> server_;
};

TEST_F(KeelctlTest, StatusForPeople) {
  auto result = keelctl_on_socket({"status"});
  EXPECT_EQ(result.exit_code, kDone) << result.err;
  EXPECT_TRUE(contains(result.out, "state:     running\n")) << result.out;
  EXPECT_TRUE(contains(result.out, "vcpus:     2\n")) << result.out;
  EXPECT_TRUE(contains(result.out, "memory:    512 MiB\n")) << result.out;
  EXPECT_TRUE(contains(result.out, "uptime:    1h 2m 3s\n")) << result.out;
  EXPECT_TRUE(contains(result.out, "  00:01.0  virtio-blk  path=/var/lib/keel/disk.img\n"))
      << result.out;
  EXPECT_TRUE(contains(result.out, "  -        uart8250    port=0x3f8\n")) << result.out;
  EXPECT_TRUE(result.err.empty()) << result.err;
}

TEST_F(KeelctlTest, StatusAsJson) {
  auto result = keelctl_on_socket({"status", "--json"});
  ASSERT_EQ(result.exit_code, kDone) << result.err;
  EXPECT_EQ(std::count(result.out.begin(), result.out.end(), '\n'), 1) << result.out;
  EXPECT_TRUE(contains(result.out, "\"memory_bytes\":\"536870912\"")) << result.out;
  EXPECT_TRUE(contains(result.out, "\"state\":\"RUN_STATE_RUNNING\"")) << result.out;
  control::Response response;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(result.out, &response).ok());
  EXPECT_TRUE(response.ok());
  EXPECT_EQ(response.status().vcpus(), 2u);
  EXPECT_EQ(response.status().devices(0).type(), "virtio-blk");
}

TEST_F(KeelctlTest, PauseResumeAndRefusals) {
  auto paused = keelctl_on_socket({"pause"});
  EXPECT_EQ(paused.exit_code, kDone) << paused.err;
  EXPECT_TRUE(contains(paused.out, "paused")) << paused.out;

  auto again = keelctl_on_socket({"pause"});
  EXPECT_EQ(again.exit_code, kRefused);
  EXPECT_EQ(again.err, "keelctl: pause: the guest is already paused (invalid state)\n");
  EXPECT_TRUE(again.out.empty());

  auto json = keelctl_on_socket({"--json", "pause"});
  EXPECT_EQ(json.exit_code, kRefused);
  EXPECT_TRUE(contains(json.out, "\"ok\":false")) << json.out;
  EXPECT_TRUE(contains(json.out, "\"code\":\"ERROR_CODE_INVALID_STATE\"")) << json.out;

  auto status = keelctl_on_socket({"status"});
  EXPECT_TRUE(contains(status.out, "state:     paused\n")) << status.out;

  auto resumed = keelctl_on_socket({"resume"});
  EXPECT_EQ(resumed.exit_code, kDone) << resumed.err;
  EXPECT_EQ(resumed.out, "running\n");
}

TEST_F(KeelctlTest, ShutdownKillAndSnapshot) {
  auto shutdown = keelctl_on_socket({"shutdown", "--timeout", "2.5"});
  EXPECT_EQ(shutdown.exit_code, kDone) << shutdown.err;
  EXPECT_EQ(shutdown.out, "the guest powered off after 1.234 s\n");
  auto kill = keelctl_on_socket({"kill"});
  EXPECT_EQ(kill.exit_code, kDone) << kill.err;
  EXPECT_EQ(kill.out, "killed\n");

  auto snapshot = keelctl_on_socket({"snapshot", "/var/lib/keel/snap"});
  EXPECT_EQ(snapshot.exit_code, kDone) << snapshot.err;
  EXPECT_EQ(
      snapshot.out,
      "snapshot in /var/lib/keel/snap: 300 MiB written, guest paused 0.042 s, took 1.500 s\n");
  // A relative directory is sent as an absolute one: the VMM's working
  // directory is not keelctl's.
  auto relative = keelctl_on_socket({"snapshot", "snaps/./one"});
  EXPECT_EQ(relative.exit_code, kDone) << relative.err;
  auto failed = keelctl_on_socket({"snapshot", "/nonexistent/snap"});
  EXPECT_EQ(failed.exit_code, kRefused);
  EXPECT_TRUE(contains(failed.err, "cannot create /nonexistent/snap")) << failed.err;

  const auto seen = handler_.requests();
  ASSERT_EQ(seen.size(), 5u);
  EXPECT_EQ(seen[0].shutdown().timeout_ms(), 2500u);
  EXPECT_EQ(seen[1].operation_case(), control::Request::kKill);
  EXPECT_EQ(seen[2].snapshot().dir(), "/var/lib/keel/snap");
  EXPECT_EQ(seen[3].snapshot().dir(), (std::filesystem::current_path() / "snaps/one").string());
}

TEST_F(KeelctlTest, CannotConnect) {
  auto missing = keelctl({"--socket", dir_.path() + "/none.sock", "status"});
  EXPECT_EQ(missing.exit_code, kNoConnection);
  EXPECT_TRUE(contains(missing.err, "no such socket")) << missing.err;

  // A socket file nobody listens on.
  const std::string stale = dir_.path() + "/stale.sock";
  {
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM, 0));
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::strncpy(address.sun_path, stale.c_str(), sizeof(address.sun_path) - 1);
    ASSERT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  }
  auto refused = keelctl({"--socket", stale, "status"});
  EXPECT_EQ(refused.exit_code, kNoConnection);
  EXPECT_TRUE(contains(refused.err, "nobody is listening")) << refused.err;
}

TEST_F(KeelctlTest, NoAnswerInTime) {
  handler_.set_mode(FakeHandler::Mode::kHold);
  auto result = keelctl_on_socket({"--wait", "0.3", "status"});
  EXPECT_EQ(result.exit_code, kNoAnswer);
  EXPECT_TRUE(contains(result.err, "did not answer in time")) << result.err;
  handler_.clear_held();
}

TEST_F(KeelctlTest, BadCommandLines) {
  for (const auto& arguments : std::vector<std::vector<std::string>>{
           {"--socket", path_},
           {"--socket", path_, "reboot"},
           {"--socket", path_, "snapshot"},
           {"--socket", path_, "snapshot", "a", "b"},
           {"--socket", path_, "pause", "--timeout", "3"},
           {"--socket", path_, "shutdown", "--timeout", "soon"},
           {"--socket", path_, "status", "--verbose"},
           {"--socket", path_, "status", "--prometheus"},
           {"--socket", path_, "metrics", "--prometheus", "--json"},
           {"--socket", path_, "metrics", "--watch", "--interval", "0.01"},
           {"--socket", path_, "metrics", "now"},
           {"--socket"},
           {"status"},
       }) {
    auto result = keelctl(arguments);
    EXPECT_EQ(result.exit_code, kBadCommandLine) << arguments.back();
    EXPECT_TRUE(contains(result.err, "usage: keelctl")) << result.err;
  }
  EXPECT_TRUE(handler_.requests().empty());

  auto help = keelctl({"--help"});
  EXPECT_EQ(help.exit_code, kDone);
  EXPECT_TRUE(contains(help.out, "Exit codes: 0 done; 1 the VMM refused")) << help.out;
}

// The fake VMM's metrics (tests/support/control_test_support.h): a
// counter, a gauge whose help needs escaping, a histogram.
TEST_F(KeelctlTest, MetricsForPeopleAsJsonAndForPrometheus) {
  auto people = keelctl_on_socket({"metrics"});
  ASSERT_EQ(people.exit_code, kDone) << people.err;
  EXPECT_TRUE(contains(people.out, "keel_disk_read_bytes_total{disk=\"vda\"} 0\n")) << people.out;
  EXPECT_TRUE(contains(people.out, "keel_disk_requests_in_flight{disk=\"vda\"} 2\n")) << people.out;
  EXPECT_TRUE(contains(people.out,
                       "keel_disk_request_duration_seconds{disk=\"vda\"} count=2 "
                       "mean=0.00154 p50<=0.0001 p99<=0.005\n"))
      << people.out;

  auto json = keelctl_on_socket({"metrics", "--json"});
  ASSERT_EQ(json.exit_code, kDone) << json.err;
  control::Response response;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(json.out, &response).ok()) << json.out;
  ASSERT_EQ(response.metrics().families_size(), 3);
  EXPECT_EQ(response.metrics().families(0).samples(0).value(), 4096);
  EXPECT_GT(response.metrics().time_unix_ms(), 0u);

  auto text = keelctl_on_socket({"metrics", "--prometheus"});
  ASSERT_EQ(text.exit_code, kDone) << text.err;
  EXPECT_EQ(text.out,
            "# HELP keel_disk_read_bytes_total Bytes read\n"
            "# TYPE keel_disk_read_bytes_total counter\n"
            "keel_disk_read_bytes_total{disk=\"vda\"} 8192\n"
            "# HELP keel_disk_requests_in_flight Requests \"in flight\"\\nnow\n"
            "# TYPE keel_disk_requests_in_flight gauge\n"
            "keel_disk_requests_in_flight{disk=\"vda\"} 2\n"
            "# HELP keel_disk_request_duration_seconds Latency\n"
            "# TYPE keel_disk_request_duration_seconds histogram\n"
            "keel_disk_request_duration_seconds_bucket{disk=\"vda\",le=\"2.5e-05\"} 0\n"
            "keel_disk_request_duration_seconds_bucket{disk=\"vda\",le=\"5e-05\"} 0\n"
            "keel_disk_request_duration_seconds_bucket{disk=\"vda\",le=\"0.0001\"} 1\n"
            "keel_disk_request_duration_seconds_bucket{disk=\"vda\",le=\"0.00025\"} 1\n"
            "keel_disk_request_duration_seconds_bucket{disk=\"vda\",le=\"0.0005\"} 1\n"
            "keel_disk_request_duration_seconds_bucket{disk=\"vda\",le=\"0.001\"} 1\n"
            "keel_disk_request_duration_seconds_bucket{disk=\"vda\",le=\"0.0025\"} 1\n"
            "keel_disk_request_duration_seconds_bucket{disk=\"vda\",le=\"0.005\"} 2\n"
            "keel_disk_request_duration_seconds_bucket{disk=\"vda\",le=\"0.01\"} 2\n"
            "keel_disk_request_duration_seconds_bucket{disk=\"vda\",le=\"0.025\"} 2\n"
            "keel_disk_request_duration_seconds_bucket{disk=\"vda\",le=\"0.05\"} 2\n"
            "keel_disk_request_duration_seconds_bucket{disk=\"vda\",le=\"0.1\"} 2\n"
            "keel_disk_request_duration_seconds_bucket{disk=\"vda\",le=\"0.25\"} 2\n"
            "keel_disk_request_duration_seconds_bucket{disk=\"vda\",le=\"0.5\"} 2\n"
            "keel_disk_request_duration_seconds_bucket{disk=\"vda\",le=\"1\"} 2\n"
            "keel_disk_request_duration_seconds_bucket{disk=\"vda\",le=\"2.5\"} 2\n"
            "keel_disk_request_duration_seconds_bucket{disk=\"vda\",le=\"5\"} 2\n"
            "keel_disk_request_duration_seconds_bucket{disk=\"vda\",le=\"10\"} 2\n"
            "keel_disk_request_duration_seconds_bucket{disk=\"vda\",le=\"+Inf\"} 2\n"
            "keel_disk_request_duration_seconds_sum{disk=\"vda\"} 0.00308\n"
            "keel_disk_request_duration_seconds_count{disk=\"vda\"} 2\n");
}

// --watch: one connection, a sample per interval with each counter's rate.
TEST_F(KeelctlTest, MetricsWatchShowsRates) {
  std::vector<std::string> arguments{"timeout",    "-s",         "INT", "1.5",
                                     KEELCTL_PATH, "--socket",   path_, "metrics",
                                     "--watch",    "--interval", "0.2"};
  auto result = run_command(arguments, std::chrono::seconds(30));
  EXPECT_GE(handler_.requests().size(), 3u) << result.out;
  // 4096 more bytes per sample, one sample per 0.2 s: about 20480/s.
  EXPECT_TRUE(contains(result.out, "keel_disk_read_bytes_total{disk=\"vda\"} 8192  ("))
      << result.out;
  EXPECT_TRUE(contains(result.out, "/s)\n")) << result.out;
}

TEST_F(KeelctlTest, SocketFromTheEnvironment) {
  auto result =
      run_command({KEELCTL_PATH, "status"}, std::chrono::seconds(30), {"KEEL_API_SOCKET=" + path_});
  EXPECT_EQ(result.exit_code, kDone) << result.err;
}

}  // namespace
}  // namespace keel
