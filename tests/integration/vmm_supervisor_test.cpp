// keel-agent's supervisor of keel-vmm processes (cluster/vmm_supervisor.h)
// on the test guest: a VMM started detached outlives the supervisor (an
// agent's restart), a new one adopts it and hears of its end with its last
// words; a VMM killed outright is heard of too; a second start of a running
// VM and a VMM that fails at start are refused with the reason.
#include "cluster/vmm_supervisor.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>

#include <chrono>
#include <condition_variable>
#include <fstream>
#include <mutex>
#include <thread>

#include "common/error.h"
#include "storage/vm_runtime.h"
#include "tests/support/scratch_dir.h"
#include "tests/support/vmm_run.h"

namespace keel::testing {
namespace {

using cluster::VmmSupervisor;
using std::chrono::seconds;

struct Ends {
  std::mutex mutex;
  std::condition_variable changed;
  std::vector<VmmSupervisor::Ended> all;

  std::function<void(const VmmSupervisor::Ended&)> callback() {
    return [this](const VmmSupervisor::Ended& e) {
      std::lock_guard lock(mutex);
      all.push_back(e);
      changed.notify_all();
    };
  }
  std::optional<VmmSupervisor::Ended> wait_for(const std::string& vm, seconds limit) {
    std::unique_lock lock(mutex);
    std::optional<VmmSupervisor::Ended> found;
    changed.wait_for(lock, limit, [&] {
      for (const auto& e : all) {
        if (e.vm == vm) found = e;
      }
      return found.has_value();
    });
    return found;
  }
};

std::string read_all(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

bool wait_for_text(const std::string& path, const std::string& text, seconds limit) {
  auto until = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < until) {
    if (read_all(path).find(text) != std::string::npos) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

class VmmSupervisorTest : public ::testing::Test {
 protected:
  void SetUp() override { ::setenv("KEEL_RUN_DIR", (dir_ / "run").c_str(), 1); }
  void TearDown() override {
    for (const auto& vm : {"a", "b", "c"}) {
      if (auto pid = storage::running_vmm(vm)) ::kill(*pid, SIGKILL);
    }
  }
  cluster::VmmLaunch launch(const std::string& vm, const std::string& kernel = testos_bzimage()) {
    return {vm,
            {KEEL_VMM_PATH, "--kernel", kernel, "--memory", "64M", "--cmdline",
             "job=heartbeat interval_ms=50", "--serial", "file=" + console(vm), "--api-socket",
             storage::vm_api_socket(vm).string()},
            dir_ / (vm + ".log"),
            {}};
  }
  std::string console(const std::string& vm) const { return dir_ / (vm + ".console"); }

  ScratchDir dir_{"keel-supervisor"};
};

TEST_F(VmmSupervisorTest, VmmOutlivesItsSupervisorAndIsAdoptedThenHeardOfAtItsEnd) {
  Ends ends;
  pid_t pid = 0;
  {
    VmmSupervisor first(ends.callback());
    pid = first.start(launch("a"));
    EXPECT_EQ(first.running().at("a"), pid);
    ASSERT_TRUE(wait_for_text(console("a"), "testos: beat seq=3 ", seconds(120)));
  }
  // The agent "restarted": the VMM runs on, nobody heard of an end.
  EXPECT_EQ(storage::running_vmm("a"), pid);
  EXPECT_TRUE(ends.all.empty());
  VmmSupervisor second(ends.callback());
  EXPECT_EQ(second.adopt_running(), std::vector<std::string>{"a"});
  EXPECT_EQ(second.adopt_running(), std::vector<std::string>{}) << "adopted twice";
  EXPECT_EQ(second.running().at("a"), pid);
  // A second start of a running VM is refused.
  try {
    second.start(launch("a"));
    ADD_FAILURE() << "a second keel-vmm started for a running VM";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("is running already"), std::string::npos) << e.what();
  }
  ASSERT_EQ(::kill(pid, SIGTERM), 0);
  auto ended = ends.wait_for("a", seconds(60));
  ASSERT_TRUE(ended);
  EXPECT_EQ(ended->pid, pid);
  EXPECT_NE(ended->last_words.find("stopped by signal: Terminated (exit code 143)"),
            std::string::npos)
      << ended->last_words;
  EXPECT_TRUE(second.running().empty());
}

TEST_F(VmmSupervisorTest, KilledVmmIsHeardOfAndAFailedStartSaysWhy) {
  Ends ends;
  VmmSupervisor supervisor(ends.callback());
  const pid_t pid = supervisor.start(launch("b"));
  ASSERT_TRUE(wait_for_text(console("b"), "testos: beat seq=2 ", seconds(120)));
  ::kill(pid, SIGKILL);
  auto ended = ends.wait_for("b", seconds(30));
  ASSERT_TRUE(ended);
  EXPECT_EQ(ended->pid, pid);
  EXPECT_FALSE(storage::running_vmm("b"));

  try {
    supervisor.start(launch("c", dir_ / "no-such-kernel"));
    ADD_FAILURE() << "a VMM without a kernel started";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("ended at start"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("no-such-kernel"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(supervisor.running().empty());
}

}  // namespace
}  // namespace keel::testing
