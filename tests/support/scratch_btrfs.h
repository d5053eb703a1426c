// A Btrfs volume of its own for a test: a sparse file under /var/tmp on a
// loop device, formatted with mkfs.btrfs and mounted on a fresh directory.
// Unmounted, detached and removed on destruction, also when the test fails.
// Needs root (loop devices, mount).
#pragma once

#include <cstdint>
#include <string>

#include "common/unique_fd.h"

namespace keel::testing {

class ScratchBtrfs {
 public:
  // The backing file (sparse) in `backing_dir`.
  explicit ScratchBtrfs(uint64_t bytes = uint64_t{256} << 20,
                        const std::string& backing_dir = "/var/tmp");
  ~ScratchBtrfs();
  ScratchBtrfs(const ScratchBtrfs&) = delete;
  ScratchBtrfs& operator=(const ScratchBtrfs&) = delete;

  const std::string& mount_point() const { return mount_point_; }
  // Remounts read-only or read-write again.
  void remount(bool read_only);

 private:
  void release() noexcept;

  std::string backing_;
  std::string mount_point_;
  UniqueFd loop_;
  std::string loop_path_;
  bool mounted_ = false;
};

}  // namespace keel::testing
