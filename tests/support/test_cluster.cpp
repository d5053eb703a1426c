#include "tests/support/test_cluster.h"

#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <stdexcept>
#include <thread>

#include "tests/support/live_vmm.h"
#include "tests/support/vmm_run.h"

namespace keel::testing {

namespace {
std::string tool(const std::string& name) {
  return std::string(KEEL_SOURCE_DIR) + "/tools/" + name;
}
}  // namespace

bool wait_until(const std::function<bool()>& done, std::chrono::milliseconds limit) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < until) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return done();
}

namespace {
// An agent sent SIGTERM: its exit status once it ended, waited for until
// `until`. A status other than 0 (a crash in what it tears down at exit)
// fails the test.
std::optional<int> clean_stop(ChildProcess& agent, const std::string& name,
                              std::chrono::steady_clock::time_point until) {
  std::optional<int> status;
  wait_until([&] { return (status = agent.try_wait()).has_value(); },
             std::chrono::duration_cast<std::chrono::milliseconds>(
                 until - std::chrono::steady_clock::now()));
  if (status) {
    EXPECT_EQ(*status, 0) << "agent " << name << " ended with status";
  }
  return status;
}
}  // namespace

void enter_private_network() {
  if (::unshare(CLONE_NEWNET) != 0) throw std::runtime_error("unshare(CLONE_NEWNET) failed");
  auto r = run_command({"ip", "link", "set", "lo", "up"}, std::chrono::seconds(10));
  if (r.exit_code != 0) throw std::runtime_error("ip link set lo up: " + r.err);
}

TestCluster::TestCluster(unsigned hosts)
    : prefix_("kc" + std::to_string(::getpid())), dir_("keel-cluster"), agents_(hosts) {
  try {
    net({"up", std::to_string(hosts)});
    net({"observe"});
  } catch (...) {
    run_command({tool("cluster-net"), "down", prefix_}, std::chrono::seconds(60));
    run_command({"ip", "link", "delete", "obs"}, std::chrono::seconds(10));
    throw;
  }
}

TestCluster::~TestCluster() {
  for (auto& agent : agents_) {
    if (agent) agent->signal(SIGTERM);
  }
  // Each stops its etcd member (SIGTERM, up to 5 s); one that hangs is
  // killed (~ChildProcess) rather than holding the test.
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  for (unsigned h = 1; h <= size(); ++h) {
    auto& agent = agents_[h - 1];
    if (agent) clean_stop(*agent, name(h), until);
    agent.reset();
  }
  kill_vmms();
  // KEEL_TEST_KEEP_LOGS=DIR: the agents' and etcd members' logs outlive the
  // test there (DIR/PREFIX-hI-agent.log, ...), to read after a failure.
  if (const char* keep = std::getenv("KEEL_TEST_KEEP_LOGS"); keep && *keep) {
    std::error_code ignored;
    std::filesystem::create_directories(keep, ignored);
    for (unsigned h = 1; h <= size(); ++h) {
      const std::filesystem::path to = std::filesystem::path(keep) / ns(h);
      std::filesystem::copy_file(log_path(h), to.string() + "-agent.log",
                                 std::filesystem::copy_options::overwrite_existing, ignored);
      std::filesystem::copy_file(state_dir(h) + "/etcd.log", to.string() + "-etcd.log",
                                 std::filesystem::copy_options::overwrite_existing, ignored);
      // Each VM's console and keel-vmm log on this host: in its pool, or
      // in the agent's state for a VM stored elsewhere.
      std::vector<std::string> vm_dirs = {state_dir(h) + "/vms"};
      if (!pools_.empty()) vm_dirs.push_back(pool(h) + "/vms");
      for (const std::string& vms : vm_dirs) {
        std::filesystem::directory_iterator vm(vms, ignored), end;
        for (; vm != end; vm.increment(ignored)) {
          for (const char* file : {"console.log", "keel-vmm.log"}) {
            std::filesystem::copy_file(
                vm->path() / file, to.string() + "-" + vm->path().filename().string() + "-" + file,
                std::filesystem::copy_options::overwrite_existing, ignored);
          }
        }
      }
    }
  }
  try {
    net({"down"});
  } catch (const std::exception& e) {
    ADD_FAILURE() << e.what();
  }
  run_command({"ip", "link", "delete", "obs"}, std::chrono::seconds(10));
  run_command({"ip", "link", "delete", "obslan"}, std::chrono::seconds(10));
}

