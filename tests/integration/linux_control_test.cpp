// keelctl shutdown against Debian's stock kernel (label linux): the ACPI
// power button reaches the kernel through the SCI, the button and evdev
// modules turn it into a key press, busybox acpid runs the image's handler,
// and the guest powers off cleanly (its rw root file system left clean)
// well within the timeout.
#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <memory>

#include "proto/control.pb.h"
#include "tests/support/keelctl_result.h"
#include "tests/support/kernel_log.h"
#include "tests/support/live_vmm.h"
#include "tests/support/scratch_dir.h"
#include "tests/support/vmm_run.h"

namespace keel::testing {
namespace {

const std::string kImages = KEEL_LINUX_IMAGE_DIR;
using std::chrono::seconds;

TEST(LinuxControl, ShutdownPowersTheStockKernelOffCleanly) {
  ScratchDir scratch("keel-linux-control");
  const std::string root = scratch.copy_of(kImages + "/rootfs.ext4", "root.ext4");
  const std::vector<std::string> args{
      "--kernel",
      kImages + "/vmlinuz-cloud",
      "--initrd",
      kImages + "/initramfs-cloud.cpio.gz",
      "--memory",
      "512M",
      "--disk",
      "path=" + root,
      "--cmdline",
      "console=ttyS0 panic=-1 root=/dev/vda rw keel.job=heartbeat keel.interval_ms=200"};
  auto booted = std::make_unique<LiveVmm>(args);
  auto handler = wait_boot_line(*booted, "keel-guest: power button handler ", seconds(600));
  if (!handler && box_boot_glitch(*booted, "linux_control_test")) {
    booted = std::make_unique<LiveVmm>(args);
    handler = wait_boot_line(*booted, "keel-guest: power button handler ", seconds(600));
  }
  LiveVmm& vmm = *booted;
  ASSERT_TRUE(handler) << vmm.describe();
  ASSERT_EQ(handler->text.rfind("keel-guest: power button handler acpid input=/dev/input/event", 0),
            0u)
      << vmm.describe();
  // The job is running (the button ends it, not the job's own end).
  auto beat = vmm.wait_line("keel-guest: beat seq=2 ", handler->index, seconds(300));
  ASSERT_TRUE(beat) << vmm.describe();

  auto result = vmm.keelctl({"--json", "shutdown", "--timeout", "120"}, seconds(200));
  ASSERT_EQ(result.exit_code, 0) << show(result) << vmm.describe();
  keel::api::v1::Response response;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(result.out, &response).ok())
      << result.out;
  EXPECT_TRUE(response.ok()) << result.out;
  EXPECT_FALSE(response.shutdown().forced()) << result.out;
  EXPECT_LT(response.shutdown().duration_ms(), 120000u) << result.out;
  EXPECT_EQ(vmm.wait_exit(seconds(120)), 0) << vmm.describe();

  auto pressed = vmm.wait_line("keel-guest: power button", beat->index, seconds(1));
  ASSERT_TRUE(pressed && pressed->text == "keel-guest: power button") << vmm.describe();
  auto off = vmm.wait_line("keel-guest: poweroff", pressed->index, seconds(1));
  EXPECT_TRUE(off) << vmm.describe();
  EXPECT_TRUE(vmm.lines("keel-guest: error").empty()) << vmm.describe();

  // The root was remounted read-only before the poweroff: nothing to repair.
  auto fsck = run_command({"e2fsck", "-f", "-n", root}, seconds(120));
  EXPECT_EQ(fsck.exit_code, 0) << fsck.out << fsck.err;

  std::vector<std::string> console;
  for (const auto& l : vmm.lines("")) console.push_back(l.text);
  auto problems = kernel_log_problems(console);
  std::string all;
  for (const auto& p : problems) all += p + "\n";
  EXPECT_TRUE(problems.empty()) << "kernel log problems:\n" << all;
}

}  // namespace
}  // namespace keel::testing
