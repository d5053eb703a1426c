// Whether a host's pool can still keep the VMs that run from it: the
// agent hands its highly available VMs over to their passives while it
// cannot (cluster/host_vm_health.cpp). Unhealthy is any of:
//   - the pool cannot be read at all;
//   - a device of its Btrfs counts errors (write, read, flush, checksum or
//     generation: `btrfs device stats`); counters are cumulative and kept
//     on disk, so any non-zero one counts until the operator resets them
//     (`btrfs device stats -z`) once the device is checked or replaced;
//   - its filesystem is read-only (Btrfs turns itself read-only after a
//     write it could not complete);
//   - less free space than `min_free_bytes` (0: the smaller of 1 GiB and
//     5% of the pool's size).
#pragma once

#include <cstdint>
#include <string>

namespace keel::storage {

class PoolHealth {
 public:
  PoolHealth(std::string pool, uint64_t min_free_bytes);

  // "" while healthy; else what is wrong, naming the pool and the fix.
  std::string problem() const;

  // The free-space floor as applied to a pool of `size_bytes`.
  uint64_t min_free_for(uint64_t size_bytes) const;

 private:
  std::string device_errors() const;

  std::string pool_;
  uint64_t min_free_bytes_;
};

}  // namespace keel::storage
