// The Linux guest image's jobs running at once, as the stock-kernel
// snapshot and migration tests use them: a heartbeat, a memory dirtier and
// a paced random disk writer (keel-guest-init's keel.* settings), in a
// 2-vCPU, 512 MiB keel-vmm guest with a virtio disk and rng.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace keel::testing {

struct LinuxGuestJobs {
  // Long enough that every job still runs when a test acts a few beats in,
  // on any host; short enough for the KVM test host.
  uint64_t interval_ms = 200, count = 150;                    // heartbeat: 30 s
  uint64_t dirtier_mib = 64, dirtier_seconds = 20;            // at most 16 MiB/s
  uint64_t disk_mib = 16, disk_seed = 11, disk_writes = 384;  // about 13 MiB
  uint64_t disk_rate_mbps = 1;
  std::string more_jobs;      // "+net", joined to heartbeat+dirtier+disk
  std::string more_settings;  // further keel.* settings, space-separated

  // The kernel command line.
  std::string cmdline() const;
  // keel-vmm's arguments: the cloud kernel and initramfs from `images`,
  // `disk` as the virtio disk, then `extra`.
  std::vector<std::string> vmm_args(const std::string& images, const std::string& disk,
                                    const std::vector<std::string>& extra = {}) const;
};

// Microseconds from `a` to `b`.
uint64_t us_between(std::chrono::steady_clock::time_point a,
                    std::chrono::steady_clock::time_point b);

}  // namespace keel::testing
