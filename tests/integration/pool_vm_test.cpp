// VMs of a pool started and stopped by keelctl (vm start runs keel-vmm in
// the background from the stored configuration): the test guest writes its
// disk, which is the VM's snapshot of the image and not the image; a
// running VM answers on its socket, is listed as running, cannot be deleted
// or rolled back, and stops on the power button. Btrfs on a loop device;
// KVM directly or in the box (tools/kvm-run --need kvm).
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/child_process.h"
#include "tests/support/disk_pattern.h"
#include "tests/support/live_vmm.h"
#include "tests/support/net_namespace.h"
#include "tests/support/scratch_btrfs.h"
#include "tests/support/scratch_dir.h"
#include "tests/support/vmm_run.h"

namespace keel::testing {
namespace {

namespace fs = std::filesystem;

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

class PoolVms : public ::testing::Test {
 protected:
  PoolVms() {
    env_ = {"KEEL_POOL=" + pool_, "KEEL_RUN_DIR=" + run_.path(),
            std::string("KEEL_VMM=") + vmm_path()};
    auto init = keelctl({"pool", "init", pool_});
    EXPECT_EQ(init.exit_code, 0) << init.err;
  }
  // Whatever keel-vmm a test started and left running ends with it.
  ~PoolVms() override {
    for (const auto& e : fs::directory_iterator(run_.path() + "/vms", ignored_)) {
      const std::string pid = read_file(e.path() / "keel-vmm.pid");
      if (!pid.empty()) ::kill(std::stoi(pid), SIGKILL);
    }
  }

  CommandResult keelctl(const std::vector<std::string>& args) {
    std::vector<std::string> argv{keelctl_path()};
    argv.insert(argv.end(), args.begin(), args.end());
    return run_command(argv, std::chrono::seconds(120), env_);
  }

  // The test guest as an image with a 64 MiB empty disk and `cmdline`.
  void import(const std::string& name, const std::string& cmdline) {
    const std::string disk = files_.sparse_file(name + ".raw", 64 << 20);
    auto r = keelctl({"image", "import", name, "--disk", disk, "--kernel", testos_bzimage(),
                      "--cmdline", cmdline});
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }

  bool running(const std::string& vm) {
    auto show = keelctl({"vm", "show", vm});
    return show.out.find("state     running") != std::string::npos;
  }

  // Until the VM's keel-vmm has ended (the guest powered off).
  bool wait_stopped(const std::string& vm, std::chrono::seconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      if (!running(vm)) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }

  fs::path vm_dir(const std::string& vm) const { return fs::path(pool_) / "vms" / vm; }

