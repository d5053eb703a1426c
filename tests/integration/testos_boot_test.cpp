// Boots the test guest on keel-vmm (label kvm: directly where /dev/kvm runs
// it, otherwise inside the KVM test host).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <thread>

#include "common/child_process.h"
#include "tests/support/live_vmm.h"
#include "tests/support/vmm_run.h"

namespace keel::testing {
namespace {

void expect_ready(const VmmRun& run, uint64_t mem_mib, uint64_t cpus, const char* boot) {
  auto ready = run.line("testos: ready ");
  ASSERT_TRUE(ready) << describe(run);
  // The guest counts usable RAM: all of it less the EBDA and BIOS area below 1 MiB.
  EXPECT_LE(field_u64(*ready, "mem_mib"), mem_mib) << *ready;
  EXPECT_GE(field_u64(*ready, "mem_mib"), mem_mib - 1) << *ready;
  EXPECT_EQ(field_u64(*ready, "cpus"), cpus) << *ready;
  EXPECT_GT(field_u64(*ready, "tsc_khz"), 100000u) << *ready;
  EXPECT_EQ(fields(*ready)["boot"], boot) << *ready;
}

TEST(TestosBoot, PlatformChecksPassWith1GiB) {
  auto run = run_vmm({"--kernel", testos_bzimage(), "--memory", "1G", "--cmdline", "job=platform"});
  ASSERT_EQ(run.exit_code, 0) << describe(run);
  ASSERT_TRUE(run.line("testos: boot")) << describe(run);
  expect_ready(run, 1024, 1, "linux");
  EXPECT_TRUE(run.line("testos: platform OK")) << describe(run);
  EXPECT_FALSE(run.line("testos: platform FAIL")) << describe(run);
}

TEST(TestosBoot, FourGiBAndTwoCpusAroundThePciHole) {
  auto run = run_vmm(
      {"--kernel", testos_bzimage(), "--memory", "4G", "--cpus", "2", "--cmdline", "job=platform"});
  ASSERT_EQ(run.exit_code, 0) << describe(run);
  expect_ready(run, 4096, 2, "linux");
  EXPECT_TRUE(run.line("testos: platform OK")) << describe(run);
}

TEST(TestosBoot, PvhEntryBootsTheSameGuest) {
  auto run = run_vmm({"--kernel", testos_elf(), "--memory", "256M", "--cmdline", "job=platform"});
  ASSERT_EQ(run.exit_code, 0) << describe(run);
  expect_ready(run, 256, 1, "pvh");
  EXPECT_TRUE(run.line("testos: platform OK")) << describe(run);
}

TEST(TestosBoot, HeartbeatCountsUpAndPowersOff) {
  auto run = run_vmm({"--kernel", testos_bzimage(), "--memory", "256M", "--cmdline",
                      "job=heartbeat interval_ms=20 count=10"});
  ASSERT_EQ(run.exit_code, 0) << describe(run);
  auto beats = run.all_lines("testos: beat ");
  ASSERT_EQ(beats.size(), 10u) << describe(run);
  for (size_t i = 1; i < beats.size(); ++i) {
    EXPECT_EQ(field_u64(beats[i], "seq"), field_u64(beats[i - 1], "seq") + 1) << beats[i];
    EXPECT_GT(field_u64(beats[i], "t_us"), field_u64(beats[i - 1], "t_us")) << beats[i];
  }
  // Beats follow a 20 ms grid in guest time: a beat printed late does not
  // move the next one, so single gaps may be a little short of 20 ms, but the
  // ten beats span nine intervals less at most the first beat's lateness.
  uint64_t span = field_u64(beats.back(), "t_us") - field_u64(beats.front(), "t_us");
  EXPECT_GE(span, 8u * 20000u) << run.console();
}

// COM1's transmit register is coalesced where KVM can (Machine::create_vcpus):
// the test guest's bytes then wait in KVM's ring until something applies
// them. A guest that prints and then spins for ten minutes without an exit
// still has its lines seen, whole and in order.
TEST(TestosBoot, LinesOfAGuestThatMakesNoExitArrive) {
  LiveVmm vmm({"--kernel", testos_bzimage(), "--memory", "128M", "--cmdline",
               "job=heartbeat interval_ms=600000 count=2"});
  auto beat = vmm.wait_line("testos: beat seq=1 ", 0, std::chrono::seconds(60));
  ASSERT_TRUE(beat) << join_lines(vmm.console());
  auto ready = vmm.lines("testos: ready ");
  ASSERT_EQ(ready.size(), 1u) << join_lines(vmm.console());
  EXPECT_LT(ready[0].index, beat->index);
  EXPECT_GT(field_u64(beat->text, "t_us"), 0u) << beat->text;
}

TEST(TestosBoot, DirtierVerifiesItsPattern) {
  auto run = run_vmm({"--kernel", testos_bzimage(), "--memory", "512M", "--cmdline",
                      "job=dirtier mib=256 rate_mbps=0 passes=2"});
  ASSERT_EQ(run.exit_code, 0) << describe(run);
  auto ok = run.line("testos: dirtier OK");
  ASSERT_TRUE(ok) << describe(run);
  EXPECT_EQ(field_u64(*ok, "pages"), 256u * 256u);
}

TEST(TestosBoot, DirtierUsesMemoryOnBothSidesOfThePciHole) {
  // 256 MiB below the hole at 3 GiB, 256 MiB from 4 GiB on; the pattern is
  // keyed on physical addresses, so misplaced RAM would not verify.
  auto run = run_vmm({"--kernel", testos_bzimage(), "--memory", "4G", "--cmdline",
                      "job=dirtier mib=512 start_mib=2816 rate_mbps=0 passes=2"});
  ASSERT_EQ(run.exit_code, 0) << describe(run);
  auto start = run.line("testos: dirtier start ");
  ASSERT_TRUE(start) << describe(run);
  EXPECT_EQ(field_u64(*start, "low"), 2816ull << 20) << *start;
  EXPECT_EQ(field_u64(*start, "high"), (4096ull + 256) << 20) << *start;
  auto ok = run.line("testos: dirtier OK");
  ASSERT_TRUE(ok) << describe(run);
  EXPECT_EQ(field_u64(*ok, "pages"), 512u * 256u);
}

TEST(TestosBoot, GuestFaultEndsTheVmmWithTheCrashCode) {
  for (const char* kind : {"ud", "pf", "gp", "de"}) {
    auto run = run_vmm({"--kernel", testos_bzimage(), "--memory", "128M", "--cmdline",
                        std::string("job=fault kind=") + kind});
    EXPECT_EQ(run.exit_code, 11) << kind << ": " << describe(run);
    EXPECT_TRUE(run.line("testos: exception vector=")) << kind << ": " << describe(run);
    EXPECT_NE(run.err.find("triple fault"), std::string::npos) << describe(run);
  }
}

TEST(TestosBoot, SilentTripleFaultIsReportedToo) {
  auto run = run_vmm(
      {"--kernel", testos_bzimage(), "--memory", "128M", "--cmdline", "job=fault kind=triple"});
  EXPECT_EQ(run.exit_code, 11) << describe(run);
  EXPECT_NE(run.err.find("guest crashed (triple fault)"), std::string::npos) << describe(run);
}

TEST(TestosBoot, RebootRequestEndsWithTheRebootCode) {
  auto run = run_vmm({"--kernel", testos_bzimage(), "--memory", "128M", "--cmdline", "job=reboot"});
  EXPECT_EQ(run.exit_code, 10) << describe(run);
  EXPECT_NE(run.err.find("reboot"), std::string::npos) << describe(run);
}

TEST(TestosBoot, StalledConsoleReaderDoesNotStallTheVmm) {
  // Nobody reads keel-vmm's stdout: the pipe fills, the guest keeps printing,
  // and SIGTERM still ends keel-vmm at once.
  ChildProcess::Options options;
  options.capture_stdout = true;
  options.capture_stderr = true;
  auto vmm = ChildProcess::spawn({vmm_path(), "--kernel", testos_bzimage(), "--memory", "64M",
                                  "--cmdline", "job=heartbeat interval_ms=1 count=0"},
                                 options);
  int capacity = ::fcntl(vmm.stdout_fd(), F_GETPIPE_SZ);
  ASSERT_GT(capacity, 0);
  // The pipe is full when it holds nearly its capacity and stops growing
  // although the guest prints a line every millisecond.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  int queued = 0, before = -1;
  bool full = false;
  while (!full && std::chrono::steady_clock::now() < deadline) {
    ASSERT_FALSE(vmm.try_wait()) << "keel-vmm ended early";
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    ASSERT_EQ(::ioctl(vmm.stdout_fd(), FIONREAD, &queued), 0);
    full = queued > capacity - 4096 && queued == before;
    before = queued;
  }
  ASSERT_TRUE(full) << "the console pipe never filled (" << queued << " of " << capacity << ")";
  auto signalled = std::chrono::steady_clock::now();
  vmm.signal(SIGTERM);
  EXPECT_EQ(vmm.wait(), 128 + SIGTERM);
  EXPECT_LT(std::chrono::steady_clock::now() - signalled, std::chrono::seconds(30))
      << "keel-vmm took too long to stop with a stalled reader";
}

TEST(TestosBoot, SerialToFile) {
  std::string path = ::testing::TempDir() + "keel-serial.txt";
  std::remove(path.c_str());  // keel-vmm appends
  auto run = run_vmm({"--kernel", testos_bzimage(), "--memory", "128M", "--serial", "file=" + path,
                      "--cmdline", "job=platform"});
  ASSERT_EQ(run.exit_code, 0) << describe(run);
  EXPECT_TRUE(run.lines.empty());
  FILE* f = std::fopen(path.c_str(), "r");
  ASSERT_NE(f, nullptr);
  char buf[8192] = {};
  size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  std::remove(path.c_str());
  EXPECT_NE(std::string(buf, n).find("testos: platform OK"), std::string::npos);
}

}  // namespace
}  // namespace keel::testing
