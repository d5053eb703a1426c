// Snapshot and restore of a running 2-vCPU test guest (label kvm): keelctl
// snapshot, the first keel-vmm killed, keel-vmm --restore in a new process
// (twice from one snapshot), and the guest carries on exactly: its heartbeat
// sequence and clock, a memory pattern written before the snapshot, a disk
// write in progress. Pause/resume under disk I/O. Damaged snapshots are
// refused with one line naming the problem before the guest runs; a
// directory that already holds a snapshot is refused. The control socket
// and SIGTERM are heard while a snapshot is written.
//
// Clock semantics asserted: the guest's heartbeat clock is its TSC, which
// the snapshot carries (IA32_TSC, and kvmclock without KVM_CLOCK_REALTIME),
// so a restored guest's clock continues from the instant of capture. It
// includes the time the guest sat paused before the capture (the TSC runs
// while vCPUs are parked) but not the time between the capture and the
// restore: no jump backwards, no jump forward by the downtime. Except where
// KVM does not offset guest TSCs (PVM): there the guest reads the host's TSC,
// restore cannot set it, and the clock counts the downtime (keel-vmm says so
// on stderr); it must still never go backwards.
//
// Scratch (snapshots, disk images) under /var/tmp: a tmpfs of its own in the
// KVM test host; sockets under /tmp (LiveVmm).
#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>
#include <thread>

#include "common/crc32c.h"
#include "control/control_client.h"
#include "proto/control.pb.h"
#include "proto/vm_state.pb.h"
#include "tests/support/host_kvm_facts.h"
#include "tests/support/keelctl_result.h"
#include "tests/support/live_vmm.h"
#include "tests/support/scratch_dir.h"
#include "tests/support/vmm_run.h"

namespace keel::testing {
namespace {

namespace fs = std::filesystem;
namespace pb = ::keel::api::v1;
namespace st = ::keel::state::v1;
using std::chrono::milliseconds;
using std::chrono::seconds;
using Clock = std::chrono::steady_clock;

constexpr size_t kStateHeaderSize =
    24;  // vmm/state/snapshot_state_file.cpp: magic, version, crc, length

uint64_t us_between(Clock::time_point a, Clock::time_point b) {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::microseconds>(b - a).count());
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + path);
}

