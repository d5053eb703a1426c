// Live migration of the test guest between keel-vmm processes over
// loopback (label kvm): keelctl migrate to a keel-vmm --incoming, there and
// back ten times with the heartbeat continuing and a memory pattern
// verified on the far side; a guest dirtying memory; memory only the disk
// wrote; a guest moving to another tap of a bridge (announced, its traffic
// following); and the faults: the
// destination killed midway (the source's guest runs on), the source killed
// midway (the destination ends with one line), cancel, a destination that
// refuses the machine's shape, and streams that are truncated, corrupted
// or random (refused, never run, never hung).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <linux/if_ether.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <functional>
#include <future>
#include <random>
#include <string>
#include <thread>

#include "proto/control.pb.h"
#include "proto/migration.pb.h"
#include "tests/support/frame_capture.h"
#include "tests/support/keelctl_result.h"
#include "tests/support/live_vmm.h"
#include "tests/support/nbd_file_server.h"
#include "tests/support/net_namespace.h"
#include "tests/support/net_peer.h"
#include "tests/support/scratch_dir.h"
#include "tests/support/vmm_run.h"

namespace keel::testing {
namespace {

namespace pb = ::keel::api::v1;
using std::chrono::milliseconds;
using std::chrono::seconds;

std::vector<std::string> testos(const std::string& cmdline, const std::string& memory,
                                std::vector<std::string> extra = {}) {
  std::vector<std::string> args{"--kernel", testos_bzimage(), "--cpus",    "2",
                                "--memory", memory,           "--cmdline", cmdline};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

// A keel-vmm waiting for a migration on a loopback port of its own.
struct Incoming {
  std::string address;
  std::unique_ptr<LiveVmm> vmm;
};
Incoming incoming(std::vector<std::string> extra = {}) {
  Incoming in;
  std::vector<std::string> args{"--incoming", "tcp:127.0.0.1:0"};
  args.insert(args.end(), extra.begin(), extra.end());
  in.vmm = std::make_unique<LiveVmm>(args);
  // Listening once it says so: a migrate before that would be refused.
  in.address = in.vmm->incoming_address(seconds(30));
  EXPECT_EQ(in.address.rfind("tcp:127.0.0.1:", 0), 0u) << in.vmm->describe();
  return in;
}

// The last whole beat line (a line cut by the move has no t_us yet).
uint64_t last_beat(const LiveVmm& vmm) {
  auto lines = vmm.lines("testos: beat ");
  while (!lines.empty() && lines.back().text.find(" t_us=") == std::string::npos) lines.pop_back();
  return lines.empty() ? 0 : field_u64(lines.back().text, "seq");
}

// keelctl migrate, its JSON answer.
pb::Response migrate(LiveVmm& source, const std::string& to, std::vector<std::string> extra = {}) {
  std::vector<std::string> args{"--json", "migrate", to};
  args.insert(args.end(), extra.begin(), extra.end());
  auto r = source.keelctl(args, seconds(600));
  pb::Response response;
  auto status = google::protobuf::util::JsonStringToMessage(r.out, &response);
  EXPECT_TRUE(status.ok()) << show(r);
  return response;
}

// --- the guest moves and carries on ----------------------------------------

TEST(Migration, HeartbeatThereAndBackTenTimes) {
  constexpr int kHops = 10;
  constexpr uint64_t kMib = 32;
  ScratchDir scratch("keel-migration-test");
  // The disk file is shared storage: both VMMs open it.
  const std::string disk = scratch.sparse_file("disk.img", 8 << 20);
  const std::vector<std::string> devices{"--disk", "path=" + disk};
  std::vector<std::string> with_rng = devices;
  with_rng.push_back("--rng");
  auto first = std::make_unique<LiveVmm>(
      testos("job=heartbeat interval_ms=20 count=0 mib=" + std::to_string(kMib), "256M", with_rng));
  ASSERT_TRUE(first->wait_line("testos: heartbeat filled ", 0, seconds(300))) << first->describe();
  ASSERT_TRUE(first->wait_line("testos: beat seq=3 ")) << first->describe();

  std::vector<LiveVmm::Stopped> consoles;  // each source's, cut where it let go
  std::unique_ptr<LiveVmm> here = std::move(first);
  for (int hop = 0; hop < kHops; ++hop) {
    SCOPED_TRACE("hop " + std::to_string(hop + 1));
    Incoming there = incoming(devices);
    pb::Response done = migrate(*here, there.address);
    ASSERT_TRUE(done.ok()) << done.error().message() << "\n"
                           << here->describe() << there.vmm->describe();
    EXPECT_EQ(done.migrate().phase(), pb::MIGRATION_PHASE_COMPLETED);
    EXPECT_GT(done.migrate().pages_sent(), kMib * 256);
    EXPECT_GT(done.migrate().downtime_us(), 0u);
    std::fprintf(stderr, "hop %d: paused %.3f ms, %u rounds, %llu bytes\n", hop + 1,
                 static_cast<double>(done.migrate().downtime_us()) / 1000.0,
                 done.migrate().rounds_total(),
                 static_cast<unsigned long long>(done.migrate().bytes_sent()));
    EXPECT_EQ(here->wait_exit(seconds(60)), 0) << here->describe();
    EXPECT_NE(here->errors().find("migrated: the guest runs at " + there.address),
              std::string::npos)
        << here->describe();
    // The guest runs on there, beats after the last one here (taken once
    // the source has ended: it beats on while the memory moves).
    const uint64_t before = last_beat(*here);
    ASSERT_TRUE(there.vmm->wait_line("testos: beat seq=" + std::to_string(before + 5) + " "))
        << there.vmm->describe() << show(there.vmm->keelctl({"status"}));
    consoles.push_back(here->stopped_console());
    here = std::move(there.vmm);
  }
  auto status = here->keelctl({"--json", "status"});
  EXPECT_EQ(parse_json(status).status().state(), pb::RUN_STATE_RUNNING) << show(status);
  // The console's history travelled with the guest (its newest 64 KiB):
  // what the last VMM holds has every beat once and in order, up to the
  // newest; the first line may be cut.
  const auto before_dump = beats_in(here->console());
  ASSERT_FALSE(before_dump.empty());
  auto history = here->keelctl({"console", "--dump"});
  ASSERT_EQ(history.exit_code, 0) << show(history);
  std::vector<std::string> history_lines;
  for (size_t at = 0, end; (end = history.out.find('\n', at)) != std::string::npos; at = end + 1)
    history_lines.push_back(history.out.substr(at, end - at));
  ASSERT_FALSE(history_lines.empty());
  history_lines.erase(history_lines.begin());
  const auto kept = beats_in(history_lines);
  ASSERT_GT(kept.size(), 10u * kHops) << history.out;
  for (size_t i = 1; i < kept.size(); ++i)
    ASSERT_EQ(kept[i].seq, kept[i - 1].seq + 1) << history.out;
  EXPECT_GE(kept.back().seq, before_dump.back().seq) << "the history ends with the newest beats";
  auto shutdown = here->keelctl({"shutdown"});
  EXPECT_EQ(shutdown.exit_code, 0) << show(shutdown);
  EXPECT_EQ(here->wait_exit(seconds(60)), 0) << here->describe();
  consoles.push_back(here->stopped_console());

  // The console as the guest printed it: a line cut by a hop finished by
  // the next VMM. Every beat once, in order; the guest's clock never back.
  std::vector<std::string> all;
  std::string cut;
  for (const auto& c : consoles) {
    auto lines = continue_console({{}, cut}, c.lines);
    all.insert(all.end(), lines.begin(), lines.end());
    cut = c.unfinished;
  }
  const auto beats = beats_in(all);
  ASSERT_GT(beats.size(), 10u * kHops);
  for (size_t i = 0; i < beats.size(); ++i) {
    ASSERT_EQ(beats[i].seq, i + 1) << join_lines(all);
    if (i > 0) {
      ASSERT_GE(beats[i].t_us, beats[i - 1].t_us) << join_lines(all);
    }
  }
  EXPECT_EQ(std::count(all.begin(), all.end(),
                       "testos: heartbeat memory OK pages=" + std::to_string(kMib * 256)),
            1)
      << join_lines(all);
}

TEST(Migration, DirtyingGuestArrivesIntact) {
  LiveVmm source(testos("job=dirtier mib=128 rate_mbps=200 seconds=600 interval_ms=10", "512M"));
  ASSERT_TRUE(source.wait_line("testos: dirtier pass=1 ", 0, seconds(300))) << source.describe();
  Incoming there = incoming();
  pb::Response done = migrate(source, there.address);
  ASSERT_TRUE(done.ok()) << done.error().message() << "\n" << source.describe();
  EXPECT_GE(done.migrate().rounds_total(), 2u) << "a dirtying guest needs rounds";
  EXPECT_EQ(source.wait_exit(seconds(60)), 0) << source.describe();
  const uint64_t before = last_beat(source);
  ASSERT_TRUE(there.vmm->wait_line("testos: beat seq=" + std::to_string(before + 20) + " "))
      << there.vmm->describe();
  ASSERT_TRUE(there.vmm->wait_line("testos: dirtier pass=")) << there.vmm->describe();
  EXPECT_EQ(there.vmm->keelctl({"shutdown"}).exit_code, 0);
  EXPECT_EQ(there.vmm->wait_exit(seconds(60)), 0) << there.vmm->describe();
  EXPECT_EQ(there.vmm->lines("testos: dirtier OK pages=32768").size(), 1u) << there.vmm->describe();
}

// --- faults: the guest runs on at the source, or nowhere twice -------------

// A migration slow enough to be caught in its first pass: 128 MiB of
// pattern at 16 MB/s takes 8 s.
struct SlowMigration {
  std::unique_ptr<LiveVmm> source;
  Incoming there;
  std::future<CommandResult> answer;
};
SlowMigration start_slow_migration(std::vector<std::string> destination_args = {}) {
  SlowMigration m;
  m.source =
      std::make_unique<LiveVmm>(testos("job=heartbeat interval_ms=20 count=0 mib=128", "512M"));
  EXPECT_TRUE(m.source->wait_line("testos: heartbeat filled ", 0, seconds(300)))
      << m.source->describe();
  m.there = incoming(destination_args);
  LiveVmm* source = m.source.get();
  const std::string to = m.there.address;
  m.answer = std::async(std::launch::async, [source, to] {
    return source->keelctl({"--json", "migrate", to, "--bandwidth", "16"}, seconds(600));
  });
  // Under way: memory moving.
  for (int i = 0; i < 1200; ++i) {
    auto status = m.source->keelctl({"--json", "migrate-status"});
    auto response = parse_json(status);
    if (response.migrate_status().phase() == pb::MIGRATION_PHASE_FIRST_PASS &&
        response.migrate_status().bytes_sent() > (4u << 20))
      break;
    std::this_thread::sleep_for(milliseconds(50));
  }
  return m;
}

// The source's guest after a failed migration: running, beating, and its
// memory whole when it ends.
void expect_source_runs_on(LiveVmm& source) {
  auto status = source.keelctl({"--json", "status"});
  EXPECT_EQ(parse_json(status).status().state(), pb::RUN_STATE_RUNNING) << show(status);
  const uint64_t now = last_beat(source);
  EXPECT_TRUE(source.wait_line("testos: beat seq=" + std::to_string(now + 10) + " "))
      << source.describe();
  EXPECT_EQ(source.keelctl({"shutdown"}).exit_code, 0);
  EXPECT_EQ(source.wait_exit(seconds(60)), 0) << source.describe();
  EXPECT_EQ(source.lines("testos: heartbeat memory OK pages=32768").size(), 1u)
      << source.describe();
}

// A guest holding disk-written buffers (job=disk mode=hold) on `devices`,
// moved to `there` mid-run; the source has ended.
void move_holding_guest(const std::vector<std::string>& devices, Incoming& there) {
  LiveVmm source(testos("job=disk mode=hold mib=8 rate_mbps=32", "256M", devices));
  ASSERT_TRUE(source.wait_line("testos: disk progress mode=hold round=2", 0, seconds(300)))
      << source.describe();
  there = incoming(devices);
  pb::Response done = migrate(source, there.address);
  ASSERT_TRUE(done.ok()) << done.error().message() << "\n" << source.describe();
  EXPECT_EQ(source.wait_exit(seconds(60)), 0) << source.describe();
}

// Powers the moved guest off: it checks every buffer against its chunk.
void expect_held_buffers_intact(Incoming& there) {
  EXPECT_EQ(there.vmm->keelctl({"shutdown"}).exit_code, 0);
  EXPECT_EQ(there.vmm->wait_exit(seconds(60)), 0) << there.vmm->describe();
  EXPECT_EQ(there.vmm->lines("testos: disk OK mode=hold ").size(), 1u) << there.vmm->describe();
}

// Pages only the disk writes (KVM's dirty log never sees them): the guest
// has the device read each chunk back into a buffer the CPU never touches,
// round after round through the move, and checks every buffer against the
// chunk's last contents on the far side.
TEST(Migration, PagesOnlyTheDiskWroteArrive) {
  ScratchDir scratch("keel-migration-test");
  const std::string disk = scratch.sparse_file("disk.img", 16 << 20);
  Incoming there;
  ASSERT_NO_FATAL_FAILURE(move_holding_guest({"--disk", "path=" + disk}, there));
  // Checked at once: each chunk the guest reads again there is fresh anyway.
  expect_held_buffers_intact(there);
}

// The same over an NBD disk on Keel's server, which lets one connection
// at a time write the export: the destination only describes it until the
// source let go at the handover (closing its connection), then connects.
TEST(Migration, AGuestOnAnNbdDiskMovesAndTheExportGoesWithIt) {
  ScratchDir scratch("keel-migration-test");
  auto catalog = std::make_shared<FileCatalog>();
  catalog->add("disk", scratch.sparse_file("disk.img", 16 << 20), 16 << 20);
  NbdFileServer server(catalog);
  Incoming there;
  ASSERT_NO_FATAL_FAILURE(move_holding_guest({"--disk", "nbd=" + server.address("disk")}, there));
  // The guest goes on reading and writing there, through its own connection.
  EXPECT_TRUE(
      there.vmm->wait_line("testos: disk progress mode=hold round=", there.vmm->line_count()))
      << there.vmm->describe();
  expect_held_buffers_intact(there);
}

// The destination on another tap of the same bridge (another host's port):
// it announces the guest's MAC there (RARP), and a peer's UDP echoes follow
// the guest without anyone waiting for the bridge to forget the old port.
TEST(Migration, GuestOnAnotherTapOfTheBridgeIsAnnouncedAndTrafficFollows) {
  NetNamespace ns("kmig-a", "");
  bridge_with_second_tap(ns, "kmig-br", "kmig-b", "10.0.2.1/24");
  const std::string mac = "52:54:00:12:34:56";

  LiveVmm source(
      testos("job=net ip=10.0.2.15 seconds=600", "128M", {"--net", "tap=kmig-a,mac=" + mac}));
  ASSERT_TRUE(source.wait_line("testos: net ready ", 0, seconds(300))) << source.describe();
  const auto deadline = std::chrono::steady_clock::now() + seconds(120);
  ASSERT_EQ(ping("10.0.2.15", 3, deadline), 3) << source.describe();
  UdpSocket udp("10.0.2.1", 0);
  auto echoed = [&udp](int n) {
    int got = 0;
    for (int i = 0; i < n; ++i) {
      const std::string text = "keel moves " + std::to_string(i);
      const std::vector<uint8_t> payload(text.begin(), text.end());
      udp.send_to("10.0.2.15", 7, payload);
      if (udp.receive(seconds(5)) == payload) ++got;
    }
    return got;
  };
  ASSERT_EQ(echoed(3), 3) << source.describe();

  // What comes out of the destination's tap into the bridge (every
  // protocol: a bridge port's frames reach only such sockets).
  UniqueFd capture = capture_frames("kmig-b", ETH_P_ALL);

  Incoming there = incoming({"--net", "tap=kmig-b"});
  pb::Response done = migrate(source, there.address);
  ASSERT_TRUE(done.ok()) << done.error().message() << "\n" << source.describe();
  EXPECT_EQ(source.wait_exit(seconds(60)), 0) << source.describe();

  // The announcement: a RARP request from the guest's MAC, on the new port.
  std::vector<uint8_t> frame(1600);
  bool announced = false;
  const auto until = std::chrono::steady_clock::now() + seconds(5);
  while (!announced && std::chrono::steady_clock::now() < until) {
    pollfd p{capture.get(), POLLIN, 0};
    if (::poll(&p, 1, 100) != 1) continue;
    const ssize_t n = ::recv(capture.get(), frame.data(), frame.size(), 0);
    announced = n >= 42 && (frame[12] << 8 | frame[13]) == 0x8035;
  }
  ASSERT_TRUE(announced) << "no RARP frame from the destination\n" << there.vmm->describe();
  char from[18];
  std::snprintf(from, sizeof from, "%02x:%02x:%02x:%02x:%02x:%02x", frame[6], frame[7], frame[8],
                frame[9], frame[10], frame[11]);
  EXPECT_EQ(from, mac);
  EXPECT_EQ(frame[20] << 8 | frame[21], 3) << "not a reverse request";

  // The peer's traffic reaches the guest where it runs now.
  EXPECT_EQ(echoed(5), 5) << there.vmm->describe();
  EXPECT_EQ(there.vmm->keelctl({"shutdown"}).exit_code, 0);
  EXPECT_EQ(there.vmm->wait_exit(seconds(60)), 0) << there.vmm->describe();
  EXPECT_TRUE(there.vmm->lines("testos: net FAIL").empty()) << there.vmm->describe();
}

TEST(Migration, DestinationKilledMidwaySourceRunsOn) {
  SlowMigration m = start_slow_migration();
  ASSERT_EQ(::kill(m.there.vmm->pid(), SIGKILL), 0);
  pb::Response answer = parse_json(m.answer.get());
  EXPECT_FALSE(answer.ok());
  EXPECT_NE(answer.error().message().find("the destination"), std::string::npos)
      << answer.error().message();
  EXPECT_NE(answer.error().message().find("the guest runs on here"), std::string::npos)
      << answer.error().message();
  auto status = m.source->keelctl({"--json", "migrate-status"});
  EXPECT_EQ(parse_json(status).migrate_status().phase(), pb::MIGRATION_PHASE_FAILED);
  expect_source_runs_on(*m.source);
}

TEST(Migration, SourceKilledMidwayDestinationEnds) {
  SlowMigration m = start_slow_migration();
  ASSERT_EQ(::kill(m.source->pid(), SIGKILL), 0);
  EXPECT_EQ(m.there.vmm->wait_exit(seconds(60)), 1) << m.there.vmm->describe();
  const std::string errors = m.there.vmm->errors();
  EXPECT_NE(errors.find("incoming migration failed: migration stream: the source closed the "
                        "connection"),
            std::string::npos)
      << errors;
  EXPECT_TRUE(m.there.vmm->console().empty()) << "the guest ran on the destination";
  m.answer.wait();
}

TEST(Migration, CancelLeavesTheGuestHereAndAnotherMigrationWorks) {
  SlowMigration m = start_slow_migration();
  auto cancel = m.source->keelctl({"migrate-cancel"});
  EXPECT_EQ(cancel.exit_code, 0) << show(cancel);
  pb::Response answer = parse_json(m.answer.get());
  EXPECT_FALSE(answer.ok());
  EXPECT_NE(answer.error().message().find("cancelled"), std::string::npos)
      << answer.error().message();
  EXPECT_EQ(m.there.vmm->wait_exit(seconds(60)), 1) << m.there.vmm->describe();
  EXPECT_NE(m.there.vmm->errors().find("the source cancelled the migration"), std::string::npos)
      << m.there.vmm->describe();
  auto again = m.source->keelctl({"migrate-cancel"});
  EXPECT_EQ(again.exit_code, 1) << "a second cancel with nothing under way: " << show(again);

  // Nothing lost: the same guest migrates fine afterwards.
  Incoming next = incoming();
  pb::Response done = migrate(*m.source, next.address);
  ASSERT_TRUE(done.ok()) << done.error().message();
  EXPECT_EQ(m.source->wait_exit(seconds(60)), 0) << m.source->describe();
  const uint64_t before = last_beat(*m.source);
  ASSERT_TRUE(next.vmm->wait_line("testos: beat seq=" + std::to_string(before + 5) + " "))
      << next.vmm->describe();
  EXPECT_EQ(next.vmm->keelctl({"shutdown"}).exit_code, 0);
  EXPECT_EQ(next.vmm->wait_exit(seconds(60)), 0);
  EXPECT_EQ(next.vmm->lines("testos: heartbeat memory OK pages=32768").size(), 1u)
      << next.vmm->describe();
}

TEST(Migration, DestinationRefusesAnotherShapeBeforeMemoryMoves) {
  ScratchDir scratch("keel-migration-test");
  const std::string disk = scratch.sparse_file("disk.img", 8 << 20);
  LiveVmm source(
      testos("job=heartbeat interval_ms=20 count=0", "256M", {"--disk", "path=" + disk}));
  ASSERT_TRUE(source.wait_line("testos: beat seq=3 ")) << source.describe();
  Incoming there = incoming();  // no --disk
  pb::Response answer = migrate(source, there.address);
  EXPECT_FALSE(answer.ok());
  EXPECT_NE(answer.error().message().find(
                "the destination refused the VM: the migrating VM has 1 disks: name each with "
                "--disk"),
            std::string::npos)
      << answer.error().message();
  EXPECT_EQ(there.vmm->wait_exit(seconds(60)), 1) << there.vmm->describe();
  auto status = source.keelctl({"--json", "migrate-status"});
  EXPECT_LT(parse_json(status).migrate_status().bytes_sent(), 64u << 10)
      << "memory moved before the check";
  const uint64_t now = last_beat(source);
  EXPECT_TRUE(source.wait_line("testos: beat seq=" + std::to_string(now + 5) + " "));
  EXPECT_EQ(source.keelctl({"kill"}).exit_code, 0);
}

// --- hostile streams ---------------------------------------------------------

class RawSource {
 public:
  explicit RawSource(const std::string& address) {
    const uint16_t port = static_cast<uint16_t>(std::stoul(address.substr(address.rfind(':') + 1)));
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
      throw std::runtime_error("cannot connect to " + address);
  }
  ~RawSource() { ::close(fd_); }
  void send(const std::string& bytes) {
    ASSERT_EQ(::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(bytes.size()));
  }
  // One frame, as migration/stream/stream_format.h lays it out.
  void frame(uint32_t type, const std::string& payload, size_t claim = SIZE_MAX) {
    std::string header(8, '\0');
    const uint32_t length = static_cast<uint32_t>(claim == SIZE_MAX ? payload.size() : claim);
    std::memcpy(header.data(), &type, 4);
    std::memcpy(header.data() + 4, &length, 4);
    send(header + payload);
  }
  // The destination's answer frame's type (0: the connection closed).
  uint32_t answer() {
    char header[8];
    size_t got = 0;
    while (got < 8) {
      ssize_t n = ::recv(fd_, header + got, 8 - got, 0);
      if (n <= 0) return 0;
      got += static_cast<size_t>(n);
    }
    uint32_t type, length;
    std::memcpy(&type, header, 4);
    std::memcpy(&length, header + 4, 4);
    std::string skip(length, '\0');
    for (size_t at = 0; at < length;) {
      ssize_t n = ::recv(fd_, skip.data() + at, length - at, 0);
      if (n <= 0) return 0;
      at += static_cast<size_t>(n);
    }
    return type;
  }

 private:
  int fd_ = -1;
};

const std::string kMagic = "KEELMIG1";

// A real source's hello (its CPU features are this host's): a 64 MiB test
// guest migrating to a listener here that reads the hello and hangs up.
std::string hello_bytes() {
  static std::string hello;
  if (!hello.empty()) return hello;
  int listener = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (::bind(listener, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::listen(listener, 1) != 0 ||
      ::getsockname(listener, reinterpret_cast<sockaddr*>(&a), &len) != 0)
    throw std::runtime_error("cannot listen for a hello");
  LiveVmm source({"--kernel", testos_bzimage(), "--memory", "64M", "--cmdline",
                  "job=heartbeat interval_ms=20 count=0"});
  EXPECT_TRUE(source.wait_line("testos: beat seq=1 ")) << source.describe();
  auto answer = std::async(std::launch::async, [&] {
    return source.keelctl({"migrate", "tcp:127.0.0.1:" + std::to_string(ntohs(a.sin_port))});
  });
  int fd = ::accept(listener, nullptr, nullptr);
  auto read = [&](size_t n) {
    std::string bytes(n, '\0');
    for (size_t at = 0; at < n;) {
      ssize_t r = ::recv(fd, bytes.data() + at, n - at, 0);
      if (r <= 0) throw std::runtime_error("the source hung up before its hello");
      at += static_cast<size_t>(r);
    }
    return bytes;
  };
  EXPECT_EQ(read(8), kMagic);
  std::string header = read(8);
  uint32_t length;
  std::memcpy(&length, header.data() + 4, 4);
  hello = read(length);
  ::close(fd);
  ::close(listener);
  EXPECT_EQ(answer.get().exit_code, 1) << "the source did not see the hang-up";
  EXPECT_EQ(source.keelctl({"kill"}).exit_code, 0);
  return hello;
}

void expect_refused(const std::string& what, const std::function<void(RawSource&)>& feed,
                    const std::string& message) {
  SCOPED_TRACE(what);
  Incoming there = incoming();
  {
    RawSource raw(there.address);
    feed(raw);
  }
  EXPECT_EQ(there.vmm->wait_exit(seconds(60)), 1) << there.vmm->describe();
  EXPECT_NE(there.vmm->errors().find("incoming migration failed: " + message), std::string::npos)
      << there.vmm->describe();
  EXPECT_TRUE(there.vmm->console().empty()) << "a guest ran from a hostile stream";
}

TEST(Migration, TruncatedCorruptedAndRandomStreamsAreRefused) {
  const std::string hello = hello_bytes();
  ASSERT_FALSE(hello.empty());
  std::mt19937_64 random(42);
  std::string noise(4096, '\0');
  for (char& c : noise) c = static_cast<char>(random());
  expect_refused(
      "random bytes", [&](RawSource& s) { s.send(noise); },
      "migration stream: not a Keel migration stream (bad magic)");
  expect_refused(
      "unknown frame type",
      [&](RawSource& s) {
        s.send(kMagic);
        s.frame(99, "");
      },
      "migration stream: unknown frame type 99");
  expect_refused(
      "a huge frame",
      [&](RawSource& s) {
        s.send(kMagic);
        s.frame(1, "", 1u << 30);
      },
      "migration stream: hello frame of 1073741824 bytes");
  expect_refused(
      "a hello that does not parse",
      [&](RawSource& s) {
        s.send(kMagic);
        s.frame(1, std::string(16, '\xff'));
      },
      "migration stream: hello frame does not parse");
  expect_refused(
      "a hello cut short",
      [&](RawSource& s) {
        s.send(kMagic);
        s.frame(1, hello.substr(0, 3), hello.size());
      },
      "migration stream: the source closed the connection in the middle of hello");
  expect_refused(
      "a page beyond memory",
      [&](RawSource& s) {
        s.send(kMagic);
        s.frame(1, hello);
        ASSERT_EQ(s.answer(), 2u);  // verdict
        std::string entry(8, '\0');
        const uint64_t page = 1ull << 20;  // 4 GiB in: beyond 64 MiB
        std::memcpy(entry.data(), &page, 8);
        s.frame(3, entry + std::string(4096, 'x'));
      },
      "migration stream: page 1048576 beyond guest memory (16384 pages)");
  expect_refused(
      "a page batch cut short",
      [&](RawSource& s) {
        s.send(kMagic);
        s.frame(1, hello);
        ASSERT_EQ(s.answer(), 2u);
        std::string entry(8, '\0');
        s.frame(3, entry + std::string(100, 'x'));
      },
      "migration stream: page 0 cut short: 100 of 4096 bytes");
  expect_refused(
      "state before the totals",
      [&](RawSource& s) {
        s.send(kMagic);
        s.frame(1, hello);
        ASSERT_EQ(s.answer(), 2u);
        s.frame(5, "");
      },
      "migration stream: unexpected state frame while receiving memory");
  expect_refused(
      "totals that do not add up",
      [&](RawSource& s) {
        s.send(kMagic);
        s.frame(1, hello);
        ASSERT_EQ(s.answer(), 2u);
        ::keel::migration::v1::Totals totals;
        totals.set_pages_sent(5);
        s.frame(4, totals.SerializeAsString());
      },
      "migration stream: the source sent 5+0 pages, 0+0 arrived");
  expect_refused(
      "a state that does not parse",
      [&](RawSource& s) {
        s.send(kMagic);
        s.frame(1, hello);
        ASSERT_EQ(s.answer(), 2u);
        s.frame(4, "");
        s.frame(5, std::string(16, '\xff'));
      },
      "migration stream: state frame does not parse");
  expect_refused(
      "an empty state",
      [&](RawSource& s) {
        s.send(kMagic);
        s.frame(1, hello);
        ASSERT_EQ(s.answer(), 2u);
        s.frame(4, "");
        s.frame(5, "");
        EXPECT_EQ(s.answer(), 2u) << "no verdict refusing the state";
      },
      "state schema version 0");
}

}  // namespace
}  // namespace keel::testing
