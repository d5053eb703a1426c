// Debian's stock kernel on keel-vmm (label linux: needs a KVM with VMX/SVM,
// so it runs inside the KVM test host on PVM machines and where /dev/kvm is
// absent). The initramfs is guest-images/linux: busybox's own init with a
// one-line inittab that runs keel-guest-init.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>

#include "tests/support/kernel_log.h"
#include "tests/support/vmm_run.h"

namespace keel::testing {
namespace {

const std::string kImages = KEEL_LINUX_IMAGE_DIR;

// The KVM test host emulates AMD-V with TCG, and about one nested boot in
// fifty dies there in a triple fault before init, under QEMU as under
// keel-vmm (QEMU's guests in the same box show it too). Inside the box only,
// a boot that ends in a triple fault without a kernel panic or oops before it
// is run once more, and the retry is reported; anything else counts as it is.
VmmRun boot_with_box_retry(const std::vector<std::string>& args) {
  auto run = run_vmm(args, std::chrono::seconds(600));
  const char* where = std::getenv("KEEL_KVM_WHERE");
  bool in_box = where != nullptr && std::string(where) == "box";
  bool kernel_complained = false;
  for (const auto& l : run.lines) {
    kernel_complained = kernel_complained || l.find("Kernel panic") != std::string::npos ||
                        l.find("Oops") != std::string::npos || l.find("BUG:") != std::string::npos;
  }
  if (in_box && run.exit_code == 11 && !kernel_complained) {
    std::string last = run.lines.empty() ? "" : run.lines.back();
    std::fprintf(stderr, "linux_boot_test: box glitch? triple fault after \"%s\"; booting again\n",
                 last.c_str());
    ::testing::Test::RecordProperty("box_retry", last);
    run = run_vmm(args, std::chrono::seconds(600));
  }
  return run;
}

VmmRun boot_linux(const std::string& flavour, const std::string& cpus, const std::string& memory,
                  const std::string& job) {
  return boot_with_box_retry({"--kernel", kImages + "/vmlinuz-" + flavour, "--initrd",
                              kImages + "/initramfs-" + flavour + ".cpio.gz", "--cpus", cpus,
                              "--memory", memory, "--cmdline",
                              "console=ttyS0 panic=-1 acpi_force_table_verification " + job});
}

void expect_clean_log(const VmmRun& run) {
  auto problems = kernel_log_problems(run.lines);
  std::string all;
  for (const auto& p : problems) all += p + "\n";
  EXPECT_TRUE(problems.empty()) << "kernel log lines that show Keel built something wrong:\n"
                                << all;
}

// The ready line shows `cpus` CPUs online and `ram_mib` MiB of RAM in the
// firmware memory map (all of the guest's RAM but the EBDA and BIOS area).
void expect_ready(const VmmRun& run, uint64_t cpus, uint64_t ram_mib) {
  auto ready = run.line("keel-guest: ready ");
  ASSERT_TRUE(ready) << describe(run);
  EXPECT_EQ(field_u64(*ready, "cpus"), cpus) << *ready;
  EXPECT_EQ(field_u64(*ready, "ram_mib"), ram_mib) << *ready;
}

TEST(KernelLog, FlagsWhatKeelCausesAndSkipsTheBoxArtefact) {
  std::vector<std::string> log = {
      "[    0.1] ACPI: RSDP 0x00000000000E0000 000024 (v02 KEEL  )",
      "[    0.1] ACPI: Early table checksum verification disabled",
      "[    2.9] tsc: Marking TSC unstable due to TSCs unsynchronized",
      "[    3.2] XSAVE consistency problem: size 2696 != kernel_size 576",
      "[    3.2] WARNING: CPU: 0 PID: 0 at arch/x86/kernel/fpu/xstate.c:606",
      "[    3.3] Call Trace:",
      "[    3.4] ---[ end trace 0000000000000000 ]---",
      "[    4.0] ACPI BIOS Error (bug): Could not resolve symbol [\\_SB.FOO]",
      "[    4.1] tsc: Marking TSC unstable due to clocksource watchdog",
      "[    4.2] WARNING: CPU: 1 PID: 1 at kernel/foo.c:1",
  };
  auto problems = kernel_log_problems(log);
  ASSERT_EQ(problems.size(), 3u) << problems.front();
  EXPECT_NE(problems[0].find("ACPI BIOS Error"), std::string::npos);
  EXPECT_NE(problems[1].find("clocksource watchdog"), std::string::npos);
  EXPECT_NE(problems[2].find("kernel/foo.c"), std::string::npos);
}

TEST(LinuxBoot, TwoCpusFourGiBSeesEverythingAndPowersOff) {
  auto run = boot_linux("generic", "2", "4G", "keel.job=ready");
  ASSERT_EQ(run.exit_code, 0) << describe(run);
  expect_ready(run, 2, 4095);
  bool smp = false;
  for (const auto& l : run.lines)
    smp = smp || l.find("smp: Brought up 1 node, 2 CPUs") != std::string::npos;
  EXPECT_TRUE(smp) << describe(run);
  expect_clean_log(run);
}

TEST(LinuxBoot, OneCpu256MiBRunsTheHeartbeat) {
  auto run =
      boot_linux("generic", "1", "256M", "keel.job=heartbeat keel.interval_ms=100 keel.count=5");
  ASSERT_EQ(run.exit_code, 0) << describe(run);
  expect_ready(run, 1, 255);
  auto beats = run.all_lines("keel-guest: beat ");
  ASSERT_EQ(beats.size(), 5u) << describe(run);
  for (size_t i = 1; i < beats.size(); ++i) {
    EXPECT_EQ(field_u64(beats[i], "seq"), field_u64(beats[i - 1], "seq") + 1);
    EXPECT_GT(field_u64(beats[i], "t_us"), field_u64(beats[i - 1], "t_us"));
  }
  expect_clean_log(run);
}

TEST(LinuxBoot, DirtierVerifiesItsPattern) {
  auto run = boot_linux("generic", "2", "1G",
                        "keel.job=dirtier keel.mib=256 keel.rate_mbps=0 keel.passes=2");
  ASSERT_EQ(run.exit_code, 0) << describe(run);
  auto ok = run.line("keel-guest: dirtier OK");
  ASSERT_TRUE(ok) << describe(run);
  EXPECT_EQ(field_u64(*ok, "pages"), 256u * 256u);
}

TEST(LinuxBoot, GuestRebootEndsWithTheRebootCode) {
  auto run = boot_linux("generic", "1", "256M", "keel.job=reboot");
  EXPECT_EQ(run.exit_code, 10) << describe(run);
  EXPECT_NE(run.err.find("guest requested a reboot"), std::string::npos) << describe(run);
}

TEST(LinuxBoot, CloudFlavourBoots) {
  auto run = boot_linux("cloud", "2", "1G", "keel.job=ready");
  ASSERT_EQ(run.exit_code, 0) << describe(run);
  expect_ready(run, 2, 1023);
  expect_clean_log(run);
}

TEST(LinuxBoot, ElfVmlinuxBootsThroughPvh) {
  auto run = boot_with_box_retry(
      {"--kernel", kImages + "/vmlinux-generic", "--initrd", kImages + "/initramfs-generic.cpio.gz",
       "--cpus", "2", "--memory", "1G", "--cmdline",
       "console=ttyS0 panic=-1 acpi_force_table_verification keel.job=ready"});
  ASSERT_EQ(run.exit_code, 0) << describe(run);
  expect_ready(run, 2, 1023);
  expect_clean_log(run);
}

TEST(LinuxBoot, TestGuestPlatformChecksAgreeWithLinux) {
  auto linux_run = boot_linux("generic", "2", "4G", "keel.job=ready");
  ASSERT_EQ(linux_run.exit_code, 0) << describe(linux_run);
  auto testos_run = run_vmm(
      {"--kernel", testos_bzimage(), "--cpus", "2", "--memory", "4G", "--cmdline", "job=platform"});
  ASSERT_EQ(testos_run.exit_code, 0) << describe(testos_run);
  auto linux_ready = linux_run.line("keel-guest: ready ");
  auto testos_ready = testos_run.line("testos: ready ");
  ASSERT_TRUE(linux_ready && testos_ready);
  EXPECT_EQ(field_u64(*linux_ready, "cpus"), field_u64(*testos_ready, "cpus"));
  EXPECT_EQ(field_u64(*linux_ready, "ram_mib"), field_u64(*testos_ready, "mem_mib"));
}

}  // namespace
}  // namespace keel::testing