std::vector<std::string> testos(const std::string& cmdline, const std::string& memory,
                                std::vector<std::string> extra = {}) {
  std::vector<std::string> args{"--kernel", testos_bzimage(), "--cpus",    "2",
                                "--memory", memory,           "--cmdline", cmdline};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

bool has_prefix(const std::vector<std::string>& lines, const std::string& prefix) {
  return std::any_of(lines.begin(), lines.end(),
                     [&](const std::string& l) { return l.rfind(prefix, 0) == 0; });
}

std::optional<std::string> first_line(const std::vector<std::string>& lines,
                                      const std::string& prefix) {
  for (const auto& l : lines) {
    if (l.rfind(prefix, 0) == 0) return l;
  }
  return std::nullopt;
}

// --- taking a snapshot --------------------------------------------------

struct Snapshot {
  std::string dir;
  pb::SnapshotResult result;
  LiveVmm::Stopped console;    // the first keel-vmm's console, cut where it stopped
  uint64_t held_us = 0;        // from the pause request to the snapshot's answer
  Clock::time_point taken_at;  // the snapshot's answer
};

// Pause, snapshot (the guest stays paused: a paused guest is not resumed by
// a snapshot), kill: the first process never runs the guest past the
// snapshot, so its disk is the snapshot's disk and its last line the last
// one before the snapshot.
Snapshot pause_snapshot_kill(LiveVmm& vmm, const std::string& dir) {
  Snapshot s;
  s.dir = dir;
  const auto asked = Clock::now();
  auto pause = vmm.keelctl({"--json", "pause"});
  EXPECT_EQ(pause.exit_code, 0) << show(pause);
  auto snap = vmm.keelctl({"--json", "snapshot", dir}, seconds(600));
  s.taken_at = Clock::now();
  s.held_us = us_between(asked, s.taken_at);
  EXPECT_EQ(snap.exit_code, 0) << show(snap) << vmm.describe();
  auto response = parse_json(snap);
  EXPECT_TRUE(response.ok()) << snap.out;
  s.result = response.snapshot();
  EXPECT_EQ(s.result.dir(), dir);
  auto status = vmm.keelctl({"--json", "status"});
  EXPECT_EQ(parse_json(status).status().state(), pb::RUN_STATE_PAUSED)
      << "a snapshot resumed a paused guest";
  auto kill = vmm.keelctl({"kill"});
  EXPECT_EQ(kill.exit_code, 0) << show(kill);
  EXPECT_EQ(vmm.wait_exit(seconds(60)), 14) << vmm.describe();
  s.console = vmm.stopped_console();
  return s;
}

// --- heartbeat and memory -------------------------------------------------

// The bound on the guest's clock step over a restore: one interval, the
// time the guest sat paused before the capture (at most `held_us`), and the
// restore's own start (from setting the TSC to the first KVM_RUN; generous
// for the KVM test host, where everything is 5-20 times slower).
constexpr uint64_t kRestoreStartSlackUs = 2'000'000;

TEST(Snapshot, HeartbeatAndMemoryContinueAfterRestoringTwice) {
  constexpr uint64_t kIntervalMs = 100, kCount = 60, kMib = 32;
  ScratchDir scratch("keel-snapshot-test");
  // A disk and rng too, so the snapshot carries virtio devices; the
  // heartbeat does not touch the disk, yet each restore gets its own copy
  // of it as it was at the snapshot (as a restore must).
  const std::string disk = scratch.sparse_file("disk.img", 8 << 20);
  LiveVmm vmm(testos("job=heartbeat interval_ms=" + std::to_string(kIntervalMs) +
                         " count=" + std::to_string(kCount) + " mib=" + std::to_string(kMib),
                     "256M",
                     {"--disk", "path=" + disk, "--rng", "--snapshot-root", scratch.path()}));
  auto filled = vmm.wait_line("testos: heartbeat filled ", 0, seconds(300));
  ASSERT_TRUE(filled) << vmm.describe();
  EXPECT_EQ(field_u64(filled->text, "pages"), kMib * 256);
  ASSERT_TRUE(vmm.wait_line("testos: beat seq=3 ")) << vmm.describe();

  const Snapshot snap = pause_snapshot_kill(vmm, scratch / "snap");
  ASSERT_FALSE(HasFailure());
  const auto before = beats_in(snap.console.lines);
  ASSERT_FALSE(before.empty());
  const uint64_t last = before.back().seq;
  ASSERT_LT(last + 5, kCount) << "the guest ran too far before the snapshot\n"
                              << join_lines(snap.console.lines);
  for (size_t i = 0; i < before.size(); ++i)
    ASSERT_EQ(before[i].seq, i + 1) << join_lines(snap.console.lines);

  // Sparse memory: at least the filled pages, far from all 256 MiB.
  EXPECT_GE(snap.result.memory_pages_written(), kMib * 256);
  EXPECT_LT(snap.result.memory_pages_written(), 256u * 256 / 2);
  struct stat memory {};
  ASSERT_EQ(::stat((snap.dir + "/memory").c_str(), &memory), 0);
  EXPECT_EQ(static_cast<uint64_t>(memory.st_size), 256ull << 20);
  EXPECT_LT(static_cast<uint64_t>(memory.st_blocks) * 512, 128ull << 20)
      << "the memory file is not sparse";
  std::fprintf(stderr, "snapshot: %llu pages, %llu bytes, paused %llu ms, took %llu ms\n",
               static_cast<unsigned long long>(snap.result.memory_pages_written()),
               static_cast<unsigned long long>(snap.result.bytes_written()),
               static_cast<unsigned long long>(snap.result.pause_ms()),
               static_cast<unsigned long long>(snap.result.duration_ms()));

  const std::string copies[2] = {scratch / "disk-restore-1.img", scratch / "disk-restore-2.img"};
  for (const auto& c : copies) fs::copy_file(disk, c);

  // The guest's clock may step by at most this much; stay down longer than
  // that, so a clock that counted the downtime could not pass.
  const uint64_t bound_us = kIntervalMs * 1000 + snap.held_us + kRestoreStartSlackUs;
  std::this_thread::sleep_until(snap.taken_at + std::chrono::microseconds(bound_us) + seconds(1));

  const bool tsc_is_host = !kvm_offsets_guest_tsc();
  for (int r = 0; r < 2; ++r) {
    SCOPED_TRACE("restore " + std::to_string(r + 1));
    const uint64_t down_before_restore_us = us_between(snap.taken_at, Clock::now());
    LiveVmm restored({"--restore", snap.dir, "--disk", "path=" + copies[r]});
    ASSERT_TRUE(restored.wait_line("testos: beat seq=" + std::to_string(last + 2) + " "))
        << restored.describe();
    const uint64_t downtime_us = us_between(snap.taken_at, Clock::now());
    auto status = restored.keelctl({"--json", "status"});
    ASSERT_EQ(status.exit_code, 0) << show(status);
    auto s = parse_json(status).status();
    EXPECT_EQ(s.restored_from(), snap.dir);
    EXPECT_EQ(s.vcpus(), 2u);
    EXPECT_EQ(s.memory_bytes(), 256ull << 20);
    ASSERT_EQ(s.devices_size(), 2);
    EXPECT_NE(s.devices(0).description().find(copies[r]), std::string::npos)
        << s.devices(0).description();
    // The guest still reads the disk's serial it had: the original image's name.
    EXPECT_NE(s.devices(0).description().find(",serial=disk.img"), std::string::npos)
        << s.devices(0).description();
    // The console's history came with the state: from the boot on.
    auto history = restored.keelctl({"console", "--dump"});
    ASSERT_EQ(history.exit_code, 0) << show(history);
    EXPECT_EQ(history.out.rfind("testos: boot", 0), 0u) << history.out;
    EXPECT_NE(history.out.find("testos: beat seq=" + std::to_string(last) + " "), std::string::npos)
        << history.out;

    ASSERT_EQ(restored.wait_exit(seconds(300)), 0) << restored.describe();
    const auto after = continue_console(snap.console, restored.console());
    // It carried on: no boot, no ready line, the next beat first.
    ASSERT_FALSE(after.empty());
    EXPECT_EQ(after.front().rfind("testos: beat seq=" + std::to_string(last + 1) + " ", 0), 0u)
        << join_lines(after);
    EXPECT_FALSE(has_prefix(after, "testos: boot")) << join_lines(after);
    EXPECT_FALSE(has_prefix(after, "testos: exception")) << join_lines(after);
    const auto beats = beats_in(after);
    ASSERT_EQ(beats.size(), kCount - last) << join_lines(after);
    for (size_t i = 0; i < beats.size(); ++i)
      ASSERT_EQ(beats[i].seq, last + 1 + i) << join_lines(after);

    const uint64_t t_last = beats_in(snap.console.lines).back().t_us;
    const uint64_t step = beats[0].t_us - t_last;
    std::fprintf(
        stderr,
        "restore %d: beat %llu at t_us=%llu, beat %llu at t_us=%llu: the guest's clock stepped "
        "%llu us "
        "(bound %llu: interval + %llu us held paused + slack); %llu us passed outside\n",
        r + 1, static_cast<unsigned long long>(last), static_cast<unsigned long long>(t_last),
        static_cast<unsigned long long>(beats[0].seq),
        static_cast<unsigned long long>(beats[0].t_us), static_cast<unsigned long long>(step),
        static_cast<unsigned long long>(bound_us), static_cast<unsigned long long>(snap.held_us),
        static_cast<unsigned long long>(downtime_us));
    EXPECT_GT(beats[0].t_us, t_last) << "the clock went backwards";
    EXPECT_GE(step, kIntervalMs * 1000 / 2) << "a beat came early";
    const bool said = restored.describe().find("does not offset guest TSCs") != std::string::npos;
    if (tsc_is_host) {
      // The host's TSC: the step spans at least the time down before the
      // restore began, and no more than all the time down plus what the
      // step may hold anyway (a beat, the hold before the capture, slack).
      EXPECT_TRUE(said) << "keel-vmm did not say that the guest's clock counts the downtime\n"
                        << restored.describe();
      EXPECT_GE(step, down_before_restore_us) << "the guest's TSC is not the host's";
      EXPECT_LE(step, downtime_us + bound_us) << "the clock jumped beyond the time down";
    } else {
      EXPECT_FALSE(said) << restored.describe();
      EXPECT_LE(step, bound_us) << "the clock jumped forward";
      EXPECT_LT(step, downtime_us) << "the clock counted the downtime";
    }
    // Then on schedule again: no burst.
    for (size_t i = 1; i < beats.size(); ++i) {
      EXPECT_GE(beats[i].t_us - beats[i - 1].t_us, kIntervalMs * 1000 / 2) << join_lines(after);
    }
    // Every page written before the snapshot, checked after the last beat.
    auto ok = first_line(after, "testos: heartbeat memory ");
    ASSERT_TRUE(ok) << join_lines(after);
    EXPECT_EQ(*ok, "testos: heartbeat memory OK pages=" + std::to_string(kMib * 256));
  }
}

// Snapshot taken in the second pass of a paced dirtier: the pages written in
// that pass before the snapshot come from the memory file, the rest are
// written after the restore; the final check reads every one.
TEST(Snapshot, DirtierInterruptedMidPassVerifiesItsMemory) {
  ScratchDir scratch("keel-snapshot-test");
  LiveVmm vmm(testos("job=dirtier mib=32 rate_mbps=8 passes=2", "256M",
                     {"--snapshot-root", scratch.path()}));
  ASSERT_TRUE(vmm.wait_line("testos: dirtier pass=1 ", 0, seconds(300))) << vmm.describe();
  const Snapshot snap = pause_snapshot_kill(vmm, scratch / "snap");
  ASSERT_FALSE(HasFailure());
  ASSERT_FALSE(has_prefix(snap.console.lines, "testos: dirtier pass=2 "))
      << "pass 2 ended before the snapshot\n"
      << join_lines(snap.console.lines);
  // Pass 2 had started: at 8 MiB/s, pages are written all the time.
  EXPECT_GE(snap.result.memory_pages_written(), 32u * 256);

  LiveVmm restored({"--restore", snap.dir});
  ASSERT_EQ(restored.wait_exit(seconds(300)), 0) << restored.describe();
  const auto after = continue_console(snap.console, restored.console());
  EXPECT_FALSE(has_prefix(after, "testos: boot")) << join_lines(after);
  auto pass2 = first_line(after, "testos: dirtier pass=2 ");
  ASSERT_TRUE(pass2) << join_lines(after);
  EXPECT_EQ(*pass2, "testos: dirtier pass=2 mib=32");
  EXPECT_FALSE(has_prefix(after, "testos: dirtier bad_page")) << join_lines(after);
  auto verdict = first_line(after, "testos: dirtier OK ");
  ASSERT_TRUE(verdict) << join_lines(after);
  EXPECT_EQ(*verdict, "testos: dirtier OK pages=8192");
}

// --- disk -------------------------------------------------------------------

// testos's disk pattern (guest-images/README.md, job disk): the sum of
// every word a `write` of `sectors` sectors with `seed` writes.
uint64_t disk_pattern_sum(uint64_t sectors, uint64_t seed) {
  auto mix64 = [](uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
  };
  uint64_t sum = 0;
  for (uint64_t s = 0; s < sectors; ++s) {
    for (uint64_t i = 0; i < 64; ++i) sum += mix64((s << 6 | i) ^ (seed * 0xd6e8feb86659fd93ULL));
  }
  return sum;
}

std::string hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

// A paced write (4 s at 8 MiB/s) snapshotted in the middle, with requests
// possibly in flight (drained into the snapshot). Each restore runs on its
// own copy of the disk as it was at the snapshot, finishes the write, and a
// fresh boot then verifies every sector of that copy.
TEST(Snapshot, DiskWriteInterruptedBySnapshotFinishesAndVerifiesAfterRestoringTwice) {
  constexpr uint64_t kMib = 32, kSeed = 7;
  ScratchDir scratch("keel-snapshot-test");
  const std::string disk = scratch.sparse_file("disk.img", kMib << 20);
  LiveVmm vmm(testos("job=disk mode=write mib=32 seed=7 rate_mbps=8", "128M",
                     {"--disk", "path=" + disk, "--snapshot-root", scratch.path()}));
  ASSERT_TRUE(vmm.wait_line("testos: disk device ", 0, seconds(300))) << vmm.describe();
  const Snapshot snap = pause_snapshot_kill(vmm, scratch / "snap");
  ASSERT_FALSE(HasFailure());
  ASSERT_FALSE(has_prefix(snap.console.lines, "testos: disk OK"))
      << "the write ended before the snapshot\n"
      << join_lines(snap.console.lines);

  const std::string copies[2] = {scratch / "disk-restore-1.img", scratch / "disk-restore-2.img"};
  for (const auto& c : copies) fs::copy_file(disk, c);
  const std::string want_sum = hex(disk_pattern_sum(kMib * 2048, kSeed));

  for (int r = 0; r < 2; ++r) {
    SCOPED_TRACE("restore " + std::to_string(r + 1) + " on " + copies[r]);
    LiveVmm restored({"--restore", snap.dir, "--disk", "path=" + copies[r]});
    ASSERT_EQ(restored.wait_exit(seconds(300)), 0) << restored.describe();
    const auto after = continue_console(snap.console, restored.console());
    EXPECT_FALSE(has_prefix(after, "testos: boot")) << join_lines(after);
    auto written = first_line(after, "testos: disk OK mode=write ");
    ASSERT_TRUE(written) << join_lines(after);
    auto f = fields(*written);
    EXPECT_EQ(f["mib"], "32");
    EXPECT_EQ(f["seed"], "7");
    EXPECT_EQ(f["sum"], want_sum) << *written;

    auto verify = run_vmm(
        testos("job=disk mode=verify mib=32 seed=7", "128M", {"--disk", "path=" + copies[r]}),
        seconds(300));
    ASSERT_EQ(verify.exit_code, 0) << verify.console() << verify.err;
    EXPECT_FALSE(verify.line("testos: disk bad ")) << verify.console();
    auto verified = verify.line("testos: disk OK mode=verify ");
    ASSERT_TRUE(verified) << verify.console();
    EXPECT_EQ(fields(*verified)["sum"], want_sum) << *verified;
  }
}

// A paced random-write job (each write read back at once, every surviving
// write re-read after a flush at the end) paused and resumed four times.
TEST(Snapshot, PauseAndResumeUnderDiskIoLoseNothing) {
  ScratchDir scratch("keel-snapshot-test");
  const std::string disk = scratch.sparse_file("disk.img", 32 << 20);
  LiveVmm vmm(testos("job=disk mode=random ops=600 seed=3 rate_mbps=1", "128M",
                     {"--disk", "path=" + disk}));
  ASSERT_TRUE(vmm.wait_line("testos: disk device ", 0, seconds(300))) << vmm.describe();
  size_t resumed_at = vmm.line_count();
  for (int i = 0; i < 4; ++i) {
    SCOPED_TRACE("pause " + std::to_string(i + 1));
    // It wrote since the last resume: a progress line (every 50 writes).
    ASSERT_TRUE(vmm.wait_line("testos: disk progress ", resumed_at, seconds(300)))
        << vmm.describe();
    auto pause = vmm.keelctl({"--json", "pause"});
    ASSERT_EQ(pause.exit_code, 0) << show(pause);
    auto status = vmm.keelctl({"--json", "status"});
    const pb::StatusResult paused = parse_json(status).status();
    EXPECT_EQ(paused.state(), pb::RUN_STATE_PAUSED) << status.out;
    // The disk's counters: what the job did so far, and no error.
    ASSERT_EQ(paused.devices_size(), 1) << status.out;
    EXPECT_GT(paused.devices(0).counters().at("written_bytes"), 0u) << status.out;
    EXPECT_GT(paused.devices(0).counters().at("requests"), 2u * 50 * (i + 1) - 1) << status.out;
    EXPECT_EQ(paused.devices(0).counters().at("errors"), 0u) << status.out;
    EXPECT_EQ(paused.devices(0).error(), "") << status.out;
    const size_t lines_paused = vmm.line_count();
    std::this_thread::sleep_for(milliseconds(300));
    EXPECT_EQ(vmm.line_count(), lines_paused) << "the guest printed while paused\n"
                                              << vmm.describe();
    auto resume = vmm.keelctl({"--json", "resume"});
    ASSERT_EQ(resume.exit_code, 0) << show(resume);
    resumed_at = vmm.line_count();
  }
  // Every pause fell inside the job: its verdict came after the last resume.
  EXPECT_TRUE(vmm.lines("testos: disk OK").empty()) << "the job ended before the pauses did\n"
                                                    << vmm.describe();
  ASSERT_EQ(vmm.wait_exit(seconds(300)), 0) << vmm.describe();
  auto verdict = vmm.lines("testos: disk OK mode=random ");
  ASSERT_EQ(verdict.size(), 1u) << vmm.describe();
  EXPECT_EQ(fields(verdict[0].text)["ops"], "600");
  EXPECT_TRUE(vmm.lines("testos: disk bad ").empty()) << vmm.describe();
  auto status = vmm.keelctl({"--json", "status"});  // gone: cannot connect
  EXPECT_EQ(status.exit_code, 3) << show(status);
}

// --- refusals ---------------------------------------------------------------

// keel-vmm --restore on a damaged snapshot: exit 1, exactly one line on
// stderr naming the problem, and no guest output at all.
void expect_refused(const std::string& dir, const std::string& what) {
  SCOPED_TRACE(dir + ": " + what);
  auto run = run_vmm({"--restore", dir}, seconds(120));
  EXPECT_FALSE(run.timed_out);
  EXPECT_EQ(run.exit_code, 1) << run.console() << run.err;
  EXPECT_TRUE(run.lines.empty()) << "the guest ran:\n" << run.console();
  ASSERT_FALSE(run.err.empty());
  EXPECT_EQ(std::count(run.err.begin(), run.err.end(), '\n'), 1) << run.err;
  EXPECT_TRUE(std::regex_search(run.err, std::regex("^[-0-9T:.]+Z keel-vmm: error: "))) << run.err;
  EXPECT_NE(run.err.find(what), std::string::npos) << "stderr: " << run.err;
}

void flip_byte(const std::string& path, uint64_t offset) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(static_cast<std::streamoff>(offset));
  char c = 0;
  f.read(&c, 1);
  c = static_cast<char>(c ^ 0x5a);
  f.seekp(static_cast<std::streamoff>(offset));
  f.write(&c, 1);
  if (!f) throw std::runtime_error("cannot flip a byte of " + path);
}

