// Live migration of Debian's stock kernel (label linux): a 2-vCPU guest with
// a virtio disk and a virtio network card runs a heartbeat, a memory
// dirtier, a paced random disk writer and a paced TCP stream to a peer in
// the test's network namespace at once (keel.job=heartbeat+dirtier+disk+net)
// and moves, mid-run, to a keel-vmm --incoming over loopback; both open the
// same disk file (shared storage), each its own tap on one bridge. On the
// far side every job carries on to its end: the heartbeat goes on beat
// after beat on a clock that neither steps back nor stays behind, the
// dirtier's memory verifies, the disk writer's blocks verify in the guest
// and again on the host, the one TCP connection delivers every byte to the
// peer, and the guest powers off cleanly with nothing in its kernel log.
// The destination runs jailed (--jail).
#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <thread>

#include "proto/control.pb.h"
#include "tests/support/jail_user.h"
#include "tests/support/keelctl_result.h"
#include "tests/support/kernel_log.h"
#include "tests/support/linux_guest_disk.h"
#include "tests/support/linux_guest_jobs.h"
#include "tests/support/linux_guest_net.h"
#include "tests/support/live_vmm.h"
#include "tests/support/net_namespace.h"
#include "tests/support/net_peer.h"
#include "tests/support/scratch_dir.h"
#include "tests/support/vmm_run.h"

