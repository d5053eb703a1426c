// The Debian system image (guest-images/debian/build-image) imported into a
// pool and made a VM by keelctl with a hostname, a static address, an SSH
// key and a larger disk: it boots on keel-vmm from virtio-blk, cloud-init
// configures it from the seed disk Keel wrote, and from another network
// namespace the test logs in over SSH with the key and finds the hostname,
// the address and the grown root file system. Label "linux" (a stock
// kernel: the box on PVM machines); slow there, so one boot does it all.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

#include "common/child_process.h"
#include "tests/support/live_vmm.h"
#include "tests/support/net_namespace.h"
#include "tests/support/scratch_btrfs.h"
#include "tests/support/scratch_dir.h"
#include "tests/support/vmm_run.h"

namespace keel::testing {
namespace {

namespace fs = std::filesystem;
const std::string kImage = KEEL_DEBIAN_IMAGE_DIR;

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::string last_lines(const std::string& text, size_t n) {
  size_t at = text.size();
  for (size_t i = 0; i <= n && at != std::string::npos && at > 0; ++i)
    at = text.rfind('\n', at - 1);
  return at == std::string::npos ? text : text.substr(at + 1);
}

TEST(DebianImage, AVmFromItConfiguresItselfFromTheSeedDisk) {
  ASSERT_TRUE(fs::exists(kImage + "/disk.raw"))
      << "no Debian system image in " << kImage << ": run guest-images/debian/build-image";
  ScratchBtrfs volume(uint64_t{3} << 30);
  ScratchDir files("keel-debian-test");
  ScratchDir run_dir("keel-debian-run");
  const std::string pool = volume.mount_point() + "/pool";
  const std::vector<std::string> env{"KEEL_POOL=" + pool, "KEEL_RUN_DIR=" + run_dir.path(),
                                     std::string("KEEL_VMM=") + vmm_path()};
  auto keelctl = [&env](const std::vector<std::string>& args, int timeout_s = 600) {
    std::vector<std::string> argv{keelctl_path()};
    argv.insert(argv.end(), args.begin(), args.end());
    return run_command(argv, std::chrono::seconds(timeout_s), env);
  };
  std::string pid_to_kill;
  struct KillAtEnd {
    const ScratchDir& run_dir;
    ~KillAtEnd() {
      const std::string pid = read_file(fs::path(run_dir.path()) / "vms/deb1/keel-vmm.pid");
      if (!pid.empty()) ::kill(std::stoi(pid), SIGKILL);
    }
  } kill_at_end{run_dir};

  ASSERT_EQ(keelctl({"pool", "init", pool}).exit_code, 0);
  std::string cmdline = read_file(kImage + "/cmdline");
  while (!cmdline.empty() && cmdline.back() == '\n') cmdline.pop_back();
  auto import =
      keelctl({"image", "import", "debian-12", "--disk", kImage + "/disk.raw", "--kernel",
               kImage + "/vmlinuz", "--initrd", kImage + "/initrd.img", "--cmdline", cmdline});
  ASSERT_EQ(import.exit_code, 0) << import.err;

  const std::string key = files / "id_ed25519";
  run_checked({"ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "keel-test", "-f", key});
  NetNamespace ns("ktap0", "10.0.7.1/24");
  auto create = keelctl({"vm", "create", "deb1", "--image", "debian-12", "--memory", "1G",
                         "--disk-size", "3G", "--hostname", "deb-one", "--ip", "10.0.7.2/24",
                         "--gateway", "10.0.7.1", "--ssh-key", key + ".pub", "--tap", "ktap0"});
  ASSERT_EQ(create.exit_code, 0) << create.err;
  auto start = keelctl({"vm", "start", "deb1"});
  ASSERT_EQ(start.exit_code, 0) << start.err;

  // The image's unit prints its line once cloud-init has finished: about
  // 2 min in the KVM test host. The wait ends well inside the box's own
  // 15 min, so that a guest that stalls is shown (its console below), not
  // killed with the box unseen.
  const fs::path console = fs::path(pool) / "vms/deb1/console.log";
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(10);
  std::string ready;
  while (ready.empty() && std::chrono::steady_clock::now() < deadline) {
    const std::string text = read_file(console);
    if (auto at = text.find("keel-guest: ready "); at != std::string::npos) {
      const auto end = text.find('\n', at);
      if (end != std::string::npos) ready = text.substr(at, end - at);
    }
    if (ready.empty()) std::this_thread::sleep_for(std::chrono::seconds(1));
    if (keelctl({"vm", "show", "deb1"}).out.find("state     stopped") != std::string::npos) break;
  }
  ASSERT_FALSE(ready.empty()) << last_lines(read_file(console), 60)
                              << read_file(fs::path(pool) / "vms/deb1/keel-vmm.log");
  if (!ready.empty() && ready.back() == '\r') ready.pop_back();
  auto f = fields(ready);
  EXPECT_EQ(f["hostname"], "deb-one") << ready;
  EXPECT_NE(f["addresses"].find("eth0=10.0.7.2/24"), std::string::npos) << ready;
  EXPECT_EQ(f["ssh_keys"], "1") << ready;
  EXPECT_EQ(f["cloud_init"], "done") << ready;

  // From the host's side of the tap: in with the key, as Debian's default
  // user, and the guest says who and where it is.
  auto ssh =
      run_command({"ssh", "-i", key, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o",
                   "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=30", "debian@10.0.7.2",
                   "hostname; ip -4 -o addr show dev eth0; df -B1 --output=size /"},
                  std::chrono::seconds(120));
  ASSERT_EQ(ssh.exit_code, 0) << ssh.out << ssh.err;
  EXPECT_EQ(ssh.out.substr(0, ssh.out.find('\n')), "deb-one") << ssh.out;
  EXPECT_NE(ssh.out.find("inet 10.0.7.2/24"), std::string::npos) << ssh.out;
  // cloud-init grew the root file system into the 3 GiB disk.
  const auto size_at = ssh.out.rfind('\n', ssh.out.size() - 2);
  const uint64_t root_bytes = std::stoull(ssh.out.substr(size_at + 1));
  EXPECT_GT(root_bytes, uint64_t{2560} << 20) << ssh.out;

  auto stop = keelctl({"vm", "stop", "deb1", "--timeout", "300"}, 400);
  EXPECT_EQ(stop.exit_code, 0) << stop.err << last_lines(read_file(console), 30);
}

}  // namespace
}  // namespace keel::testing
