// keel-vmm --jail (label kvm): the test guest runs jailed with a disk, a
// tap and the rng; the jailed process is what the mode promises (its user,
// its own pid and mount namespaces with an empty root, no new privileges,
// a seccomp filter on every thread, limits, no inherited descriptor);
// snapshot, restore and live migration work jailed; a guest that takes over
// a vCPU thread (keel-vmm-testhooks' door) is stopped by the filter with the
// call named; settings the jail cannot honour are refused by name.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <stdexcept>
#include <thread>

#include "tests/support/jail_user.h"
#include "tests/support/keelctl_result.h"
#include "tests/support/live_vmm.h"
#include "tests/support/net_namespace.h"
#include "tests/support/net_peer.h"
#include "tests/support/scratch_dir.h"
#include "tests/support/vmm_run.h"

namespace keel::testing {
namespace {

// The last heartbeat the guest printed whole: a VMM killed mid-line leaves
// a beat cut short ("testos: beat seq"), which says nothing yet.
uint64_t last_whole_beat(const LiveVmm& vmm) {
  const auto beats = vmm.lines("testos: beat ");
  for (auto it = beats.rbegin(); it != beats.rend(); ++it) {
    if (it->text.find(" t_us=") != std::string::npos) return field_u64(it->text, "seq");
  }
  throw std::runtime_error("no whole heartbeat line\n" + vmm.describe());
}

namespace fs = std::filesystem;
using std::chrono::seconds;

constexpr uid_t kUid = kJailUid;
const std::string kJail = std::to_string(kUid);

std::vector<std::string> testos(const std::string& cmdline, std::vector<std::string> extra = {}) {
  std::vector<std::string> args{"--kernel", testos_bzimage(), "--memory",
                                "64M",      "--cmdline",      cmdline};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// "Key:\tvalue" from a /proc status file.
std::string status_field(const std::string& status, const std::string& key) {
  const size_t at = status.find("\n" + key + ":");
  if (at == std::string::npos) return "";
  const size_t start = status.find_first_not_of(" \t", at + key.size() + 2);
  return status.substr(start, status.find('\n', start) - start);
}

// The jailed VMM: the supervisor's only child.
pid_t jailed_child(pid_t supervisor) {
  const std::string children = read_text("/proc/" + std::to_string(supervisor) + "/task/" +
                                         std::to_string(supervisor) + "/children");
  return static_cast<pid_t>(std::atoi(children.c_str()));
}

// The thread of `pid` whose name is `name`, or 0.
pid_t thread_named(pid_t pid, const std::string& name) {
  for (const auto& task : fs::directory_iterator("/proc/" + std::to_string(pid) + "/task")) {
    std::string comm = read_text(task.path().string() + "/comm");
    if (!comm.empty() && comm.back() == '\n') comm.pop_back();
    if (comm == name) return static_cast<pid_t>(std::stoi(task.path().filename().string()));
  }
  return 0;
}

// --- the guest's devices, jailed -------------------------------------------

TEST(Jail, TestGuestWritesAndVerifiesItsDiskAndReadsTheRng) {
  ScratchDir scratch("keel-jail-test");
  const std::string image = scratch.sparse_file("disk.img", 32 << 20);
  auto write =
      run_vmm(jailed(testos("job=disk mode=write mib=16 seed=7", {"--disk", "path=" + image})));
  ASSERT_EQ(write.exit_code, 0) << describe(write);
  EXPECT_TRUE(write.line("testos: disk OK mode=write ")) << describe(write);
  EXPECT_NE(write.err.find("jailed: uid " + kJail), std::string::npos) << write.err;
  auto verify =
      run_vmm(jailed(testos("job=disk mode=verify mib=16 seed=7", {"--disk", "path=" + image})));
  ASSERT_EQ(verify.exit_code, 0) << describe(verify);
  EXPECT_TRUE(verify.line("testos: disk OK mode=verify ")) << describe(verify);
  auto rng = run_vmm(jailed(testos("job=rng bytes=65536", {"--rng"})));
  ASSERT_EQ(rng.exit_code, 0) << describe(rng);
  EXPECT_TRUE(rng.line("testos: rng OK")) << describe(rng);
}

TEST(Jail, TestGuestSendsOverItsTapAndNothingIsLost) {
  NetNamespace ns("kjtap0", "10.0.2.1/24");
  UdpSocket sink("10.0.2.1", 9000, 16 << 20);
  auto run = run_vmm(jailed(
      testos("job=net ip=10.0.2.15 mode=send dst=10.0.2.1:9000 mib=1", {"--net", "tap=kjtap0"})));
  ASSERT_EQ(run.exit_code, 0) << describe(run);
  auto ok = run.line("testos: net send OK ");
  ASSERT_TRUE(ok) << describe(run);
  uint64_t bytes = 0;
  for (;;) {
    auto d = sink.receive(std::chrono::milliseconds(200));
    if (d.empty()) break;
    bytes += d.size();
  }
  EXPECT_EQ(bytes, 1u << 20);
}

// --- what the jailed process is --------------------------------------------

TEST(Jail, TheJailedProcessIsConfinedAndStillServesItsSocket) {
  // A descriptor keel-vmm would inherit (no O_CLOEXEC): it must not keep it.
  ScratchDir scratch("keel-jail-test");
  const std::string leaked_path = scratch / "leaked";
  const int leaked = ::open(leaked_path.c_str(), O_CREAT | O_RDWR, 0600);
  ASSERT_GE(leaked, 0);
  LiveVmm vmm(jailed(testos("job=heartbeat interval_ms=20", {"--cpus", "2"})));
  ::close(leaked);
  ASSERT_TRUE(vmm.wait_line("testos: beat ", 0, seconds(60))) << vmm.describe();
  const pid_t child = jailed_child(vmm.pid());
  ASSERT_GT(child, 0) << "no jailed child under the supervisor " << vmm.pid();
  const std::string proc = "/proc/" + std::to_string(child);

  const std::string status = read_text(proc + "/status");
  EXPECT_EQ(status_field(status, "Uid").substr(0, kJail.size()), kJail) << status;
  EXPECT_EQ(status_field(status, "Gid").substr(0, kJail.size()), kJail) << status;
  EXPECT_EQ(status_field(status, "NoNewPrivs"), "1") << status;
  EXPECT_EQ(status_field(status, "Seccomp"), "2") << status;
  EXPECT_EQ(status_field(status, "CapEff"), "0000000000000000") << status;
  EXPECT_EQ(status_field(status, "NSpid").substr(status_field(status, "NSpid").rfind('\t') + 1),
            "1")
      << "not PID 1 of its own pid namespace: " << status;
  for (const char* ns : {"pid", "mnt", "ipc", "uts"}) {
    EXPECT_NE(fs::read_symlink(proc + "/ns/" + ns),
              fs::read_symlink(std::string("/proc/self/ns/") + ns))
        << ns;
  }
  // Its root: empty. The host's files are out of reach by path.
  std::vector<std::string> in_root;
  for (const auto& e : fs::directory_iterator(proc + "/root")) in_root.push_back(e.path());
  EXPECT_TRUE(in_root.empty()) << in_root.size() << " entries, first " << in_root.front();
  for (const auto& fd : fs::directory_iterator(proc + "/fd")) {
    std::error_code ec;
    EXPECT_NE(fs::read_symlink(fd.path(), ec), leaked_path) << "inherited descriptor kept";
  }
  const std::string limits = read_text(proc + "/limits");
  EXPECT_NE(limits.find("Max core file size        0"), std::string::npos) << limits;

  // Every thread kind is filtered: the process filter and its own.
  for (const char* thread : {"vcpu0", "vcpu1"}) {
    const pid_t tid = thread_named(child, thread);
    ASSERT_GT(tid, 0) << thread;
    const std::string ts = read_text(proc + "/task/" + std::to_string(tid) + "/status");
    EXPECT_EQ(status_field(ts, "Seccomp_filters"), "2") << thread << ": " << ts;
  }
  EXPECT_EQ(status_field(read_text(proc + "/task/" + std::to_string(child) + "/status"),
                         "Seccomp_filters"),
            "2");

  // The control socket answers; status names the process the operator
  // started; a shutdown ends both and removes the socket.
  auto s = vmm.keelctl({"--json", "status"});
  ASSERT_EQ(s.exit_code, 0) << show(s);
  EXPECT_NE(s.out.find("\"pid\":" + std::to_string(vmm.pid()) + ","), std::string::npos) << s.out;
  auto stop = vmm.keelctl({"kill"});
  EXPECT_EQ(stop.exit_code, 0) << show(stop);
  EXPECT_EQ(vmm.wait_exit(seconds(30)), 14) << vmm.describe();
  EXPECT_FALSE(fs::exists(vmm.socket_path())) << "the supervisor left the socket behind";
}

TEST(Jail, KillingTheSupervisorEndsTheJailedVmm) {
  LiveVmm vmm(jailed(testos("job=heartbeat interval_ms=20")));
  ASSERT_TRUE(vmm.wait_line("testos: beat ", 0, seconds(60))) << vmm.describe();
  const pid_t child = jailed_child(vmm.pid());
  ASSERT_GT(child, 0);
  ASSERT_EQ(::kill(vmm.pid(), SIGKILL), 0);
  EXPECT_TRUE(vmm.wait_exit(seconds(30)).has_value());
  // Its death signal ends the VMM: no guest runs on unsupervised. (A
  // pidfd turns readable when its process has ended.)
  const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, child, 0));
  if (pidfd < 0) {
    EXPECT_EQ(errno, ESRCH) << "pidfd_open: " << std::strerror(errno);  // already gone
    return;
  }
  pollfd ended{pidfd, POLLIN, 0};
  EXPECT_EQ(::poll(&ended, 1, 30000), 1)
      << "the jailed VMM " << child << " outlived its supervisor";
  ::close(pidfd);
}

// --- snapshot, restore and migration, jailed --------------------------------

TEST(Jail, SnapshotRestoreAndMigrationWorkJailed) {
  ScratchDir scratch("keel-jail-test");
  const std::string root = scratch / "snapshots";
  fs::create_directory(root);
  ASSERT_EQ(::chown(root.c_str(), kUid, kUid), 0);
  const std::string image = scratch.sparse_file("disk.img", 8 << 20);
  const std::vector<std::string> devices{"--disk", "path=" + image};

  auto first = std::make_unique<LiveVmm>(
      jailed(testos("job=heartbeat interval_ms=20",
                    {"--disk", "path=" + image, "--rng", "--snapshot-root", root})));
  ASSERT_TRUE(first->wait_line("testos: beat seq=5", 0, seconds(60))) << first->describe();
  auto snap = first->keelctl({"snapshot", root + "/one"}, seconds(300));
  ASSERT_EQ(snap.exit_code, 0) << show(snap) << first->describe();
  struct stat st {};
  ASSERT_EQ(::stat((root + "/one/memory").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, kUid) << "the snapshot was written by someone else";
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(first->keelctl({"kill"}).exit_code, 0);
  EXPECT_EQ(first->wait_exit(seconds(30)), 14) << first->describe();
  const uint64_t before = last_whole_beat(*first);

  std::vector<std::string> restore{"--restore", root + "/one"};
  restore.insert(restore.end(), devices.begin(), devices.end());
  auto restored = std::make_unique<LiveVmm>(jailed(restore));
  auto next = restored->wait_line("testos: beat seq=" + std::to_string(before + 3), 0, seconds(60));
  ASSERT_TRUE(next) << restored->describe();

  // Moved live from the jailed restore to a jailed --incoming.
  std::vector<std::string> in_args{"--incoming", "tcp:127.0.0.1:0"};
  in_args.insert(in_args.end(), devices.begin(), devices.end());
  LiveVmm there(jailed(in_args));
  const std::string address = there.incoming_address(seconds(30));
  ASSERT_EQ(address.rfind("tcp:127.0.0.1:", 0), 0u) << there.describe();
  auto moved = restored->keelctl({"migrate", address}, seconds(300));
  ASSERT_EQ(moved.exit_code, 0) << show(moved) << restored->describe() << there.describe();
  EXPECT_EQ(restored->wait_exit(seconds(30)), 0) << restored->describe();
  const uint64_t moved_at = last_whole_beat(*restored);
  ASSERT_TRUE(there.wait_line("testos: beat seq=" + std::to_string(moved_at + 5), 0, seconds(60)))
      << there.describe();
  EXPECT_EQ(there.keelctl({"kill"}).exit_code, 0);
  EXPECT_EQ(there.wait_exit(seconds(30)), 14) << there.describe();
}

// --- a guest that runs code on a vCPU thread --------------------------------

const char* testhooks_vmm() {
  static const std::string path = fs::path(vmm_path()).parent_path() / "keel-vmm-testhooks";
  return path.c_str();
}

TEST(Jail, AGuestThatMakesTheVcpuThreadOpenAHostFileStopsTheVmm) {
  // Without the jail the door works: the VMM opened the file for the guest.
  auto open = run_vmm_at(testhooks_vmm(), testos("job=escape"));
  ASSERT_EQ(open.exit_code, 0) << describe(open);
  EXPECT_NE(open.err.find("test hook: the guest had the VMM open /etc/passwd"), std::string::npos)
      << open.err;
  EXPECT_TRUE(open.line("testos: escape: still running")) << describe(open);

  // Jailed, the call never runs and the VMM stops, saying which call and where.
  auto stopped = run_vmm_at(testhooks_vmm(), jailed(testos("job=escape")));
  EXPECT_EQ(stopped.exit_code, 15) << describe(stopped);
  EXPECT_NE(stopped.err.find("seccomp: forbidden system call openat (257) on a vCPU thread"),
            std::string::npos)
      << stopped.err;
  EXPECT_EQ(stopped.err.find("test hook: the guest had"), std::string::npos) << stopped.err;
  EXPECT_TRUE(stopped.line("testos: escape: asking")) << describe(stopped);
  EXPECT_FALSE(stopped.line("testos: escape: still running")) << describe(stopped);

  // The product itself has no door: the write goes nowhere.
  auto product = run_vmm(jailed(testos("job=escape")));
  EXPECT_EQ(product.exit_code, 0) << describe(product);
  EXPECT_TRUE(product.line("testos: escape: still running")) << describe(product);
}

// --- refused -----------------------------------------------------------------

TEST(Jail, SettingsTheJailCannotHonourAreRefusedByName) {
  auto root = run_vmm(testos("job=platform", {"--jail", "0"}));
  EXPECT_EQ(root.exit_code, 1);
  EXPECT_NE(root.err.find("--jail 0: the jailed VMM must not run as root"), std::string::npos)
      << root.err;
  auto bad = run_vmm(testos("job=platform", {"--jail", "alice"}));
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("invalid value for --jail: 'alice'"), std::string::npos) << bad.err;

  ScratchDir scratch("keel-jail-test");
  auto owned = run_vmm(jailed(testos("job=platform", {"--snapshot-root", scratch.path()})));
  EXPECT_EQ(owned.exit_code, 1) << describe(owned);
  EXPECT_NE(owned.err.find("--snapshot-root " + scratch.path() + " belongs to uid 0"),
            std::string::npos)
      << owned.err;
  EXPECT_NE(owned.err.find("chown " + kJail + ":" + kJail), std::string::npos) << owned.err;
  EXPECT_TRUE(owned.lines.empty()) << "the guest ran: " << describe(owned);
}

}  // namespace
}  // namespace keel::testing
