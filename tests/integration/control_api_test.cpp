// keel-vmm's control socket against a running test guest (label kvm):
// keelctl status, pause/resume (measured by the guest's own heartbeat
// clock), shutdown through the ACPI power button (honoured, and ignored
// until the timeout kills), kill, and bad frames, unknown requests and
// clients that leave halfway, after which the VMM still answers; the fence
// deadline (--fence-file) pausing the guest.
#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <thread>

#include "common/fence_deadline.h"
#include "common/unique_fd.h"
#include "proto/control.pb.h"
#include "tests/support/keelctl_result.h"
#include "tests/support/live_vmm.h"
#include "tests/support/scratch_dir.h"
#include "tests/support/vmm_run.h"

namespace keel::testing {
namespace {

namespace pb = ::keel::api::v1;
using std::chrono::milliseconds;
using std::chrono::seconds;
using Clock = std::chrono::steady_clock;

// keelctl --json prints the VMM's Response as one line of JSON.
std::vector<std::string> testos(const std::string& cmdline, std::vector<std::string> extra = {}) {
  std::vector<std::string> args{"--kernel", testos_bzimage(), "--memory",
                                "64M",      "--cmdline",      cmdline};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

struct Beat {
  uint64_t seq, t_us;
};
std::vector<Beat> beats(const LiveVmm& vmm) {
  std::vector<Beat> out;
  for (const auto& l : vmm.lines("testos: beat ")) {
    out.push_back({field_u64(l.text, "seq"), field_u64(l.text, "t_us")});
  }
  return out;
}

TEST(ControlApi, StatusReportsVcpusMemoryAndDevices) {
  std::string disk = ::testing::TempDir() + "keel-control-disk.img";
  std::ofstream(disk).close();
  std::filesystem::resize_file(disk, 8 << 20);
  struct Remove {
    std::string p;
    ~Remove() { std::remove(p.c_str()); }
  } remove_disk{disk};

  LiveVmm vmm(testos("job=heartbeat interval_ms=50",
                     {"--cpus", "2", "--memory", "96M", "--disk", "path=" + disk, "--rng"}));
  ASSERT_TRUE(vmm.wait_line("testos: beat seq=1 ")) << vmm.describe();

  auto result = vmm.keelctl({"--json", "status"});
  ASSERT_EQ(result.exit_code, 0) << show(result);
  auto response = parse_json(result);
  ASSERT_TRUE(response.ok()) << result.out;
  ASSERT_EQ(response.result_case(), pb::Response::kStatus) << result.out;
  const auto& s = response.status();
  EXPECT_EQ(s.state(), pb::RUN_STATE_RUNNING);
  EXPECT_EQ(s.vcpus(), 2u);
  EXPECT_EQ(s.memory_bytes(), 96ull << 20);
  EXPECT_EQ(s.pid(), static_cast<uint32_t>(vmm.pid()));
  EXPECT_EQ(s.kernel(), testos_bzimage());
  EXPECT_EQ(s.serial(), "stdout");
  EXPECT_GT(s.uptime_ms(), 0u);
  EXPECT_EQ(s.pauses(), 0u);
  ASSERT_EQ(s.devices_size(), 2) << result.out;
  EXPECT_EQ(s.devices(0).type(), "virtio-blk");
  EXPECT_EQ(s.devices(0).pci_address(), "00:01.0");
  EXPECT_NE(s.devices(0).description().find(disk), std::string::npos) << s.devices(0).description();
  EXPECT_EQ(s.devices(1).type(), "virtio-rng");
  EXPECT_EQ(s.devices(1).pci_address(), "00:02.0");

  // The human form says the same.
  auto text = vmm.keelctl({"status"});
  ASSERT_EQ(text.exit_code, 0) << show(text);
  EXPECT_NE(text.out.find("running"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("96 MiB"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("virtio-blk"), std::string::npos) << text.out;

  auto kill = vmm.keelctl({"kill"});
  EXPECT_EQ(kill.exit_code, 0) << show(kill);
  EXPECT_EQ(vmm.wait_exit(seconds(60)), 14) << vmm.describe();
}

// The guest's heartbeat reads the TSC, which runs on while the vCPUs are
// parked: the pause shows as one gap in t_us between consecutive beats (no
// beat lost, no burst of catch-up beats), at least as long as the time the
// VMM certainly held the vCPUs (from the pause answer to the resume request).
TEST(ControlApi, PauseStopsTheHeartbeatAndResumeContinuesIt) {
  constexpr uint64_t kIntervalMs = 20;
  LiveVmm vmm(testos("job=heartbeat interval_ms=" + std::to_string(kIntervalMs)));
  ASSERT_TRUE(vmm.wait_line("testos: beat seq=5 ")) << vmm.describe();

  auto pause = vmm.keelctl({"--json", "pause"});
  const auto paused_at = Clock::now();
  ASSERT_EQ(pause.exit_code, 0) << show(pause);
  auto p = parse_json(pause);
  ASSERT_TRUE(p.ok()) << pause.out;
  EXPECT_EQ(p.pause().state(), pb::RUN_STATE_PAUSED);

  auto status = vmm.keelctl({"--json", "status"});
  ASSERT_EQ(status.exit_code, 0) << show(status);
  EXPECT_EQ(parse_json(status).status().state(), pb::RUN_STATE_PAUSED) << status.out;
  // A second pause is refused (control.proto: only a running guest pauses); still paused.
  auto again = vmm.keelctl({"--json", "pause"});
  EXPECT_EQ(again.exit_code, 1) << show(again);
  EXPECT_NE(again.out.find("ERROR_CODE_INVALID_STATE"), std::string::npos) << show(again);

  // The pause itself: its length is what the guest's clock must show.
  std::this_thread::sleep_for(milliseconds(1500));
  const auto resuming_at = Clock::now();
  const uint64_t held_us =
      std::chrono::duration_cast<std::chrono::microseconds>(resuming_at - paused_at).count();
  const uint64_t last_before = beats(vmm).back().seq;

  auto resume = vmm.keelctl({"--json", "resume"});
  ASSERT_EQ(resume.exit_code, 0) << show(resume);
  auto r = parse_json(resume);
  ASSERT_TRUE(r.ok()) << resume.out;
  EXPECT_EQ(r.resume().state(), pb::RUN_STATE_RUNNING);

  // Beats continue: a few after the last one seen while paused.
  ASSERT_TRUE(vmm.wait_line("testos: beat seq=" + std::to_string(last_before + 5) + " "))
      << vmm.describe();

  auto all = beats(vmm);
  size_t gaps = 0, gap_at = 0;
  for (size_t i = 0; i < all.size(); ++i) {
    ASSERT_EQ(all[i].seq, i + 1) << "beats lost or repeated\n" << vmm.describe();
    if (i > 0 && all[i].t_us - all[i - 1].t_us >= held_us) ++gaps, gap_at = i;
  }
  ASSERT_EQ(gaps, 1u) << "held " << held_us << " us\n" << vmm.describe();
  std::fprintf(
      stderr,
      "pause: vCPUs held %llu us; the guest saw a gap of %llu us between beats %llu and %llu\n",
      static_cast<unsigned long long>(held_us),
      static_cast<unsigned long long>(all[gap_at].t_us - all[gap_at - 1].t_us),
      static_cast<unsigned long long>(all[gap_at - 1].seq),
      static_cast<unsigned long long>(all[gap_at].seq));
  // The beat that ends the gap was printed after the resume, the ones
  // before it possibly while the VMM was being asked to pause. The vCPU may
  // also have parked halfway through printing a beat whose time it had
  // already taken: that line completes only after the resume, so the last
  // complete line seen while paused can be one short of it.
  EXPECT_GE(all[gap_at].seq, last_before) << vmm.describe();
  EXPECT_LE(all[gap_at].seq, last_before + 2) << vmm.describe();
  // No catch-up burst: the schedule restarts from the late beat (the next
  // beat keeps the guest's own phase, so it may come a little early).
  EXPECT_GE(all[gap_at + 1].t_us - all[gap_at].t_us, kIntervalMs * 1000 / 2) << vmm.describe();

  auto after = vmm.keelctl({"--json", "status"});
  auto s = parse_json(after).status();
  EXPECT_EQ(s.state(), pb::RUN_STATE_RUNNING);
  EXPECT_EQ(s.pauses(), 1u);
  EXPECT_GE(s.paused_ms_total(), held_us / 1000) << after.out;

  // Resume while running is refused or a no-op; either way the guest runs on.
  auto resume_again = vmm.keelctl({"--json", "resume"});
  EXPECT_NE(resume_again.exit_code, 2) << show(resume_again);
  auto kill = vmm.keelctl({"kill"});
  EXPECT_EQ(kill.exit_code, 0) << show(kill);
  EXPECT_EQ(vmm.wait_exit(seconds(60)), 14) << vmm.describe();
}

// keel-vmm --fence-file: once the host's fence deadline passes, the VMM
// pauses its guest by itself (the agent that should have done it may be
// stuck or dead); resume and shutdown are refused until the deadline moves
// forward, and then the guest stays paused until resumed. A VMM whose host
// is fenced already does not start its guest at all.
TEST(ControlApi, FenceDeadlinePausesTheGuestAndHoldsItPaused) {
  ScratchDir dir("keel-fence");
  auto passed = FenceDeadline::create(dir / "passed", 0);
  auto refused = run_vmm(testos("job=heartbeat interval_ms=20", {"--fence-file", dir / "passed"}),
                         seconds(60));
  EXPECT_EQ(refused.exit_code, 1) << describe(refused);
  EXPECT_NE(refused.err.find("the host is fenced"), std::string::npos) << describe(refused);
  EXPECT_TRUE(refused.lines.empty()) << describe(refused);

  auto fence = FenceDeadline::create(dir / "fence", FenceDeadline::now_ns() + 600'000'000'000ull);
  LiveVmm vmm(testos("job=heartbeat interval_ms=20", {"--fence-file", dir / "fence"}));
  ASSERT_TRUE(vmm.wait_line("testos: beat seq=5 ")) << vmm.describe();
  auto status = [&] { return parse_json(vmm.keelctl({"--json", "status"})).status(); };
  EXPECT_FALSE(status().fenced());

  fence.set_deadline_ns(FenceDeadline::now_ns());
  const auto fenced_at = Clock::now();
  pb::StatusResult s;
  while (Clock::now() - fenced_at < seconds(10)) {
    s = status();
    if (s.state() == pb::RUN_STATE_PAUSED) break;
    std::this_thread::sleep_for(milliseconds(20));
  }
  ASSERT_EQ(s.state(), pb::RUN_STATE_PAUSED) << vmm.describe();
  EXPECT_TRUE(s.fenced());
  std::fprintf(stderr, "fence deadline passed to the guest paused: %lld ms (seen by polling)\n",
               static_cast<long long>(
                   std::chrono::duration_cast<milliseconds>(Clock::now() - fenced_at).count()));
  const size_t beats_paused = beats(vmm).size();
  std::this_thread::sleep_for(milliseconds(500));
  EXPECT_LE(beats(vmm).size(), beats_paused + 1) << "the guest runs on while fenced";

  auto resume = vmm.keelctl({"resume"});
  EXPECT_EQ(resume.exit_code, 1) << show(resume);
  EXPECT_NE(resume.err.find("fenced"), std::string::npos) << show(resume);
  auto shutdown = vmm.keelctl({"shutdown"});
  EXPECT_EQ(shutdown.exit_code, 1) << show(shutdown);
  EXPECT_NE(shutdown.err.find("fenced"), std::string::npos) << show(shutdown);

  // The lease confirmed again: no longer fenced, still paused until resumed.
  fence.set_deadline_ns(FenceDeadline::now_ns() + 600'000'000'000ull);
  const auto moved_at = Clock::now();
  while (status().fenced() && Clock::now() - moved_at < seconds(10)) {
    std::this_thread::sleep_for(milliseconds(20));
  }
  s = status();
  EXPECT_FALSE(s.fenced());
  EXPECT_EQ(s.state(), pb::RUN_STATE_PAUSED);
  resume = vmm.keelctl({"resume"});
  ASSERT_EQ(resume.exit_code, 0) << show(resume);
  const uint64_t last = beats(vmm).back().seq;
  ASSERT_TRUE(vmm.wait_line("testos: beat seq=" + std::to_string(last + 5) + " "))
      << vmm.describe();
  EXPECT_EQ(vmm.keelctl({"kill"}).exit_code, 0);
  EXPECT_EQ(vmm.wait_exit(seconds(60)), 14) << vmm.describe();
}

TEST(ControlApi, ShutdownPressesThePowerButtonAndTheTestGuestPowersOff) {
  LiveVmm vmm(testos("job=heartbeat interval_ms=50"));
  ASSERT_TRUE(vmm.wait_line("testos: beat seq=2 ")) << vmm.describe();
  auto result = vmm.keelctl({"--json", "shutdown", "--timeout", "120"}, seconds(180));
  ASSERT_EQ(result.exit_code, 0) << show(result);
  auto response = parse_json(result);
  ASSERT_TRUE(response.ok()) << result.out;
  EXPECT_FALSE(response.shutdown().forced()) << result.out;
  EXPECT_EQ(response.shutdown().state(), pb::RUN_STATE_STOPPED);
  EXPECT_LT(response.shutdown().duration_ms(), 120000u);
  EXPECT_EQ(vmm.wait_exit(seconds(60)), 0) << vmm.describe();
  auto button = vmm.lines("testos: power button");
  ASSERT_EQ(button.size(), 1u) << vmm.describe();
  // It is the guest's last word: no beat after it.
  EXPECT_EQ(button[0].index + 1, vmm.line_count()) << vmm.describe();
}

TEST(ControlApi, ShutdownOfAPausedGuestResumesItFirst) {
  LiveVmm vmm(testos("job=heartbeat interval_ms=50"));
  ASSERT_TRUE(vmm.wait_line("testos: beat seq=2 ")) << vmm.describe();
  auto pause = vmm.keelctl({"pause"});
  ASSERT_EQ(pause.exit_code, 0) << show(pause);
  auto result = vmm.keelctl({"--json", "shutdown", "--timeout", "120"}, seconds(180));
  ASSERT_EQ(result.exit_code, 0) << show(result);
  EXPECT_FALSE(parse_json(result).shutdown().forced()) << result.out;
  EXPECT_EQ(vmm.wait_exit(seconds(60)), 0) << vmm.describe();
  EXPECT_EQ(vmm.lines("testos: power button").size(), 1u) << vmm.describe();
}

// power_button=0: the guest runs on and never answers the button, so the
// VMM kills it once the timeout has passed (exit 14).
TEST(ControlApi, ShutdownOfAGuestThatIgnoresTheButtonKillsAfterTheTimeout) {
  LiveVmm vmm(testos("job=heartbeat interval_ms=50 power_button=0"));
  ASSERT_TRUE(vmm.wait_line("testos: beat seq=2 ")) << vmm.describe();
  const auto asked = Clock::now();
  auto shutdown = std::async(std::launch::async, [&vmm] {
    return vmm.keelctl({"--json", "shutdown", "--timeout", "3"}, seconds(60));
  });
  // Meanwhile another client sees the machine shutting down, and the guest
  // still beats: it ran, it ignored the button.
  bool seen = false;
  size_t lines_then = 0;
  while (!seen && Clock::now() - asked < seconds(3)) {
    auto status = vmm.keelctl({"--json", "status"});
    if (status.exit_code != 0) break;
    seen = parse_json(status).status().state() == pb::RUN_STATE_SHUTTING_DOWN;
    lines_then = vmm.line_count();
  }
  EXPECT_TRUE(seen) << "status never said shutting down";
  if (seen) {
    EXPECT_TRUE(vmm.wait_line("testos: beat ", lines_then, seconds(60))) << vmm.describe();
  }

  auto result = shutdown.get();
  ASSERT_EQ(result.exit_code, 0) << show(result);
  auto response = parse_json(result);
  ASSERT_TRUE(response.ok()) << result.out;
  EXPECT_TRUE(response.shutdown().forced()) << result.out;
  EXPECT_GE(response.shutdown().duration_ms(), 3000u) << result.out;
  EXPECT_GE(Clock::now() - asked, seconds(3));
  EXPECT_EQ(vmm.wait_exit(seconds(60)), 14) << vmm.describe();
  EXPECT_TRUE(vmm.lines("testos: power button").empty()) << vmm.describe();
  EXPECT_NE(vmm.describe().find("did not power off within 3000 ms"), std::string::npos)
      << vmm.describe();
}

TEST(ControlApi, KillStopsTheGuestAtOnce) {
  LiveVmm vmm(testos("job=heartbeat interval_ms=50"));
  ASSERT_TRUE(vmm.wait_line("testos: beat seq=2 ")) << vmm.describe();
  auto result = vmm.keelctl({"--json", "kill"});
  ASSERT_EQ(result.exit_code, 0) << show(result);
  auto response = parse_json(result);
  EXPECT_TRUE(response.ok()) << result.out;
  EXPECT_EQ(response.kill().state(), pb::RUN_STATE_STOPPED);
  EXPECT_EQ(vmm.wait_exit(seconds(60)), 14) << vmm.describe();
  EXPECT_TRUE(vmm.lines("testos: power button").empty()) << vmm.describe();
  EXPECT_NE(vmm.describe().find("kill"), std::string::npos) << vmm.describe();
}

// --- raw frames -------------------------------------------------------------

// A client that writes whatever bytes it likes.
class RawClient {
 public:
  explicit RawClient(const std::string& path)
      : fd_(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    if (fd_.get() < 0) throw std::runtime_error("socket: " + std::string(std::strerror(errno)));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
    if (::connect(fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      throw std::runtime_error("connect " + path + ": " + std::strerror(errno));
    }
  }
  void send(const std::string& bytes) {
    size_t done = 0;
    while (done < bytes.size()) {
      ssize_t n = ::send(fd_.get(), bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) throw std::runtime_error("send: " + std::string(std::strerror(errno)));
      done += static_cast<size_t>(n);
    }
  }
  static std::string header(uint32_t length) {
    std::string h(4, '\0');
    for (int i = 0; i < 4; ++i) h[i] = static_cast<char>(length >> (8 * i));
    return h;
  }
  void send_frame(const std::string& payload) {
    send(header(static_cast<uint32_t>(payload.size())) + payload);
  }
  // Reads `size` bytes; false on EOF or after `timeout`.
  bool read_exact(char* data, size_t size, milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    size_t done = 0;
    while (done < size) {
      auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
      pollfd p{fd_.get(), POLLIN, 0};
      if (left <= 0 || ::poll(&p, 1, static_cast<int>(left)) <= 0) return false;
      ssize_t n = ::recv(fd_.get(), data + done, size - done, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      done += static_cast<size_t>(n);
    }
    return true;
  }
  // The next Response frame, or nullopt (EOF, timeout, not a Response).
  std::optional<pb::Response> read_response(milliseconds timeout = milliseconds(30000)) {
    char h[4];
    if (!read_exact(h, 4, timeout)) return std::nullopt;
    uint32_t length = 0;
    for (int i = 0; i < 4; ++i) length |= uint32_t{static_cast<uint8_t>(h[i])} << (8 * i);
    if (length > (1u << 20)) return std::nullopt;
    std::string body(length, '\0');
    if (!read_exact(body.data(), length, timeout)) return std::nullopt;
    pb::Response response;
    if (!response.ParseFromString(body)) return std::nullopt;
    return response;
  }
  // True once the VMM has closed the connection (EOF within `timeout`).
  bool closed_by_peer(milliseconds timeout) {
    pollfd p{fd_.get(), POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return false;
    char c;
    return ::recv(fd_.get(), &c, 1, 0) == 0;
  }

 private:
  UniqueFd fd_;
};

// The live VMM answers bad input with errors and goes on: the guest keeps
// running and status still works, from a new client and the old ones.
TEST(ControlApi, BadFramesUnknownRequestsAndDepartingClientsLeaveTheVmmServing) {
  LiveVmm vmm(testos("job=heartbeat interval_ms=50"));
  ASSERT_TRUE(vmm.wait_line("testos: beat seq=1 ")) << vmm.describe();

  {
    SCOPED_TRACE("a snapshot where none may go (no --snapshot-root)");
    auto snap = vmm.keelctl({"snapshot", "/var/tmp/keel-control-test-no-root"});
    EXPECT_EQ(snap.exit_code, 1) << show(snap);
    EXPECT_NE(snap.err.find("snapshots are off"), std::string::npos) << show(snap);
    EXPECT_FALSE(std::filesystem::exists("/var/tmp/keel-control-test-no-root"));
  }
  {
    SCOPED_TRACE("bytes that are not a Request");
    RawClient c(vmm.socket_path());
    c.send_frame(std::string("\xff\xff\xff\xff\xff\x07", 6));
    auto r = c.read_response();
    ASSERT_TRUE(r) << vmm.describe();
    EXPECT_FALSE(r->ok());
    EXPECT_EQ(r->error().code(), pb::ERROR_CODE_MALFORMED_FRAME) << r->DebugString();
  }
  {
    SCOPED_TRACE("an operation this VMM does not know (field 99), then an empty request");
    RawClient c(vmm.socket_path());
    // id = 7 (field 2, varint), field 99 (varint) = 1.
    c.send_frame(std::string("\x10\x07\x98\x06\x01", 5));
    auto r = c.read_response();
    ASSERT_TRUE(r) << vmm.describe();
    EXPECT_FALSE(r->ok());
    EXPECT_EQ(r->id(), 7u);
    EXPECT_EQ(r->error().code(), pb::ERROR_CODE_UNKNOWN_REQUEST) << r->DebugString();
    c.send_frame("");
    r = c.read_response();
    ASSERT_TRUE(r) << vmm.describe();
    EXPECT_EQ(r->error().code(), pb::ERROR_CODE_UNKNOWN_REQUEST) << r->DebugString();
    // The same connection still serves a good request.
    pb::Request status;
    status.set_id(8);
    status.mutable_status();
    c.send_frame(status.SerializeAsString());
    r = c.read_response();
    ASSERT_TRUE(r) << vmm.describe();
    EXPECT_TRUE(r->ok()) << r->DebugString();
    EXPECT_EQ(r->id(), 8u);
    EXPECT_EQ(r->status().state(), pb::RUN_STATE_RUNNING);
  }
  {
    SCOPED_TRACE("a newer api_version than the VMM's");
    RawClient c(vmm.socket_path());
    pb::Request request;
    request.set_api_version(1000);
    request.mutable_status();
    c.send_frame(request.SerializeAsString());
    auto r = c.read_response();
    ASSERT_TRUE(r) << vmm.describe();
    EXPECT_EQ(r->error().code(), pb::ERROR_CODE_UNSUPPORTED_VERSION) << r->DebugString();
  }
  {
    SCOPED_TRACE("a frame over 1 MiB");
    RawClient c(vmm.socket_path());
    c.send(RawClient::header((1u << 20) + 1));
    auto r = c.read_response();
    ASSERT_TRUE(r) << vmm.describe();
    EXPECT_EQ(r->error().code(), pb::ERROR_CODE_FRAME_TOO_LARGE) << r->DebugString();
    EXPECT_TRUE(c.closed_by_peer(seconds(30)));
  }
  {
    SCOPED_TRACE("clients that leave: mid-header, mid-frame, before the answer");
    RawClient(vmm.socket_path()).send("\x10\x00");
    RawClient(vmm.socket_path()).send(RawClient::header(100) + std::string(10, 'x'));
    pb::Request pause;
    pause.mutable_status();
    RawClient(vmm.socket_path()).send_frame(pause.SerializeAsString());
    RawClient(vmm.socket_path());  // connects and leaves at once
  }

  // Still serving, and the guest still running.
  auto status = vmm.keelctl({"--json", "status"});
  ASSERT_EQ(status.exit_code, 0) << show(status) << vmm.describe();
  EXPECT_EQ(parse_json(status).status().state(), pb::RUN_STATE_RUNNING);
  const size_t now = vmm.line_count();
  EXPECT_TRUE(vmm.wait_line("testos: beat ", now, seconds(60))) << vmm.describe();

  // keelctl's own refusals of a bad command line never reach the VMM.
  auto bad = vmm.keelctl({"frobnicate"});
  EXPECT_EQ(bad.exit_code, 2) << show(bad);

  auto kill = vmm.keelctl({"kill"});
  EXPECT_EQ(kill.exit_code, 0) << show(kill);
  EXPECT_EQ(vmm.wait_exit(seconds(60)), 14) << vmm.describe();
}

}  // namespace
}  // namespace keel::testing
