#include "tests/support/cluster_ha_faults.h"

#include <google/protobuf/util/json_util.h>
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iostream>

#include "tests/support/keelctl_result.h"

namespace keel::testing {

namespace api = ::keel::agent::v1;

api::VmHaStatus ha_status(const TestCluster& c, unsigned host, const std::string& vm) {
  auto r = c.keelctl(host, {"--json", "vm", "ha", "status", vm});
  api::VmHaResponse out;
  if (r.exit_code != 0 || !google::protobuf::util::JsonStringToMessage(r.out, &out).ok()) {
    api::VmHaStatus failed;
    failed.set_state("keelctl: " + show(r));
    return failed;
  }
  return out.status();
}

api::VmHaStatus until_protected(const TestCluster& c, const std::string& vm, unsigned ask) {
  api::VmHaStatus s;
  wait_until(
      [&] {
        s = ha_status(c, ask, vm);
        return s.state() == "protected";
      },
      std::chrono::seconds(120));
  return s;
}

unsigned host_number(const std::string& name) {
  return static_cast<unsigned>(std::stoul(name.substr(1)));
}

pid_t vmm_pid(const TestCluster& c, unsigned host, const std::string& vm) {
  std::ifstream in(c.run_dir(host) + "/vms/" + vm + "/keel-vmm.pid");
  pid_t pid = 0;
  in >> pid;
  return pid;
}

unsigned ha_trials() {
  const char* env = std::getenv("KEEL_HA_TRIALS");
  return env ? static_cast<unsigned>(std::atoi(env)) : 1;
}

const char* fault_name(Fault f) {
  switch (f) {
    case Fault::kVmmKilled:
      return "keel-vmm killed";
    case Fault::kHostKilled:
      return "host killed, its link cut";
    case Fault::kLinkCut:
      return "link cut";
    case Fault::kAgentStopped:
      return "agent stopped (SIGSTOP)";
    case Fault::kPassiveKilled:
      return "passive keel-vmm killed";
    case Fault::kPassiveHostKilled:
      return "passive host killed, its link cut";
  }
  return "";
}

bool hits_passive(Fault f) {
  return f == Fault::kPassiveKilled || f == Fault::kPassiveHostKilled;
}

void inflict(TestCluster& c, Fault fault, unsigned host, pid_t pid) {
  switch (fault) {
    case Fault::kVmmKilled:
    case Fault::kPassiveKilled:
      ::kill(pid, SIGKILL);
      break;
    case Fault::kHostKilled:
    case Fault::kPassiveHostKilled:
      c.cut(host);
      c.kill_agent(host);
      ::kill(pid, SIGKILL);
      break;
    case Fault::kLinkCut:
      c.cut(host);
      break;
    case Fault::kAgentStopped:
      c.signal_agent(host, SIGSTOP);
      break;
  }
}

bool recover(TestCluster& c, Fault fault, unsigned host, pid_t pid) {
  switch (fault) {
    case Fault::kVmmKilled:
    case Fault::kPassiveKilled:
      break;
    case Fault::kHostKilled:
    case Fault::kPassiveHostKilled:
      c.heal(host);
      c.start_agent(host);
      break;
    case Fault::kLinkCut:
      c.heal(host);
      // Its keeper finds the VM moved and ends the paused copy.
      return wait_until([&] { return ::kill(pid, 0) != 0; }, std::chrono::seconds(30));
    case Fault::kAgentStopped:
      c.signal_agent(host, SIGCONT);
      return wait_until([&] { return ::kill(pid, 0) != 0; }, std::chrono::seconds(30));
  }
  return true;
}

void print_fault_medians(std::map<Fault, std::vector<int64_t>> times_ms, const std::string& what,
                         const std::string& note) {
  for (auto& [fault, ms] : times_ms) {
    std::sort(ms.begin(), ms.end());
    std::cout << fault_name(fault) << ": " << what << ", median " << ms[ms.size() / 2] << " ms ("
              << ms.front() << " to " << ms.back() << ", " << ms.size() << " trials; " << note
              << ")" << std::endl;
  }
}

}  // namespace keel::testing
