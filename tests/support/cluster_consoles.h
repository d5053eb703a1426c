// What a test cluster's VMs printed (tests/support/test_cluster.h), read
// on the test's clock: heartbeats per host, the agents' words about a VM,
// and a watch that catches one VM printing on two hosts at once.
#pragma once

#include <atomic>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/test_cluster.h"
#include "tests/support/vmm_run.h"

namespace keel::testing {

// The test guest's heartbeats on the VM's console on `host` (whole lines).
std::vector<Beat> beats(const TestCluster& c, unsigned host, const std::string& vm);
// Heartbeats on the VM's console since `from` (its length then).
bool beats_after(const TestCluster& c, unsigned host, const std::string& vm, size_t from);
// Each agent's log lines that name the VM (the last 20), for a failure's
// message.
std::string agents_said(const TestCluster& c, const std::string& vm);

// Every VM's console on every host, looked at every 20 ms on the test's
// clock: a look at which two hosts' copies of one VM both printed whole
// lines is a VM running on two hosts at once, unless it looks like a
// handover (the test guest's beats of one host all before the other's) and
// the next look sees one host only.
class ConsoleWatch {
 public:
  ConsoleWatch(const TestCluster& c, std::vector<std::string> vms);
  ~ConsoleWatch();
  ConsoleWatch(const ConsoleWatch&) = delete;
  ConsoleWatch& operator=(const ConsoleWatch&) = delete;
  std::vector<std::string> overlaps();

 private:
  void loop();

  const TestCluster& c_;
  std::vector<std::string> vms_;
  std::mutex mutex_;
  std::vector<std::string> overlaps_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace keel::testing
