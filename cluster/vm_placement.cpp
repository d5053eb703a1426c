#include "cluster/vm_placement.h"

namespace keel::cluster {

namespace {

std::string mib(uint64_t bytes) {
  return std::to_string(bytes >> 20) + " MiB";
}

uint64_t free_memory(const PlacementCandidate& c) {
  return c.memory_bytes > c.memory_used ? c.memory_bytes - c.memory_used : 0;
}

}  // namespace

Placement place_vm(uint64_t memory_bytes, uint32_t vcpus,
                   const std::vector<PlacementCandidate>& candidates) {
  const PlacementCandidate* best = nullptr;
  std::string why_not;
  for (const auto& c : candidates) {
    std::string unfit = c.unfit;
    if (unfit.empty() && free_memory(c) < memory_bytes) {
      unfit = mib(free_memory(c)) + " of memory free, the VM needs " + mib(memory_bytes);
    }
    if (!unfit.empty()) {
      why_not += (why_not.empty() ? "" : "; ") + c.host + ": " + unfit;
      continue;
    }
    // vCPUs per CPU once the VM runs there, compared without division.
    auto load_less = [vcpus](const PlacementCandidate& a, const PlacementCandidate& b) {
      return uint64_t{a.vcpus_used + vcpus} * b.cpus < uint64_t{b.vcpus_used + vcpus} * a.cpus;
    };
    if (!best || free_memory(c) > free_memory(*best) ||
        (free_memory(c) == free_memory(*best) && load_less(c, *best))) {
      best = &c;
    }
  }
  if (!best) return {"", "no host can run it (" + (why_not.empty() ? "no hosts" : why_not) + ")"};
  std::string reason = "the most free memory (" + mib(free_memory(*best)) + "), " +
                       std::to_string(best->vcpus_used) + " vCPUs on " +
                       std::to_string(best->cpus) + " CPUs running";
  if (!why_not.empty()) reason += "; not " + why_not;
  return {best->host, reason};
}

}  // namespace keel::cluster