st::VmState parse_state(const std::string& dir) {
  const std::string file = read_file(dir + "/state");
  st::VmState state;
  if (file.size() < kStateHeaderSize || !state.ParseFromString(file.substr(kStateHeaderSize))) {
    throw std::runtime_error("cannot parse " + dir + "/state");
  }
  return state;
}

// The state file rewritten with `state` and a correct header and checksum,
// the way keel-vmm writes it: only the content is wrong.
void write_state(const std::string& dir, const st::VmState& state) {
  std::string payload = state.SerializeAsString();
  std::string header = read_file(dir + "/state").substr(0, kStateHeaderSize);
  const uint32_t crc = crc32c(payload.data(), payload.size());
  for (int i = 0; i < 4; ++i) header[12 + i] = static_cast<char>(crc >> (8 * i));
  for (int i = 0; i < 8; ++i)
    header[16 + i] = static_cast<char>(static_cast<uint64_t>(payload.size()) >> (8 * i));
  write_file(dir + "/state", header + payload);
}

std::string copy_snapshot(const std::string& from, const std::string& to) {
  fs::copy(from, to, fs::copy_options::recursive);
  return to;
}

TEST(Snapshot, DamagedTruncatedMissingAndForeignSnapshotsAreRefused) {
  ScratchDir scratch("keel-snapshot-test");
  // Two snapshots of a heartbeat guest with memory written: 64 MiB and 96 MiB.
  std::string good, other;
  for (const char* memory : {"64M", "96M"}) {
    LiveVmm vmm(
        testos("job=heartbeat interval_ms=50 mib=8", memory, {"--snapshot-root", scratch.path()}));
    ASSERT_TRUE(vmm.wait_line("testos: beat seq=2 ", 0, seconds(300))) << vmm.describe();
    const Snapshot snap = pause_snapshot_kill(vmm, scratch / (std::string("snap-") + memory));
    ASSERT_FALSE(HasFailure());
    (good.empty() ? good : other) = snap.dir;
  }
  const st::VmState state = parse_state(good);
  ASSERT_GT(state.memory().extents_size(), 0);
  const auto& extent = state.memory().extents(state.memory().extents_size() - 1);
  const uint64_t state_size = fs::file_size(good + "/state");
  int n = 0;
  auto variant = [&](const char* name) {
    return copy_snapshot(good, scratch / (std::to_string(++n) + "-" + name));
  };

  {
    std::string d = variant("state-payload-byte");
    flip_byte(d + "/state", kStateHeaderSize + state_size / 2);
    expect_refused(d, "is corrupted (checksum mismatch)");
  }
  {
    std::string d = variant("state-magic-byte");
    flip_byte(d + "/state", 3);
    expect_refused(d, "is not a Keel snapshot state file");
  }
  {
    std::string d = variant("state-checksum-byte");
    flip_byte(d + "/state", 13);
    expect_refused(d, "is corrupted (checksum mismatch)");
  }
  {
    std::string d = variant("state-truncated");
    fs::resize_file(d + "/state", state_size - 100);
    expect_refused(d, "is truncated or padded");
  }
  {
    std::string d = variant("state-truncated-to-header");
    fs::resize_file(d + "/state", 10);
    expect_refused(d, "is not a Keel snapshot state file");
  }
  {
    std::string d = variant("state-empty");
    fs::resize_file(d + "/state", 0);
    expect_refused(d, "is not a Keel snapshot state file");
  }
  {
    std::string d = variant("state-missing");
    fs::remove(d + "/state");
    expect_refused(d, "no snapshot state file");
  }
  {
    std::string d = variant("state-newer-schema");
    st::VmState s = state;
    s.set_schema_version(3);
    write_state(d, s);
    expect_refused(d, "snapshot schema version 3");
  }
  {
    std::string d = variant("memory-byte");
    flip_byte(d + "/memory", extent.offset() + extent.length() / 2);
    expect_refused(d, "snapshot memory is corrupted");
  }
  {
    std::string d = variant("memory-truncated");
    fs::resize_file(d + "/memory", extent.offset() + extent.length() / 2);
    expect_refused(d, "(truncated or not this snapshot's)");
  }
  {
    std::string d = variant("memory-missing");
    fs::remove(d + "/memory");
    expect_refused(d, "no snapshot memory file");
  }
  {
    SCOPED_TRACE("a crafted state that names a host file as its disk: never opened");
    const std::string victim = scratch.sparse_file("victim.img", 1 << 20);
    std::ofstream(victim, std::ios::in | std::ios::out | std::ios::binary) << "precious";
    std::string d = variant("crafted-disk");
    st::VmState s = state;
    auto* disk = s.mutable_config()->add_disks();
    disk->set_path(victim);
    disk->set_serial("victim");
    write_state(d, s);
    expect_refused(d, "the snapshot has 1 disks: name each with --disk");
    EXPECT_EQ(read_file(victim).substr(0, 8), "precious");
  }
  {
    SCOPED_TRACE("a FIFO named state: refused at once, start-up does not wait for a writer");
    std::string d = variant("state-fifo");
    fs::remove(d + "/state");
    ASSERT_EQ(::mkfifo((d + "/state").c_str(), 0600), 0);
    expect_refused(d, "is not a regular file");
  }
  {
    SCOPED_TRACE("the memory of a 96 MiB guest's snapshot beside a 64 MiB guest's state");
    std::string d = variant("memory-of-other-size");
    fs::copy_file(other + "/memory", d + "/memory", fs::copy_options::overwrite_existing);
    expect_refused(d, "(truncated or not this snapshot's)");
  }
  {
    SCOPED_TRACE("a state (checksum right) whose machine is 96 MiB beside a 64 MiB memory image");
    std::string d = variant("state-says-other-size");
    st::VmState s = state;
    s.mutable_config()->set_memory(96ull << 20);
    write_state(d, s);
    expect_refused(d, "snapshot memory is 67108864 bytes, the guest has 100663296");
  }
  {
    SCOPED_TRACE("a state whose memory image claims an extent past the end of memory");
    std::string d = variant("memory-extent-outside");
    st::VmState s = state;
    s.mutable_memory()->mutable_extents(0)->set_offset(64ull << 20);
    write_state(d, s);
    expect_refused(d, "does not fit the guest memory");
  }
  expect_refused(scratch / "no-such-snapshot", "no snapshot state file");

  // The untouched snapshot still restores (the refusals were the damage's).
  LiveVmm restored({"--restore", good});
  EXPECT_TRUE(restored.wait_line("testos: beat ", 0, seconds(120))) << restored.describe();
  auto kill = restored.keelctl({"kill"});
  EXPECT_EQ(kill.exit_code, 0) << show(kill);
  EXPECT_EQ(restored.wait_exit(seconds(60)), 14) << restored.describe();
}

