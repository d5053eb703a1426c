// Which host a VM starts on when the operator does not say: among the
// hosts that may run it, the one with the most memory left after the VMs it
// runs, then the fewest vCPUs per CPU; with the reason, said to the
// operator.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace keel::cluster {

struct PlacementCandidate {
  std::string host;
  uint64_t memory_bytes = 0;  // the host's
  uint32_t cpus = 0;
  uint64_t memory_used = 0;  // by the VMs it runs
  uint32_t vcpus_used = 0;
  // Empty: it may run the VM; else why not ("not alive", "no compute role", ...).
  std::string unfit;
};

struct Placement {
  std::string host;    // empty: none fits
  std::string reason;  // why that host, or why none
};

Placement place_vm(uint64_t memory_bytes, uint32_t vcpus,
                   const std::vector<PlacementCandidate>& candidates);

}  // namespace keel::cluster
