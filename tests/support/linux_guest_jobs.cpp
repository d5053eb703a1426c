#include "tests/support/linux_guest_jobs.h"

namespace keel::testing {

std::string LinuxGuestJobs::cmdline() const {
  auto n = [](uint64_t v) { return std::to_string(v); };
  std::string jobs =
      "console=ttyS0 panic=-1 keel.job=heartbeat+dirtier+disk" + more_jobs +
      " keel.interval_ms=" + n(interval_ms) + " keel.count=" + n(count) +
      " keel.mib=" + n(dirtier_mib) + " keel.rate_mbps=16 keel.seconds=" + n(dirtier_seconds) +
      " keel.disk_mode=random keel.disk_mib=" + n(disk_mib) + " keel.disk_seed=" + n(disk_seed) +
      " keel.disk_writes=" + n(disk_writes) + " keel.disk_rate_mbps=" + n(disk_rate_mbps);
  if (!more_settings.empty()) jobs += " " + more_settings;
  return jobs;
}

std::vector<std::string> LinuxGuestJobs::vmm_args(const std::string& images,
                                                  const std::string& disk,
                                                  const std::vector<std::string>& extra) const {
  std::vector<std::string> args{"--kernel", images + "/vmlinuz-cloud",
                                "--initrd", images + "/initramfs-cloud.cpio.gz",
                                "--cpus",   "2",
                                "--memory", "512M",
                                "--disk",   "path=" + disk,
                                "--rng"};
  args.insert(args.end(), extra.begin(), extra.end());
  args.insert(args.end(), {"--cmdline", cmdline()});
  return args;
}

uint64_t us_between(std::chrono::steady_clock::time_point a,
                    std::chrono::steady_clock::time_point b) {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::microseconds>(b - a).count());
}

}  // namespace keel::testing
