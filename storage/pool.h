// A pool: a directory on a Btrfs volume that keeps one host's system images
// and VMs (raw disk files inside subvolumes, see DESIGN.md).
//   PATH/keel-pool     "keel pool format 1": what makes PATH a pool
//   PATH/images/NAME   one read-only subvolume per image
//   PATH/vms/NAME      one subvolume per VM (its snapshots inside it)
// keelctl and, later, the cluster agent both work through this library.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace keel::storage {

// Names of images, VMs and snapshots (they name directories and, by
// default, a VM's hostname): 1 to 63 of a-z, 0-9, '-', '.' and '_',
// starting with a letter or a digit. InputError naming `kind` otherwise.
void check_pool_name(const std::string& kind, const std::string& name);

// The names in `dir` (a pool's images/ or vms/, a VM's snapshots/),
// sorted, without the hidden ones: those are imports, creates and deletes
// under way.
std::vector<std::string> pool_entry_names(const std::filesystem::path& dir);

class Pool {
 public:
  static constexpr int kFormat = 1;

  // Makes PATH a pool; PATH is created if its parent exists. InputError
  // (naming what is wrong) when PATH is not a directory, not on Btrfs, on a
  // read-only mount or not writable here, already a pool, or holds an
  // images/ or vms/ of its own. A failure leaves nothing it made behind.
  static Pool init(const std::string& path);
  // InputError when PATH is not a pool, or one of a format this code does
  // not read.
  static Pool open(const std::string& path);

  const std::filesystem::path& path() const { return path_; }
  // What the volume has free for this user; the free-space checks before
  // an import or a create.
  uint64_t available_bytes() const;
  // InputError unless the volume has `needed` bytes free beyond a margin
  // for Btrfs's metadata, naming `what` needs them.
  void require_space(uint64_t needed, const std::string& what) const;
  std::filesystem::path images() const { return path_ / "images"; }
  std::filesystem::path vms() const { return path_ / "vms"; }

 private:
  explicit Pool(std::filesystem::path path) : path_(std::move(path)) {}

  std::filesystem::path path_;
};

}  // namespace keel::storage
