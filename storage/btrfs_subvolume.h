// What a pool needs of Btrfs, through libbtrfsutil: subvolumes, read-only
// snapshots of them, and the check that a path is on Btrfs at all. Errors
// are std::system_error-like runtime errors naming the path and what
// libbtrfsutil and errno said.
#pragma once

#include <cstdint>
#include <string>

namespace keel::storage {

// Throws InputError naming the filesystem found when `path` is not on Btrfs.
void require_btrfs(const std::string& path, const std::string& what);

bool is_subvolume(const std::string& path);
void create_subvolume(const std::string& path);
// A snapshot of `source` at `path` (which must not exist): shares every
// extent with it, whatever its size.
void snapshot_subvolume(const std::string& source, const std::string& path, bool read_only);
// With the subvolumes below it (a VM's snapshots).
void delete_subvolume(const std::string& path);
// Files made in `dir` from now on are nodatacow (FS_NOCOW_FL, chattr +C):
// written in place, without Btrfs's data checksums (see the pool's
// choice in README, "Pool, images and VMs").
void set_nodatacow_for_new_files(const std::string& dir);
bool is_nodatacow(const std::string& path);

// When the subvolume (or snapshot) was made, seconds since the epoch.
int64_t subvolume_created(const std::string& path);
bool subvolume_read_only(const std::string& path);
void set_subvolume_read_only(const std::string& path, bool read_only);

}  // namespace keel::storage