std::string TestCluster::address(unsigned host) {
  return "10.77.0." + std::to_string(host);
}

std::string TestCluster::name(unsigned host) {
  return "h" + std::to_string(host);
}

std::string TestCluster::ns(unsigned host) const {
  return prefix_ + "-h" + std::to_string(host);
}

std::string TestCluster::log_path(unsigned host) const {
  return dir_ / ("agent-" + name(host) + ".log");
}

std::string TestCluster::agent_socket(unsigned host) const {
  return "unix:" + state_dir(host) + "/agent.sock";
}

std::string TestCluster::state_dir(unsigned host) const {
  return dir_ / name(host);
}

void TestCluster::net(const std::vector<std::string>& args) const {
  std::vector<std::string> argv = {tool("cluster-net"), args.at(0), prefix_};
  argv.insert(argv.end(), args.begin() + 1, args.end());
  auto r = run_command(argv, std::chrono::seconds(60));
  if (r.exit_code != 0) {
    throw std::runtime_error("cluster-net " + args[0] + " failed: " + r.out + r.err);
  }
}

void TestCluster::vm_lan(const std::string& tap) const {
  net({"vmlan", tap});
}

void TestCluster::cut(unsigned host) const {
  net({"cut", std::to_string(host)});
}

void TestCluster::heal(unsigned host) const {
  net({"heal", std::to_string(host)});
}

void TestCluster::split(const std::vector<unsigned>& side) const {
  std::vector<std::string> args = {"split"};
  for (unsigned h : side) args.push_back(std::to_string(h));
  net(args);
}

void TestCluster::unsplit() const {
  net({"unsplit"});
}

void TestCluster::start_agent(unsigned host, const std::vector<std::string>& extra) {
  auto& slot = agents_.at(host - 1);
  if (slot) throw std::logic_error("agent " + name(host) + " runs already");
  // The shell only sends stderr to the log, then is replaced by ip, which
  // is replaced by the agent: the PID is the agent's.
  std::string command = "exec \"$@\" 2>>" + log_path(host);
  std::vector<std::string> argv = {
      "sh",           "-c",     command,         "sh",     "ip",       "netns",
      "exec",         ns(host), KEEL_AGENT_PATH, "--name", name(host), "--state-dir",
      state_dir(host)};
  argv.insert(argv.end(), extra.begin(), extra.end());
  if (!pools_.empty()) argv.insert(argv.end(), {"--pool", pool(host)});
  ChildProcess::Options options;
  options.extra_env = {"KEEL_RUN_DIR=" + run_dir(host), std::string("KEEL_VMM=") + vmm_path()};
  slot = ChildProcess::spawn(argv, options);
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < until) {
    if (slot->try_wait()) break;
    auto r = keelctl(host, {"--wait", "1", "cluster", "status"}, std::chrono::seconds(10));
    if (r.exit_code != 3 && r.exit_code != 4) return;  // it answered (whatever it said)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  std::ifstream log(log_path(host));
  std::string text((std::istreambuf_iterator<char>(log)), {});
  throw std::runtime_error("agent " + name(host) + " did not come up; its log:\n" + text);
}

void TestCluster::stop_agent(unsigned host) {
  auto& slot = agents_.at(host - 1);
  if (!slot) return;
  slot->signal(SIGTERM);
  const auto status =
      clean_stop(*slot, name(host), std::chrono::steady_clock::now() + std::chrono::seconds(20));
  EXPECT_TRUE(status) << "agent " << name(host) << " did not stop within 20 s";
  slot.reset();
}

void TestCluster::kill_agent(unsigned host) {
  auto& slot = agents_.at(host - 1);
  if (!slot) return;
  slot->signal(SIGKILL);
  slot->wait();
  slot.reset();
}

void TestCluster::signal_agent(unsigned host, int signo) {
  agents_.at(host - 1)->signal(signo);
}

bool TestCluster::agent_running(unsigned host) {
  auto& slot = agents_.at(host - 1);
  return slot && !slot->try_wait();
}

pid_t TestCluster::etcd_pid(unsigned host) const {
  auto r = run_command({"pgrep", "-f", "--", "--data-dir=" + state_dir(host) + "/etcd"},
                       std::chrono::seconds(10));
  return r.exit_code == 0 ? static_cast<pid_t>(std::stol(r.out)) : 0;
}