namespace keel::testing {
namespace {

namespace pb = ::keel::api::v1;
using std::chrono::milliseconds;
using std::chrono::seconds;
using Clock = std::chrono::steady_clock;

const std::string kImages = KEEL_LINUX_IMAGE_DIR;
const std::string kDiskcheck = kImages + "/bin/keel-diskcheck";
const std::string kKeelNet = kImages + "/bin/keel-net";
const std::string kBeat = "keel-guest: beat ";
const std::string kMac = "52:54:00:12:34:56";

// The jobs, with a paced TCP stream to the host besides: all four still
// running when the move starts a few beats in.
constexpr uint64_t kNetMib = 20, kNetRateMbps = 1;  // one TCP connection: 20 s
const LinuxGuestJobs kJobs = [] {
  LinuxGuestJobs jobs;
  jobs.disk_seed = 13;
  jobs.more_jobs = "+net";
  jobs.more_settings = "keel.ip=10.0.2.2/24 keel.gw=10.0.2.1 keel.net_mode=send keel.net_mib=" +
                       std::to_string(kNetMib) +
                       " keel.net_rate_mbps=" + std::to_string(kNetRateMbps);
  return jobs;
}();

std::vector<std::string> boot_args(const std::string& disk) {
  return kJobs.vmm_args(kImages, disk, {"--net", "tap=kmig-a,mac=" + kMac});
}

TEST(LinuxMigration, StockKernelWithHeartbeatDirtierDiskWriterAndTcpStreamCarriesOnElsewhere) {
  ScratchDir scratch("keel-linux-migration");
  const std::string disk = scratch.sparse_file("disk.img", 32 << 20);
  // Two taps on one bridge, the host's side of the network on the bridge:
  // the source's port and the destination's.
  NetNamespace ns("kmig-a", "");
  bridge_with_second_tap(ns, "kmig-br", "kmig-b", "10.0.2.1/24");
  HostKeelNet peer({{kKeelNet, "-w", "600", "recv", ":5201", std::to_string(kNetMib), "1"}});

  // Boot; all four jobs running.
  auto booted = std::make_unique<LiveVmm>(boot_args(disk));
  auto ready = wait_boot_line(*booted, "keel-guest: ready ", seconds(600));
  if (!ready && box_boot_glitch(*booted, "linux_migration_test")) {
    booted = std::make_unique<LiveVmm>(boot_args(disk));
    ready = wait_boot_line(*booted, "keel-guest: ready ", seconds(600));
  }
  LiveVmm& source = *booted;
  ASSERT_TRUE(ready) << source.describe();
  EXPECT_NE(ready->text.find(" cpus=2 "), std::string::npos) << ready->text;
  ASSERT_TRUE(source.wait_line("keel-guest: disk start ", ready->index, seconds(300)))
      << source.describe();
  ASSERT_TRUE(source.wait_line("keel-guest: dirtier start ", ready->index, seconds(300)))
      << source.describe();
  ASSERT_TRUE(source.wait_line(kBeat + "seq=10 ", ready->index, seconds(300))) << source.describe();
  // The TCP stream under way: a MiB of it through the source's tap.
  ASSERT_TRUE(source.wait_line("keel-guest: net ping OK ", ready->index, seconds(300)))
      << source.describe();
  for (int i = 0; i < 600 && link_counter("kmig-a", "rx_bytes") < (1u << 20); ++i)
    std::this_thread::sleep_for(milliseconds(100));
  ASSERT_GE(link_counter("kmig-a", "rx_bytes"), 1u << 20) << source.describe();

  // The destination, on the same disk file.
  // Jailed: the guest's disk and network go on in a confined VMM.
  LiveVmm there(
      jailed({"--incoming", "tcp:127.0.0.1:0", "--disk", "path=" + disk, "--net", "tap=kmig-b"}));
  const std::string address = there.incoming_address();
  ASSERT_FALSE(address.empty()) << there.describe();

  const auto asked = Clock::now();
  auto moved = source.keelctl({"--json", "migrate", address}, seconds(900));
  ASSERT_EQ(moved.exit_code, 0) << show(moved) << source.describe() << there.describe();
  const uint64_t took_us = us_between(asked, Clock::now());
  const pb::MigrationInfo info = parse_json(moved).migrate();
  EXPECT_EQ(info.phase(), pb::MIGRATION_PHASE_COMPLETED);
  EXPECT_GT(info.downtime_us(), 0u);
  std::fprintf(stderr,
               "migration: %u rounds, %llu pages, %llu bytes, paused %.3f ms, %llu ms in all\n",
               info.rounds_total(), static_cast<unsigned long long>(info.pages_sent()),
               static_cast<unsigned long long>(info.bytes_sent()),
               static_cast<double>(info.downtime_us()) / 1000.0,
               static_cast<unsigned long long>(took_us / 1000));
  EXPECT_EQ(source.wait_exit(seconds(60)), 0) << source.describe();
  const LiveVmm::Stopped stopped = source.stopped_console();
  const auto& first = stopped.lines;

  // Every job was in the middle of its work when it moved.
  const auto beats_before = beats_in(first, kBeat);
  ASSERT_FALSE(beats_before.empty());
  const uint64_t last = beats_before.back().seq;
  ASSERT_LT(last + 5, kJobs.count) << "the heartbeat ran too far before the move\n"
                                   << join_lines(first);
  ASSERT_TRUE(with_prefix(first, "keel-guest: dirtier OK").empty())
      << "the dirtier ended before the move";
  ASSERT_TRUE(with_prefix(first, "keel-guest: disk OK").empty())
      << "the disk writer ended before the move";
  ASSERT_TRUE(with_prefix(first, "keel-guest: net send OK").empty())
      << "the TCP stream ended before the move";

  // The jobs end there and the guest powers off by itself.
  ASSERT_EQ(there.wait_exit(seconds(600)), 0) << there.describe();
  const auto after = continue_console(stopped, there.console());
  EXPECT_TRUE(with_prefix(after, "keel-guest: ready").empty()) << "the guest booted again\n"
                                                               << join_lines(after);
  EXPECT_TRUE(with_prefix(after, "keel-guest: error").empty()) << join_lines(after);

  // One heartbeat, every beat once, on a clock that went on: the step
  // across the move is at most one interval, the pause and a slack for a
  // slow host, and never backwards.
  std::vector<std::string> whole = first;
  whole.insert(whole.end(), after.begin(), after.end());
  const auto beats = beats_in(whole, kBeat);
  ASSERT_EQ(beats.size(), kJobs.count) << join_lines(whole);
  uint64_t longest_us = 0;
  for (size_t i = 0; i < beats.size(); ++i) {
    ASSERT_EQ(beats[i].seq, i + 1) << join_lines(whole);
    if (i > 0) {
      ASSERT_GT(beats[i].t_us, beats[i - 1].t_us) << "the clock went backwards\n"
                                                  << join_lines(whole);
      longest_us = std::max(longest_us, beats[i].t_us - beats[i - 1].t_us);
    }
  }
  const uint64_t bound_us = kJobs.interval_ms * 1000 + info.downtime_us() + 2'000'000;
  std::fprintf(stderr, "heartbeat: longest step between beats %llu us (bound %llu)\n",
               static_cast<unsigned long long>(longest_us),
               static_cast<unsigned long long>(bound_us));
  EXPECT_LE(longest_us, bound_us) << join_lines(whole);

  // The dirtier's memory, written before and after the move.
  auto dirtier = with_prefix(after, "keel-guest: dirtier OK ");
  ASSERT_EQ(dirtier.size(), 1u) << join_lines(after);
  EXPECT_EQ(dirtier[0], "keel-guest: dirtier OK pages=" + std::to_string(kJobs.dirtier_mib * 256));

  // The disk: verified by the guest, then by the host on the file.
  auto disk_ok = with_prefix(after, "keel-guest: disk OK mode=random ");
  ASSERT_EQ(disk_ok.size(), 1u) << join_lines(after);
  const std::string host = diskcheck_on_host(
      kDiskcheck, {"random-verify", disk, std::to_string(kJobs.disk_mib),
                   std::to_string(kJobs.disk_seed), std::to_string(kJobs.disk_writes)});
  ASSERT_EQ(host.rfind("keel-guest: disk OK mode=random-verify ", 0), 0u) << host;
  EXPECT_EQ(sum_of(host), sum_of(disk_ok[0])) << host << "\n" << disk_ok[0];

  // The TCP connection: every byte, in order, to the peer, across the move.
  const std::string want = net_stream_sum(kNetMib, 1);
  auto sent = with_prefix(after, "keel-guest: net send OK ");
  ASSERT_EQ(sent.size(), 1u) << join_lines(after);
  EXPECT_EQ(fields(sent[0])["sum"], want) << sent[0];
  auto host_side = peer.finish(seconds(60));
  ASSERT_EQ(host_side.size(), 1u);
  EXPECT_EQ(host_side[0].exit_code, 0) << host_side[0].out;
  const std::string received = line_of(host_side[0].out, "keel-guest: net recv OK ");
  EXPECT_EQ(fields(received)["bytes"], std::to_string(kNetMib << 20)) << host_side[0].out;
  EXPECT_EQ(fields(received)["sum"], want) << host_side[0].out;

  EXPECT_FALSE(with_prefix(after, "keel-guest: poweroff").empty()) << join_lines(after);
  const auto problems = kernel_log_problems(whole);
  EXPECT_TRUE(problems.empty()) << "kernel log problems:\n" << join_lines(problems);
}

}  // namespace
}  // namespace keel::testing