  ScratchBtrfs volume_{uint64_t{512} << 20};
  const std::string pool_ = volume_.mount_point() + "/pool";
  ScratchDir run_{"keel-pool-run"};
  ScratchDir files_{"keel-pool-files"};
  std::vector<std::string> env_;
  std::error_code ignored_;
};

TEST_F(PoolVms, TheGuestWritesItsOwnSnapshotOfTheImagesDisk) {
  import("writer", "job=disk mode=write mib=16 seed=7");
  auto create = keelctl({"vm", "create", "w1", "--image", "writer", "--memory", "64M"});
  ASSERT_EQ(create.exit_code, 0) << create.err;
  auto start = keelctl({"vm", "start", "w1"});
  ASSERT_EQ(start.exit_code, 0) << start.err;
  EXPECT_NE(start.out.find("started w1"), std::string::npos) << start.out;
  ASSERT_TRUE(wait_stopped("w1", std::chrono::seconds(300)))
      << read_file(vm_dir("w1") / "console.log");
  const std::string console = read_file(vm_dir("w1") / "console.log");
  EXPECT_NE(console.find("testos: disk OK mode=write"), std::string::npos) << console;
  // vda is the VM's disk, vdb the seed disk, read-only.
  EXPECT_NE(console.find("capacity_sectors=131072"), std::string::npos) << console;
  EXPECT_EQ(first_bad_sector((vm_dir("w1") / "current" / "disk.raw").string(), 16 * 2048, 7), -1);
  // The image's disk is as imported: zeros.
  const std::string image_disk = pool_ + "/images/writer/disk.raw";
  EXPECT_EQ(first_bad_sector(image_disk, 1, 7), 0);
  std::ifstream in(image_disk, std::ios::binary);
  std::string head(4096, 'x');
  in.read(head.data(), 4096);
  EXPECT_EQ(head, std::string(4096, '\0'));
  auto stop = keelctl({"vm", "stop", "w1"});
  EXPECT_EQ(stop.exit_code, 1);
  EXPECT_NE(stop.err.find("VM w1 is not running"), std::string::npos) << stop.err;
}

TEST_F(PoolVms, ARunningVmIsListedKeptAndStoppedByThePowerButton) {
  import("beat", "job=heartbeat interval_ms=200 count=0");
  ASSERT_EQ(keelctl({"vm", "create", "b1", "--image", "beat", "--memory", "64M"}).exit_code, 0);
  ASSERT_EQ(keelctl({"vm", "snapshot", "b1", "fresh"}).exit_code, 0);
  auto start = keelctl({"vm", "start", "b1"});
  ASSERT_EQ(start.exit_code, 0) << start.err;
  EXPECT_TRUE(running("b1"));
  auto again = keelctl({"vm", "start", "b1"});
  EXPECT_EQ(again.exit_code, 1);
  EXPECT_NE(again.err.find("is running already"), std::string::npos) << again.err;
  // Its socket answers keelctl like any keel-vmm's.
  auto status = keelctl({"--socket", run_.path() + "/vms/b1/api.sock", "status"});
  EXPECT_EQ(status.exit_code, 0) << status.err;
  EXPECT_NE(status.out.find("running"), std::string::npos) << status.out;
  // The guest runs: its beats reach the console file.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (read_file(vm_dir("b1") / "console.log").find("testos: beat ") == std::string::npos &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_NE(read_file(vm_dir("b1") / "console.log").find("testos: beat "), std::string::npos)
      << read_file(vm_dir("b1") / "console.log") << read_file(vm_dir("b1") / "keel-vmm.log");
  auto list = keelctl({"vm", "list"});
  EXPECT_NE(list.out.find("b1  running"), std::string::npos) << list.out;
  for (auto args : {std::vector<std::string>{"vm", "delete", "b1"},
                    std::vector<std::string>{"vm", "rollback", "b1", "fresh"}}) {
    auto refused = keelctl(args);
    EXPECT_EQ(refused.exit_code, 1) << args[1];
    EXPECT_NE(refused.err.find("VM b1 is running"), std::string::npos) << refused.err;
  }
  auto stop = keelctl({"vm", "stop", "b1", "--timeout", "60"});
  EXPECT_EQ(stop.exit_code, 0) << stop.err;
  EXPECT_FALSE(running("b1"));
  EXPECT_NE(read_file(vm_dir("b1") / "keel-vmm.log").find("powered off"), std::string::npos)
      << read_file(vm_dir("b1") / "keel-vmm.log");
  EXPECT_EQ(keelctl({"vm", "rollback", "b1", "fresh"}).exit_code, 0);
  auto del = keelctl({"vm", "delete", "b1"});
  EXPECT_EQ(del.exit_code, 0) << del.err;
  EXPECT_FALSE(fs::exists(vm_dir("b1")));
}

// The first heartbeat sequence number on the VM's console at or after
// `min_seq`, waiting for it; 0 when none came.
uint64_t wait_beat(const fs::path& console, uint64_t min_seq) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (std::chrono::steady_clock::now() < deadline) {
    std::vector<std::string> lines;
    std::istringstream in(read_file(console));
    for (std::string l; std::getline(in, l);) lines.push_back(l);
    for (const auto& beat : beats_in(lines)) {
      if (beat.seq >= min_seq) return beat.seq;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return 0;
}

TEST_F(PoolVms, AMemorySnapshotRolledBackResumesTheGuestWhereItWas) {
  import("beat", "job=heartbeat interval_ms=100 count=0");
  ASSERT_EQ(keelctl({"vm", "create", "m1", "--image", "beat", "--memory", "64M"}).exit_code, 0);
  auto refused = keelctl({"vm", "snapshot", "m1", "s1", "--memory"});
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE(refused.err.find("is not running"), std::string::npos) << refused.err;
  ASSERT_EQ(keelctl({"vm", "start", "m1"}).exit_code, 0);
  const fs::path console = vm_dir("m1") / "console.log";
  const uint64_t before = wait_beat(console, 5);
  ASSERT_GE(before, 5u) << read_file(console);
  auto snap = keelctl({"vm", "snapshot", "m1", "s1", "--memory"});
  ASSERT_EQ(snap.exit_code, 0) << snap.err;
  // The guest runs on after it, and the running VM keeps no copy of the state.
  const uint64_t later = wait_beat(console, before + 30);
  EXPECT_GE(later, before + 30) << read_file(console);
  EXPECT_TRUE(fs::is_empty(vm_dir("m1") / "current" / ".memory"));
  EXPECT_TRUE(fs::exists(vm_dir("m1") / "snapshots" / "s1" / ".memory" / "s1" / "state"));
  ASSERT_EQ(keelctl({"vm", "stop", "m1", "--timeout", "60"}).exit_code, 0);

  ASSERT_EQ(keelctl({"vm", "rollback", "m1", "s1"}).exit_code, 0);
  auto resumed = keelctl({"vm", "start", "m1"});
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  EXPECT_NE(resumed.out.find("resumed m1 from snapshot s1"), std::string::npos) << resumed.out;
  // The console carries on from the snapshot's beat, not from a boot.
  const uint64_t first = wait_beat(console, 1);
  EXPECT_GT(first, before) << read_file(console);
  EXPECT_LT(first, later) << read_file(console);
  EXPECT_EQ(read_file(console).find("testos: boot"), std::string::npos) << read_file(console);
  ASSERT_EQ(keelctl({"vm", "stop", "m1", "--force"}).exit_code, 0);
  // The state was used once: the next start boots.
  ASSERT_EQ(keelctl({"vm", "start", "m1"}).exit_code, 0);
  EXPECT_GE(wait_beat(console, 1), 1u);
  EXPECT_NE(read_file(console).find("testos: boot"), std::string::npos) << read_file(console);
  ASSERT_EQ(keelctl({"vm", "stop", "m1", "--force"}).exit_code, 0);
}

// --- a disk on another host: NBD across network namespaces ---------------

// keel-vmm in a "compute" namespace (this thread's, so its children's),
// `keelctl nbd serve` in a "storage" one, joined by a veth pair the test
// can take down: the cut link of two hosts. Removed on destruction.
class NbdHosts {
 public:
  NbdHosts()
      : compute_("nbdtap" + std::to_string(::getpid() % 10000), ""),
        storage_("keel-nbd-s" + std::to_string(::getpid())) {
    run_checked({"ip", "netns", "add", storage_});
    run_checked(
        {"ip", "link", "add", "nbdc", "type", "veth", "peer", "name", "nbds", "netns", storage_});
    run_checked({"ip", "addr", "add", "10.231.0.2/24", "dev", "nbdc"});
    run_checked({"ip", "link", "set", "nbdc", "up"});
    run_checked({"ip", "-n", storage_, "addr", "add", "10.231.0.1/24", "dev", "nbds"});
    run_checked({"ip", "-n", storage_, "link", "set", "nbds", "up"});
    run_checked({"ip", "-n", storage_, "link", "set", "lo", "up"});
  }
  ~NbdHosts() {
    server_.reset();
    run_command({"ip", "netns", "del", storage_}, std::chrono::seconds(30));
  }
  // Serves the pool's VM disks to the compute side; returns once it listens.
  void serve(const std::string& pool, const std::string& vm) {
    server_.emplace(ChildProcess::spawn(
        {"ip", "netns", "exec", storage_, keelctl_path(), "nbd", "serve", "--pool", pool,
         "--listen", "10.231.0.1:10809", "--allow", vm + "=10.231.0.2"},
        {.capture_stdout = true, .capture_stderr = false, .extra_env = {}}));
    std::string out;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (out.find("serving NBD on") == std::string::npos) {
      ASSERT_LT(std::chrono::steady_clock::now(), deadline) << out;
      pollfd p{server_->stdout_fd(), POLLIN, 0};
      if (::poll(&p, 1, 500) <= 0) continue;
      char buffer[256];
      const ssize_t n = ::read(server_->stdout_fd(), buffer, sizeof buffer);
      ASSERT_GT(n, 0) << "keelctl nbd serve ended: " << out;
      out.append(buffer, static_cast<size_t>(n));
    }
  }
  void link(bool up) {
    run_checked({"ip", "-n", storage_, "link", "set", "nbds", up ? "up" : "down"});
  }

 private:
  NetNamespace compute_;
  std::string storage_;
  std::optional<ChildProcess> server_;
};

// keel-vmm's stderr holds `text` (waiting for it up to `timeout`).
bool wait_error(LiveVmm& vmm, const std::string& text, std::chrono::seconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (vmm.errors().find(text) == std::string::npos) {
    if (std::chrono::steady_clock::now() > deadline || vmm.output_closed()) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return true;
}

TEST_F(PoolVms, ADiskServedFromAnotherNamespaceOverNbdSurvivesACut) {
  import("remote", "job=heartbeat");
  ASSERT_EQ(keelctl({"vm", "create", "r1", "--image", "remote"}).exit_code, 0);
  NbdHosts hosts;
  hosts.serve(pool_, "r1");
  const std::string disk = "nbd=tcp:10.231.0.1:10809/r1";
  auto guest = [&](const std::string& job, const std::string& disk_spec) {
    return std::vector<std::string>{"--kernel", testos_bzimage(), "--memory", "64M", "--cmdline",
                                    job,        "--disk",         disk_spec};
  };

  // Written and flushed by the guest: the data is on the storage side.
  VmmRun write =
      run_vmm(guest("job=disk mode=write mib=16 seed=7", disk), std::chrono::seconds(300));
  ASSERT_TRUE(write.line("testos: disk OK mode=write")) << describe(write);
  EXPECT_NE(write.line("testos: disk OK mode=write")->find("flush=1"), std::string::npos);
  EXPECT_EQ(first_bad_sector((vm_dir("r1") / "current" / "disk.raw").string(), 16 * 2048, 7), -1);

  // The link cut mid-I/O, until keel-vmm has noticed, then restored: the
  // guest's writes wait, are sent again, and every one reads back.
  {
    LiveVmm vmm(guest("job=disk mode=random mib=16 seed=3 ops=1500 rate_mbps=1", disk));
    ASSERT_TRUE(
        vmm.wait_line("testos: disk progress mode=random ops=100", 0, std::chrono::seconds(300)))
        << vmm.describe();
    hosts.link(false);
    EXPECT_TRUE(wait_error(vmm, "connection lost", std::chrono::seconds(60))) << vmm.describe();
    hosts.link(true);
    EXPECT_TRUE(wait_error(vmm, "reconnected", std::chrono::seconds(60))) << vmm.describe();
    ASSERT_TRUE(vmm.wait_line("testos: disk OK mode=random", 0, std::chrono::seconds(600)))
        << vmm.describe();
    EXPECT_EQ(vmm.wait_exit(std::chrono::seconds(60)), 0) << vmm.describe();
  }

  // Kept cut: after the disk's timeout the guest gets I/O errors, and
  // keel-vmm goes on (the guest powers off on its error).
  {
    LiveVmm vmm(
        guest("job=disk mode=random mib=16 seed=4 ops=1500 rate_mbps=1", disk + ",timeout=3"));
    ASSERT_TRUE(
        vmm.wait_line("testos: disk progress mode=random ops=50", 0, std::chrono::seconds(300)))
        << vmm.describe();
    hosts.link(false);
    auto failed = vmm.wait_line("testos: disk FAIL mode=random io=status status=1", 0,
                                std::chrono::seconds(120));
    EXPECT_TRUE(failed) << vmm.describe();
    EXPECT_NE(vmm.errors().find("fail with I/O errors"), std::string::npos) << vmm.describe();
    EXPECT_EQ(vmm.wait_exit(std::chrono::seconds(60)), 0) << vmm.describe();
    hosts.link(true);
  }
}

}  // namespace
}  // namespace keel::testing
