// Hosts of a Keel cluster as network namespaces on this machine, for tests
// (tools/cluster-net): PREFIX-h1..hN on one bridge, each with a keel-agent
// of its own, and the test process itself on that network (10.77.0.100),
// so that it reaches every agent at its cluster address. Everything is
// removed on destruction, also when the test fails.
//
// The test's process must have a network namespace of its own first
// (enter_private_network(), before any thread starts): the observer's
// interface goes there, never into the machine's own namespace.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/child_process.h"
#include "tests/support/scratch_btrfs.h"
#include "tests/support/scratch_dir.h"

namespace keel::testing {

// Looks every 50 ms until `done` holds, at most `limit`; false if it never
// did.
bool wait_until(const std::function<bool()>& done, std::chrono::milliseconds limit);

// unshare(CLONE_NEWNET) for the whole process, with lo up. Call from main
// before anything starts a thread.
void enter_private_network();

class TestCluster {
 public:
  // `hosts` namespaces (1 to 8), agents not yet started.
  explicit TestCluster(unsigned hosts);
  ~TestCluster();
  TestCluster(const TestCluster&) = delete;
  TestCluster& operator=(const TestCluster&) = delete;

  unsigned size() const { return static_cast<unsigned>(agents_.size()); }
  static std::string address(unsigned host);  // 10.77.0.I
  static std::string name(unsigned host);     // hI
  std::string ns(unsigned host) const;        // PREFIX-hI
  // The agent's log (its stderr) and its state directory.
  std::string log_path(unsigned host) const;
  std::string state_dir(unsigned host) const;
  // "unix:PATH" of host's agent (keelctl --agent, AgentClient).
  std::string agent_socket(unsigned host) const;
  // `keelctl cluster token` on host (a host of the cluster).
  std::string join_token(unsigned host) const;

  // Starts host I's agent (extra arguments after the defaults) and waits
  // until it answers on its management address.
  void start_agent(unsigned host, const std::vector<std::string>& extra = {});
  // SIGTERM and wait (the agent stops its etcd member); SIGKILL: as a
  // host's power failing would (its etcd dies with it).
  void stop_agent(unsigned host);
  void kill_agent(unsigned host);
  void signal_agent(unsigned host, int signo);
  bool agent_running(unsigned host);
  // The agent's etcd member's PID, 0 when none runs.
  pid_t etcd_pid(unsigned host) const;

  // keelctl in host I's namespace, talking to its agent.
  // `watch`: run_command's, to end a command that would go on (--follow).
  CommandResult keelctl(unsigned host, const std::vector<std::string>& args,
                        std::chrono::seconds timeout = std::chrono::seconds(90),
                        const CommandWatch& watch = {}) const;
  // cluster init on host 1, join of 2..n through host 1; throws with
  // keelctl's output when one does not work.
  void form(unsigned n);

  // What each host's pool holds (keelctl image import).
  struct PoolImage {
    std::string name, cmdline;
    std::string kernel;  // empty: the test guest's bzImage
    std::string initrd;
    uint64_t disk_mib = 16;  // a sparse disk of zeros
  };
  // A pool for each host (on a Btrfs volume of its own), holding
  // `image`. Agents started from now on get --pool.
  void make_pools(const PoolImage& image);
  // The test guest with `cmdline` and a 16 MiB disk, as image `image`.
  void make_pools(const std::string& image, const std::string& cmdline) {
    make_pools(PoolImage{image, cmdline, "", "", 16});
  }
  std::string pool(unsigned host) const;
  // Host I's agent's KEEL_RUN_DIR: its VMMs' sockets and PID files.
  std::string run_dir(unsigned host) const;
  std::string vm_socket(unsigned host, const std::string& vm) const;
  // What the VM's guest printed on host I (from its pool, or, for a VM
  // stored elsewhere, from the agent's state directory).
  std::string console(unsigned host, const std::string& vm) const;

  void net(const std::vector<std::string>& args) const;  // tools/cluster-net CMD PREFIX ...
  // The VMs' LAN (tools/cluster-net vmlan): tap `tap` in every host, and
  // this process at 10.77.1.100 on it. cut() and heal() take it along.
  void vm_lan(const std::string& tap) const;
  void cut(unsigned host) const;
  void heal(unsigned host) const;
  // `side` on one bridge, the rest (and the test) on the other.
  void split(const std::vector<unsigned>& side) const;
  void unsplit() const;

 private:
  void kill_vmms();

  std::string prefix_;
  ScratchDir dir_;
  // A Btrfs volume of 1 GiB per host, as hosts have disks of their own.
  std::vector<std::unique_ptr<ScratchBtrfs>> pools_;
  std::vector<std::optional<ChildProcess>> agents_;
};

}  // namespace keel::testing
