// Whether a host's pool can still keep the VMs that run from it: the
// agent hands its highly available VMs over to their passives while it
// cannot (cluster/host_vm_health.cpp). Unhealthy is any of:
//   - the pool cannot be read at all;
//   - a device of its Btrfs counts errors (write_io_errs, read_io_errs,
//     flush_io_errs, corruption_errs, generation_errs: `btrfs device
//     stats`); counters are cumulative and kept on disk, so any non-zero one
//     counts until the operator resets them (`btrfs device stats -z`) once
//     the device is checked or replaced;
//   - its filesystem is read-only (Btrfs turns itself read-only after a
//     write it could not complete);
//   - less free space than `min_free_bytes` (0: the smaller of 1 GiB and
//     5% of the pool's size); healthy again only above a quarter more, so
//     that a pool hovering at its floor does not flap.
#pragma once

#include <cstdint>
#include <string>

namespace keel::storage {

class PoolHealth {
 public:
  struct Problem {
    // What is wrong ("space", "read-only", "device 2", ...): the same while
    // the same thing stays wrong, whatever the figures in `text` do. Empty
    // while healthy.
    std::string kind;
    // What is wrong, naming the pool and the fix.
    std::string text;
  };

  PoolHealth(std::string pool, uint64_t min_free_bytes);

  // Not thread-safe: the floor's hysteresis is kept here.
  Problem check();

  // The free-space floor as applied to a pool of `size_bytes`.
  uint64_t min_free_for(uint64_t size_bytes) const;

 private:
  Problem device_errors() const;

  std::string pool_;
  uint64_t min_free_bytes_;
  bool short_of_space_ = false;
};

}  // namespace keel::storage
