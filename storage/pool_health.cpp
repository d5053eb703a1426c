#include "storage/pool_health.h"

#include <fcntl.h>
#include <linux/btrfs.h>
#include <sys/ioctl.h>
#include <sys/statvfs.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/size_parse.h"
#include "common/unique_fd.h"

namespace keel::storage {

namespace {

constexpr uint64_t kDefaultFloor = uint64_t{1} << 30;

}  // namespace

PoolHealth::PoolHealth(std::string pool, uint64_t min_free_bytes)
    : pool_(std::move(pool)), min_free_bytes_(min_free_bytes) {}

uint64_t PoolHealth::min_free_for(uint64_t size_bytes) const {
  if (min_free_bytes_ != 0) return min_free_bytes_;
  return std::min(kDefaultFloor, size_bytes / 20);
}

PoolHealth::Problem PoolHealth::check() {
  struct statvfs fs {};
  if (::statvfs(pool_.c_str(), &fs) != 0) {
    return {"unreadable", "pool " + pool_ + " cannot be read: " + std::strerror(errno)};
  }
  // The errors first: a Btrfs that counted them says more than its
  // read-only flag does.
  if (auto errors = device_errors(); !errors.kind.empty()) return errors;
  if (fs.f_flag & ST_RDONLY) {
    return {"read-only",
            "pool " + pool_ +
                " is read-only (Btrfs turns itself read-only after a write it could not "
                "complete: see the kernel's log; unmount, check and mount it again)"};
  }
  const uint64_t free_bytes = uint64_t{fs.f_bavail} * fs.f_frsize;
  const uint64_t floor = min_free_for(uint64_t{fs.f_blocks} * fs.f_frsize);
  const uint64_t healthy_from = floor + floor / 4;
  short_of_space_ = free_bytes < (short_of_space_ ? healthy_from : floor);
  if (short_of_space_) {
    return {"space", "pool " + pool_ + " has " + human_bytes(free_bytes) +
                         " free, under its floor of " + human_bytes(floor) +
                         " (keel-agent --pool-min-free; healthy again from " +
                         human_bytes(healthy_from) + "): free space in it or grow it"};
  }
  return {};
}

// BTRFS_IOC_GET_DEV_STATS for each device of the filesystem (device ids
// run from 1 to max_id, with gaps where devices were removed: ENODEV).
PoolHealth::Problem PoolHealth::device_errors() const {
  const auto unreadable = [&](const std::string& call) -> Problem {
    const int err = errno;
    return {"device counters", "pool " + pool_ + ": its devices' error counters cannot be read (" +
                                   call + ": " + std::strerror(err) + ")"};
  };
  UniqueFd fd(::open(pool_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) return unreadable("open");
  btrfs_ioctl_fs_info_args info{};
  if (::ioctl(fd.get(), BTRFS_IOC_FS_INFO, &info) != 0) {
    // Not Btrfs (a pool is, pool.cpp checks; a test's may not be): no
    // counters to read.
    if (errno == ENOTTY || errno == EINVAL || errno == EOPNOTSUPP) return {};
    return unreadable("BTRFS_IOC_FS_INFO");
  }
  // As `btrfs device stats` names them.
  static constexpr const char* kNames[BTRFS_DEV_STAT_VALUES_MAX] = {
      "write_io_errs", "read_io_errs", "flush_io_errs", "corruption_errs", "generation_errs"};
  for (uint64_t id = 1; id <= info.max_id; ++id) {
    btrfs_ioctl_get_dev_stats stats{};
    stats.devid = id;
    stats.nr_items = BTRFS_DEV_STAT_VALUES_MAX;
    if (::ioctl(fd.get(), BTRFS_IOC_GET_DEV_STATS, &stats) != 0) {
      if (errno == ENODEV) continue;  // a removed device's id
      return unreadable("BTRFS_IOC_GET_DEV_STATS of device " + std::to_string(id));
    }
    std::string counted;
    for (uint64_t i = 0; i < std::min<uint64_t>(stats.nr_items, BTRFS_DEV_STAT_VALUES_MAX); ++i) {
      if (stats.values[i] == 0) continue;
      counted += (counted.empty() ? "" : ", ") + std::string(kNames[i]) + " " +
                 std::to_string(stats.values[i]);
    }
    if (!counted.empty()) {
      return {"device " + std::to_string(id),
              "pool " + pool_ + ": its device " + std::to_string(id) + " counted errors (" +
                  counted + "; btrfs device stats " + pool_ +
                  "): check or replace the device, then reset them with btrfs device stats -z"};
    }
  }
  return {};
}

}  // namespace keel::storage
