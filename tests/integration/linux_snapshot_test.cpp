// Snapshot and restore of Debian's stock kernel (label linux): a 2-vCPU
// guest runs a heartbeat, a memory dirtier and a paced random disk writer at
// once (keel.job=heartbeat+dirtier+disk); it is paused, snapshotted and its
// keel-vmm killed mid-run, then restored twice from that one snapshot, each
// time in a new process with its own copy of the disk as it was at the
// snapshot. Each restored guest carries on: the heartbeat's sequence goes on
// and its clock (CLOCK_MONOTONIC, kvmclock) steps by no more than the
// snapshot's own pause, the dirtier's memory verifies, the disk writer's
// blocks verify inside the guest and again on the host, and the guest powers
// off cleanly with nothing in its kernel log. The first keel-vmm and the
// first restore run jailed (--jail), the second restore as root.
#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <thread>

#include "proto/control.pb.h"
#include "tests/support/jail_user.h"
#include "tests/support/keelctl_result.h"
#include "tests/support/kernel_log.h"
#include "tests/support/linux_guest_disk.h"
#include "tests/support/linux_guest_jobs.h"
#include "tests/support/live_vmm.h"
#include "tests/support/scratch_dir.h"
#include "tests/support/vmm_run.h"

namespace keel::testing {
namespace {

namespace fs = std::filesystem;
namespace pb = ::keel::api::v1;
using std::chrono::seconds;
using Clock = std::chrono::steady_clock;

const std::string kImages = KEEL_LINUX_IMAGE_DIR;
const std::string kDiskcheck = kImages + "/bin/keel-diskcheck";
const std::string kBeat = "keel-guest: beat ";

// The jobs: all three still running when the snapshot is taken a few beats in.
const LinuxGuestJobs kJobs{};

// The guest's clock may step over a restore by one interval, the time it sat
// paused before the capture, and the restore's own start (generous: the KVM
// test host is 5-20 times slower than hardware).
constexpr uint64_t kRestoreStartSlackUs = 5'000'000;

std::vector<std::string> boot_args(const std::string& disk, const std::string& snapshot_root) {
  return jailed(kJobs.vmm_args(kImages, disk, {"--snapshot-root", snapshot_root}));
}

TEST(LinuxSnapshot, StockKernelWithHeartbeatDirtierAndDiskWriterContinuesAfterRestoringTwice) {
  ScratchDir scratch("keel-linux-snapshot");
  const std::string disk = scratch.sparse_file("disk.img", 32 << 20);
  const std::string snap_dir = scratch / "snap";
  // The jailed VMM writes its snapshot there as its own user.
  ASSERT_EQ(::chown(scratch.path().c_str(), kJailUid, kJailUid), 0);

  // Boot; all three jobs running.
  auto booted = std::make_unique<LiveVmm>(boot_args(disk, scratch.path()));
  auto ready = wait_boot_line(*booted, "keel-guest: ready ", seconds(600));
  if (!ready && box_boot_glitch(*booted, "linux_snapshot_test")) {
    booted = std::make_unique<LiveVmm>(boot_args(disk, scratch.path()));
    ready = wait_boot_line(*booted, "keel-guest: ready ", seconds(600));
  }
  LiveVmm& vmm = *booted;
  ASSERT_TRUE(ready) << vmm.describe();
  EXPECT_NE(ready->text.find(" cpus=2 "), std::string::npos) << ready->text;
  ASSERT_TRUE(vmm.wait_line("keel-guest: disk start ", ready->index, seconds(300)))
      << vmm.describe();
  ASSERT_TRUE(vmm.wait_line("keel-guest: dirtier start ", ready->index, seconds(300)))
      << vmm.describe();
  ASSERT_TRUE(vmm.wait_line("keel-guest: beat seq=10 ", ready->index, seconds(300)))
      << vmm.describe();

  // Pause, snapshot, kill: the first process never runs the guest past the
  // snapshot, so its disk is the snapshot's disk.
  const auto asked = Clock::now();
  auto pause = vmm.keelctl({"--json", "pause"});
  ASSERT_EQ(pause.exit_code, 0) << show(pause);
  auto snap = vmm.keelctl({"--json", "snapshot", snap_dir}, seconds(600));
  const auto taken_at = Clock::now();
  const uint64_t held_us = us_between(asked, taken_at);
  ASSERT_EQ(snap.exit_code, 0) << show(snap) << vmm.describe();
  const auto result = parse_json(snap).snapshot();
  EXPECT_EQ(result.dir(), snap_dir);
  auto kill = vmm.keelctl({"kill"});
  EXPECT_EQ(kill.exit_code, 0) << show(kill);
  EXPECT_EQ(vmm.wait_exit(seconds(60)), 14) << vmm.describe();
  const LiveVmm::Stopped stopped = vmm.stopped_console();
  const auto& first = stopped.lines;
  std::fprintf(stderr,
               "snapshot: %llu pages, %llu bytes, guest held %llu ms, snapshot took %llu ms\n",
               static_cast<unsigned long long>(result.memory_pages_written()),
               static_cast<unsigned long long>(result.bytes_written()),
               static_cast<unsigned long long>(held_us / 1000),
               static_cast<unsigned long long>(result.duration_ms()));

  // Every job was in the middle of its work.
  const auto beats_before = beats_in(first, kBeat);
  ASSERT_FALSE(beats_before.empty());
  const uint64_t last = beats_before.back().seq;
  ASSERT_LT(last + 10, kJobs.count) << "the heartbeat ran too far before the snapshot\n"
                                    << join_lines(first);
  for (size_t i = 0; i < beats_before.size(); ++i)
    ASSERT_EQ(beats_before[i].seq, i + 1) << join_lines(first);
  ASSERT_TRUE(with_prefix(first, "keel-guest: dirtier OK").empty())
      << "the dirtier ended before the snapshot";
  ASSERT_TRUE(with_prefix(first, "keel-guest: disk OK").empty())
      << "the disk writer ended before the snapshot";
  ASSERT_TRUE(with_prefix(first, "keel-guest: error").empty()) << join_lines(first);

  // Each restore gets the disk as it was at the snapshot.
  const std::string copies[2] = {scratch / "disk-restore-1.img", scratch / "disk-restore-2.img"};
  for (const auto& c : copies) fs::copy_file(disk, c);
  const std::string host_args_mib = std::to_string(kJobs.disk_mib);

  // Stay down longer than the clock may step, so that a clock that counted
  // the downtime could not pass.
  const uint64_t bound_us = kJobs.interval_ms * 1000 + held_us + kRestoreStartSlackUs;
  std::this_thread::sleep_until(taken_at + std::chrono::microseconds(bound_us) + seconds(1));

  std::string sums[2];
  for (int r = 0; r < 2; ++r) {
    SCOPED_TRACE("restore " + std::to_string(r + 1));
    const std::vector<std::string> restore{"--restore", snap_dir, "--disk", "path=" + copies[r]};
    LiveVmm restored(r == 0 ? jailed(restore) : restore);
    ASSERT_TRUE(restored.wait_line("keel-guest: beat seq=" + std::to_string(last + 2) + " ", 0,
                                   seconds(300)))
        << restored.describe();
    const uint64_t downtime_us = us_between(taken_at, Clock::now());
    auto status = restored.keelctl({"--json", "status"});
    ASSERT_EQ(status.exit_code, 0) << show(status);
    EXPECT_EQ(parse_json(status).status().restored_from(), snap_dir) << status.out;

    // The jobs end and the guest powers off by itself.
    ASSERT_EQ(restored.wait_exit(seconds(600)), 0) << restored.describe();
    const auto after = continue_console(stopped, restored.console());
    EXPECT_TRUE(with_prefix(after, "keel-guest: ready").empty()) << "the guest booted again\n"
                                                                 << join_lines(after);
    EXPECT_TRUE(with_prefix(after, "keel-guest: error").empty()) << join_lines(after);

    // The heartbeat goes on, every beat once, on a clock that stepped only
    // by the pause.
    const auto beats = beats_in(after, kBeat);
    ASSERT_EQ(beats.size(), kJobs.count - last) << join_lines(after);
    for (size_t i = 0; i < beats.size(); ++i)
      ASSERT_EQ(beats[i].seq, last + 1 + i) << join_lines(after);
    const uint64_t t_last = beats_in(first, kBeat).back().t_us;
    const uint64_t step = beats[0].t_us - t_last;
    std::fprintf(
        stderr,
        "restore %d: beat %llu at t_us=%llu, beat %llu at t_us=%llu: the guest's clock stepped "
        "%llu us "
        "(bound %llu); %llu us passed outside\n",
        r + 1, static_cast<unsigned long long>(last), static_cast<unsigned long long>(t_last),
        static_cast<unsigned long long>(beats[0].seq),
        static_cast<unsigned long long>(beats[0].t_us), static_cast<unsigned long long>(step),
        static_cast<unsigned long long>(bound_us), static_cast<unsigned long long>(downtime_us));
    EXPECT_GT(beats[0].t_us, t_last) << "the clock went backwards";
    EXPECT_LE(step, bound_us) << "the clock jumped forward";
    EXPECT_LT(step, downtime_us) << "the clock counted the downtime";

    // The dirtier's memory, written before and after the snapshot.
    auto dirtier = with_prefix(after, "keel-guest: dirtier OK ");
    ASSERT_EQ(dirtier.size(), 1u) << join_lines(after);
    EXPECT_EQ(dirtier[0],
              "keel-guest: dirtier OK pages=" + std::to_string(kJobs.dirtier_mib * 256));

    // The disk: verified by the guest, then by the host on the file.
    auto disk_ok = with_prefix(after, "keel-guest: disk OK mode=random ");
    ASSERT_EQ(disk_ok.size(), 1u) << join_lines(after);
    EXPECT_NE(disk_ok[0].find(" writes=" + std::to_string(kJobs.disk_writes) + " "),
              std::string::npos)
        << disk_ok[0];
    const std::string host = diskcheck_on_host(
        kDiskcheck, {"random-verify", copies[r], host_args_mib, std::to_string(kJobs.disk_seed),
                     std::to_string(kJobs.disk_writes)});
    ASSERT_EQ(host.rfind("keel-guest: disk OK mode=random-verify ", 0), 0u) << host;
    EXPECT_EQ(sum_of(host), sum_of(disk_ok[0])) << host << "\n" << disk_ok[0];
    sums[r] = sum_of(host);

    EXPECT_FALSE(with_prefix(after, "keel-guest: poweroff").empty()) << join_lines(after);
    std::vector<std::string> whole = first;
    whole.insert(whole.end(), after.begin(), after.end());
    const auto problems = kernel_log_problems(whole);
    EXPECT_TRUE(problems.empty()) << "kernel log problems:\n" << join_lines(problems);
  }
  EXPECT_EQ(sums[0], sums[1]) << "two restores of one snapshot wrote different disks";
}

}  // namespace
}  // namespace keel::testing