TEST(Snapshot, SnapshotIntoADirectoryThatHoldsOneIsRefused) {
  ScratchDir scratch("keel-snapshot-test");
  LiveVmm vmm(testos("job=heartbeat interval_ms=50", "64M", {"--snapshot-root", scratch.path()}));
  ASSERT_TRUE(vmm.wait_line("testos: beat seq=2 ", 0, seconds(300))) << vmm.describe();
  const std::string dir = scratch / "snap";
  auto first = vmm.keelctl({"--json", "snapshot", dir}, seconds(600));
  ASSERT_EQ(first.exit_code, 0) << show(first);
  const std::string state = read_file(dir + "/state"), memory = read_file(dir + "/memory");

  auto second = vmm.keelctl({"snapshot", dir}, seconds(600));
  EXPECT_EQ(second.exit_code, 1) << show(second);
  EXPECT_NE(second.err.find("already holds a snapshot"), std::string::npos) << show(second);
  EXPECT_EQ(read_file(dir + "/state"), state) << "the first snapshot's state was changed";
  EXPECT_EQ(read_file(dir + "/memory"), memory) << "the first snapshot's memory was changed";

  const std::string file = scratch / "a-file";
  write_file(file, "not a directory");
  auto onto_file = vmm.keelctl({"snapshot", file}, seconds(600));
  EXPECT_EQ(onto_file.exit_code, 1) << show(onto_file);
  EXPECT_NE(onto_file.err.find("cannot create snapshot directory"), std::string::npos)
      << show(onto_file);

  // Only below the root keel-vmm was started with; a planted link is not
  // followed out of it.
  auto outside = vmm.keelctl({"snapshot", "/var/tmp/keel-snapshot-outside-the-root"}, seconds(60));
  EXPECT_EQ(outside.exit_code, 1) << show(outside);
  EXPECT_NE(outside.err.find("not below the snapshot root"), std::string::npos) << show(outside);
  EXPECT_FALSE(fs::exists("/var/tmp/keel-snapshot-outside-the-root"));
  const std::string elsewhere = scratch / "elsewhere";
  fs::create_directory(elsewhere);
  fs::create_directory_symlink(elsewhere, scratch / "link");
  auto through_link = vmm.keelctl({"snapshot", scratch / "link"}, seconds(60));
  EXPECT_EQ(through_link.exit_code, 1) << show(through_link);
  EXPECT_NE(through_link.err.find("link is a symbolic link"), std::string::npos)
      << show(through_link);
  EXPECT_TRUE(fs::is_empty(elsewhere)) << "the snapshot went through the planted link";

  // Refused, and the guest runs on (not left paused).
  auto status = vmm.keelctl({"--json", "status"});
  EXPECT_EQ(parse_json(status).status().state(), pb::RUN_STATE_RUNNING) << status.out;
  const size_t now = vmm.line_count();
  EXPECT_TRUE(vmm.wait_line("testos: beat ", now, seconds(60))) << vmm.describe();
  auto kill = vmm.keelctl({"kill"});
  EXPECT_EQ(kill.exit_code, 0) << show(kill);
  EXPECT_EQ(vmm.wait_exit(seconds(60)), 14) << vmm.describe();
}

