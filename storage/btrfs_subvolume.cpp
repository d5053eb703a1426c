#include "storage/btrfs_subvolume.h"

#include <btrfsutil.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/magic.h>
#include <sys/ioctl.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "common/error.h"
#include "common/hex.h"
#include "common/unique_fd.h"

namespace keel::storage {

namespace {

// `err`: errno right after the libbtrfsutil call (it leaves the failed
// system call's there), read before anything else can change it.
[[noreturn]] void fail(btrfs_util_error error, int err, const std::string& what) {
  std::string message = what + ": " + btrfs_util_strerror(error);
  if (err != 0) message += std::string(" (") + std::strerror(err) + ")";
  throw std::runtime_error(message);
}

std::string filesystem_name(uint64_t magic) {
  switch (magic) {
    case EXT4_SUPER_MAGIC:  // ext2, ext3 and ext4 share it
      return "ext4";
    case TMPFS_MAGIC:
      return "tmpfs";
    case XFS_SUPER_MAGIC:
      return "xfs";
    case OVERLAYFS_SUPER_MAGIC:
      return "overlayfs";
    case NFS_SUPER_MAGIC:
      return "nfs";
    case V9FS_MAGIC:
      return "9p";
    default:
      return "filesystem type " + hex(magic);
  }
}

}  // namespace

void require_btrfs(const std::string& path, const std::string& what) {
  struct statfs fs {};
  if (::statfs(path.c_str(), &fs) != 0) throw_errno(what + " " + path);
  const auto magic = static_cast<uint64_t>(fs.f_type);
  if (magic != BTRFS_SUPER_MAGIC) {
    throw InputError(what + " " + path + " is on " + filesystem_name(magic) +
                     ", not Btrfs (a pool's images and VMs are Btrfs subvolumes)");
  }
}

bool is_subvolume(const std::string& path) {
  errno = 0;
  const btrfs_util_error error = btrfs_util_is_subvolume(path.c_str());
  const int err = errno;
  if (error == BTRFS_UTIL_OK) return true;
  if (error == BTRFS_UTIL_ERROR_NOT_SUBVOLUME || error == BTRFS_UTIL_ERROR_NOT_BTRFS) return false;
  const bool missing =
      error == BTRFS_UTIL_ERROR_STAT_FAILED || error == BTRFS_UTIL_ERROR_STATFS_FAILED;
  if (missing && err == ENOENT) return false;
  fail(error, err, "is " + path + " a subvolume");
}

void create_subvolume(const std::string& path) {
  errno = 0;
  const btrfs_util_error error = btrfs_util_create_subvolume(path.c_str(), 0, nullptr, nullptr);
  const int err = errno;
  if (error != BTRFS_UTIL_OK) fail(error, err, "creating subvolume " + path);
}

void snapshot_subvolume(const std::string& source, const std::string& path, bool read_only) {
  errno = 0;
  const int flags = read_only ? BTRFS_UTIL_CREATE_SNAPSHOT_READ_ONLY : 0;
  const btrfs_util_error error =
      btrfs_util_create_snapshot(source.c_str(), path.c_str(), flags, nullptr, nullptr);
  const int err = errno;
  if (error != BTRFS_UTIL_OK) fail(error, err, "snapshot of " + source + " at " + path);
}

void delete_subvolume(const std::string& path) {
  errno = 0;
  const btrfs_util_error error =
      btrfs_util_delete_subvolume(path.c_str(), BTRFS_UTIL_DELETE_SUBVOLUME_RECURSIVE);
  const int err = errno;
  if (error != BTRFS_UTIL_OK) fail(error, err, "deleting subvolume " + path);
}

namespace {

unsigned inode_flags(const std::string& path, int& fd_out) {
  fd_out = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd_out < 0) throw_errno("opening " + path);
  unsigned flags = 0;
  if (::ioctl(fd_out, FS_IOC_GETFLAGS, &flags) != 0) {
    const int err = errno;
    ::close(fd_out);
    throw_errno(err, "reading the inode flags of " + path);
  }
  return flags;
}

}  // namespace

void set_nodatacow_for_new_files(const std::string& dir) {
  int fd = -1;
  unsigned flags = inode_flags(dir, fd);
  UniqueFd owned(fd);
  flags |= FS_NOCOW_FL;
  if (::ioctl(owned.get(), FS_IOC_SETFLAGS, &flags) != 0)
    throw_errno("setting nodatacow on " + dir);
}

bool is_nodatacow(const std::string& path) {
  int fd = -1;
  const unsigned flags = inode_flags(path, fd);
  UniqueFd owned(fd);
  return (flags & FS_NOCOW_FL) != 0;
}

int64_t subvolume_created(const std::string& path) {
  errno = 0;
  struct btrfs_util_subvolume_info info {};
  const btrfs_util_error error = btrfs_util_subvolume_info(path.c_str(), 0, &info);
  const int err = errno;
  if (error != BTRFS_UTIL_OK) fail(error, err, "reading subvolume " + path);
  return info.otime.tv_sec;
}

bool subvolume_read_only(const std::string& path) {
  errno = 0;
  bool read_only = false;
  const btrfs_util_error error = btrfs_util_get_subvolume_read_only(path.c_str(), &read_only);
  const int err = errno;
  if (error != BTRFS_UTIL_OK) fail(error, err, "reading the read-only flag of " + path);
  return read_only;
}

void set_subvolume_read_only(const std::string& path, bool read_only) {
  errno = 0;
  const btrfs_util_error error = btrfs_util_set_subvolume_read_only(path.c_str(), read_only);
  const int err = errno;
  if (error != BTRFS_UTIL_OK) fail(error, err, "setting the read-only flag of " + path);
}

}  // namespace keel::storage
