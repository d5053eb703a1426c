// The HA trials' shared parts (tests/integration/cluster_ha*_test.cpp): a
// VM's `vm ha status` read through keelctl, and the faults the issue asks
// for, done to a test cluster's active host and undone after.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "proto/agent.pb.h"
#include "tests/support/test_cluster.h"

namespace keel::testing {

// `keelctl --json vm ha status VM` on `host`; on failure a status whose
// state says what keelctl answered.
agent::v1::VmHaStatus ha_status(const TestCluster& c, unsigned host, const std::string& vm);
// Waits (up to 120 s) until the VM is protected, asking host `ask`; its
// status then.
agent::v1::VmHaStatus until_protected(const TestCluster& c, const std::string& vm,
                                      unsigned ask = 3);
// "hI" -> I.
unsigned host_number(const std::string& name);
// The VM's keel-vmm on `host` (its PID file), 0 when none.
pid_t vmm_pid(const TestCluster& c, unsigned host, const std::string& vm);
// KEEL_HA_TRIALS (default 1): how many times each fault is tried.
unsigned ha_trials();

// The active's faults, after which the passive runs the VM, and the
// passive's (the VM runs on where it ran).
enum class Fault {
  kVmmKilled,
  kHostKilled,
  kLinkCut,
  kAgentStopped,
  kPassiveKilled,
  kPassiveHostKilled
};
const char* fault_name(Fault f);
// The passive's faults.
bool hits_passive(Fault f);
// Does `fault` to `host` (the active's, or for the passive's faults the
// passive's), whose keel-vmm is `pid`: kill -9 the VMM; cut the host's
// link and kill its agent (etcd goes with it) and VMM; cut the link only
// (the host fences itself); SIGSTOP the agent (its lease runs out, its
// VMMs pause at the fence).
void inflict(TestCluster& c, Fault fault, unsigned host, pid_t pid);
// Undoes it once the VM runs elsewhere (or, the passive's, runs on where
// it ran): heals the link, restarts or continues the agent; after a cut or
// a stop, waits for the host to end its paused copy (false if it did not
// within 30 s).
bool recover(TestCluster& c, Fault fault, unsigned host, pid_t pid);
// Prints, for each fault, "NAME: WHAT, median M ms (MIN to MAX, N trials;
// NOTE)" over its trials' times.
void print_fault_medians(std::map<Fault, std::vector<int64_t>> times_ms, const std::string& what,
                         const std::string& note);

}  // namespace keel::testing