// Memory and the state file are written off the event loop: while they
// are, the control socket answers (the guest reads as paused) and SIGTERM
// is heard at once; a snapshot cut short leaves no state file, so nothing
// takes it for a whole one.
TEST(Snapshot, StatusAndSigtermAreAnsweredWhileASnapshotIsWritten) {
  ScratchDir scratch("keel-snapshot-test");
  // 768 MiB of written memory: a write that takes a while on any host.
  LiveVmm vmm(
      testos("job=heartbeat interval_ms=50 mib=768", "1G", {"--snapshot-root", scratch.path()}));
  ASSERT_TRUE(vmm.wait_line("testos: beat seq=1 ", 0, seconds(300))) << vmm.describe();

  auto snapshot_in_background = [&](const std::string& dir, pb::Response& answer,
                                    std::atomic<bool>& done) {
    return std::thread([&vmm, dir, &answer, &done] {
      pb::Request request;
      request.mutable_snapshot()->set_dir(dir);
      try {
        answer = ControlClient(vmm.socket_path(), seconds(10)).call(request, seconds(600));
      } catch (const std::exception& e) {
        answer.set_ok(false);
        answer.mutable_error()->set_message(e.what());
      }
      done = true;
    });
  };
  pb::Request status;
  status.mutable_status();
  ControlClient client(vmm.socket_path(), seconds(10));

  // A whole snapshot, the status asked again and again meanwhile.
  pb::Response first;
  std::atomic<bool> first_done{false};
  std::thread writer = snapshot_in_background(scratch / "whole", first, first_done);
  int paused_answers = 0;
  while (!first_done) {
    const pb::Response r = client.call(status, seconds(60));
    ASSERT_TRUE(r.ok()) << r.error().message();
    if (r.status().state() == pb::RUN_STATE_PAUSED && !first_done) ++paused_answers;
  }
  writer.join();
  ASSERT_TRUE(first.ok()) << first.error().message();
  EXPECT_GT(paused_answers, 0) << "no status was answered while the snapshot was written";
  EXPECT_TRUE(fs::exists(scratch / "whole/state"));
  const size_t now = vmm.line_count();
  EXPECT_TRUE(vmm.wait_line("testos: beat ", now, seconds(60))) << "resumed: " << vmm.describe();

  // SIGTERM as soon as the next snapshot has paused the guest.
  pb::Response second;
  std::atomic<bool> second_done{false};
  writer = snapshot_in_background(scratch / "cut", second, second_done);
  for (;;) {
    const pb::Response r = client.call(status, seconds(60));
    ASSERT_TRUE(r.ok()) << r.error().message();
    if (r.status().state() == pb::RUN_STATE_PAUSED || second_done) break;
  }
  ::kill(vmm.pid(), SIGTERM);
  const auto exit_code = vmm.wait_exit(seconds(30));
  writer.join();
  ASSERT_TRUE(exit_code.has_value()) << "SIGTERM not heard: " << vmm.describe();
  // Either the write was cut short (answered with a failure, or the
  // connection closed) and there is no state file, or it had finished.
  if (second.ok()) {
    EXPECT_TRUE(fs::exists(scratch / "cut/state"));
  } else {
    EXPECT_FALSE(fs::exists(scratch / "cut/state")) << second.error().message();
  }
  std::printf("second snapshot: %s\n",
              second.ok() ? "finished before SIGTERM" : second.error().message().c_str());
}

}  // namespace
}  // namespace keel::testing
