// A hostile guest cannot make keel-vmm deaf (issue 12, item 3). The test
// guest's resetstorm job fills the virtio-blk queue with the largest reads
// the device allows (every segment over one buffer) and resets the device at
// once, round after round. The reset used to wait up to 10 s on the vCPU
// thread for those reads while holding the lock the event loop needs for
// every completion; meanwhile the control socket, signals, the network and
// the other disks went unanswered. Now the control socket must answer every
// status request within kStatusBound while the storm goes on.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>

#include "control/control_client.h"
#include "proto/control.pb.h"
#include "tests/support/live_vmm.h"
#include "tests/support/scratch_dir.h"
#include "tests/support/vmm_run.h"

namespace keel::testing {
namespace {

namespace pb = ::keel::api::v1;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using std::chrono::seconds;

// The longest a status request may take while the guest storms: far above
// an answer's cost on any host here (the KVM test host included), far below
// the seconds a reset waiting for the kernel took.
constexpr auto kStatusBound = milliseconds(1000);

TEST(HostileGuest, ADiskResetInALoopUnderLargeReadsLeavesTheControlSocketAnswering) {
  ScratchDir scratch("keel-resetstorm");
  // Sparse: reading it costs the kernel copying zeros, nothing on the disk.
  const std::string disk = scratch.sparse_file("disk.img", uint64_t{1} << 30);
  LiveVmm vmm({"--kernel", testos_bzimage(), "--memory", "128M", "--disk", "path=" + disk,
               "--cmdline", "job=resetstorm seconds=8"});
  ASSERT_TRUE(vmm.wait_line("testos: resetstorm round=", 0, seconds(120))) << vmm.describe();

  ControlClient client(vmm.socket_path(), seconds(10));
  pb::Request status;
  status.mutable_status();
  Clock::duration longest{};
  int answers = 0;
  while (!vmm.wait_line("testos: resetstorm OK ", 0, milliseconds(0))) {
    const auto asked = Clock::now();
    pb::Response response;
    try {
      response = client.call(status, seconds(60));
    } catch (const std::exception& e) {
      // The guest may finish and power off between the check above and the
      // request: a VMM that ended with the storm done owes no answer.
      if (vmm.wait_line("testos: resetstorm OK ", 0, seconds(10)) &&
          vmm.wait_exit(seconds(10)) == 0)
        break;
      FAIL() << "a status request got no answer in "
             << std::chrono::duration_cast<milliseconds>(Clock::now() - asked).count()
             << " ms, after " << answers << " answers: " << e.what();
    }
    const auto took = Clock::now() - asked;
    ASSERT_TRUE(response.ok()) << response.error().message();
    longest = std::max(longest, took);
    ++answers;
    if (answers > 100000) break;  // the guest never finished: reported below
  }
  const auto done = vmm.wait_line("testos: resetstorm OK ", 0, seconds(60));
  ASSERT_TRUE(done) << vmm.describe();
  const auto longest_ms = std::chrono::duration_cast<milliseconds>(longest).count();
  std::printf("%d status answers during the storm, the longest %lld ms; guest: %s\n", answers,
              static_cast<long long>(longest_ms), done->text.c_str());
  EXPECT_GT(answers, 0);
  EXPECT_LE(longest, kStatusBound) << "the control socket waited for the guest's disk reset";
  // The guest got its resets through and powered off cleanly.
  EXPECT_NE(done->text.find(" rounds="), std::string::npos);
  EXPECT_EQ(vmm.wait_exit(seconds(60)), 0) << vmm.describe();
}

}  // namespace
}  // namespace keel::testing