CommandResult TestCluster::keelctl(unsigned host, const std::vector<std::string>& args,
                                   std::chrono::seconds timeout, const CommandWatch& watch) const {
  std::vector<std::string> argv = {"ip",      "netns",           "exec", ns(host), keelctl_path(),
                                   "--agent", agent_socket(host)};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_command(argv, timeout, {}, watch);
}

std::string TestCluster::join_token(unsigned host) const {
  auto r = keelctl(host, {"cluster", "token"});
  if (r.exit_code != 0) {
    throw std::runtime_error("keelctl cluster token on " + name(host) + ": " + r.err);
  }
  return r.out.substr(0, r.out.find('\n'));
}

void TestCluster::form(unsigned n) {
  auto r = keelctl(1, {"cluster", "init", "--address", address(1)});
  if (r.exit_code != 0) throw std::runtime_error("cluster init on h1: " + r.out + r.err);
  const std::string token = join_token(1);
  for (unsigned h = 2; h <= n; ++h) {
    r = keelctl(
        h, {"cluster", "join", "--address", address(h), "--peer", address(1), "--token", token},
        std::chrono::seconds(240));
    if (r.exit_code != 0) throw std::runtime_error("join of " + name(h) + ": " + r.out + r.err);
  }
}

void TestCluster::make_pools(const PoolImage& image) {
  for (unsigned h = 1; h <= size(); ++h) {
    pools_.push_back(std::make_unique<ScratchBtrfs>(uint64_t{1} << 30));
  }
  const std::string disk = dir_ / "disk.raw";
  { std::ofstream out(disk); }
  std::filesystem::resize_file(disk, image.disk_mib << 20);
  std::vector<std::string> import = {"image",
                                     "import",
                                     image.name,
                                     "--disk",
                                     disk,
                                     "--kernel",
                                     image.kernel.empty() ? testos_bzimage() : image.kernel,
                                     "--cmdline",
                                     image.cmdline};
  if (!image.initrd.empty()) import.insert(import.end(), {"--initrd", image.initrd});
  for (unsigned h = 1; h <= size(); ++h) {
    const std::vector<std::string> env = {"KEEL_POOL=" + pool(h)};
    for (const auto& args :
         std::vector<std::vector<std::string>>{{"pool", "init", pool(h)}, import}) {
      std::vector<std::string> argv = {keelctl_path()};
      argv.insert(argv.end(), args.begin(), args.end());
      auto r = run_command(argv, std::chrono::seconds(120), env);
      if (r.exit_code != 0) {
        throw std::runtime_error("keelctl " + args[0] + " " + args[1] + ": " + r.out + r.err);
      }
    }
  }
}

std::string TestCluster::pool(unsigned host) const {
  return pools_.at(host - 1)->mount_point() + "/" + name(host);
}

std::string TestCluster::run_dir(unsigned host) const {
  return state_dir(host) + "/run";
}

std::string TestCluster::vm_socket(unsigned host, const std::string& vm) const {
  return run_dir(host) + "/vms/" + vm + "/api.sock";
}

std::string TestCluster::console(unsigned host, const std::string& vm) const {
  // Run from another host's pool: kept by the agent; else in its pool.
  const std::string away = state_dir(host) + "/vms/" + vm + "/console.log";
  std::ifstream in(std::filesystem::exists(away) ? away
                                                 : pool(host) + "/vms/" + vm + "/console.log");
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

// The agents leave their VMMs running (as on a real host, where an agent's
// restart must not take the guests down): the test ends them.
void TestCluster::kill_vmms() {
  for (unsigned h = 1; h <= size(); ++h) {
    std::error_code ignored;
    for (const auto& e : std::filesystem::directory_iterator(run_dir(h) + "/vms", ignored)) {
      std::ifstream in(e.path() / "keel-vmm.pid");
      pid_t pid = 0;
      if (!(in >> pid) || pid <= 0) continue;
      // Only while the PID is still that VMM's (its socket on its command line).
      std::ifstream cmdline("/proc/" + std::to_string(pid) + "/cmdline");
      std::string text((std::istreambuf_iterator<char>(cmdline)), {});
      if (text.find((e.path() / "api.sock").string()) != std::string::npos) ::kill(pid, SIGKILL);
    }
  }
}

}  // namespace keel::testing
