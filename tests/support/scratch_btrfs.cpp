#include "tests/support/scratch_btrfs.h"

#include <fcntl.h>
#include <linux/loop.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <stdexcept>

#include "common/child_process.h"
#include "common/error.h"

namespace keel::testing {

ScratchBtrfs::ScratchBtrfs(uint64_t bytes, const std::string& backing_dir) {
  try {
    std::string file = backing_dir + "/keel-btrfs-XXXXXX";
    UniqueFd backing(::mkostemp(file.data(), O_CLOEXEC));
    if (!backing.valid()) throw_errno("creating a Btrfs backing file under " + backing_dir);
    backing_ = file;
    if (::ftruncate(backing.get(), static_cast<off_t>(bytes)) != 0)
      throw_errno("sizing " + backing_);

    UniqueFd control(::open("/dev/loop-control", O_RDWR | O_CLOEXEC));
    if (!control.valid()) throw_errno("opening /dev/loop-control");
    // Another process may take the free device between the two calls: try again.
    for (int attempt = 0; attempt < 10 && !loop_.valid(); ++attempt) {
      const int index = ::ioctl(control.get(), LOOP_CTL_GET_FREE);
      if (index < 0) throw_errno("LOOP_CTL_GET_FREE");
      loop_path_ = "/dev/loop" + std::to_string(index);
      UniqueFd loop(::open(loop_path_.c_str(), O_RDWR | O_CLOEXEC));
      if (!loop.valid()) throw_errno("opening " + loop_path_);
      loop_config config{};
      config.fd = static_cast<uint32_t>(backing.get());
      config.info.lo_flags = LO_FLAGS_AUTOCLEAR;
      if (::ioctl(loop.get(), LOOP_CONFIGURE, &config) == 0) {
        loop_ = std::move(loop);
      } else if (errno != EBUSY) {
        throw_errno("LOOP_CONFIGURE " + loop_path_);
      }
    }
    if (!loop_.valid()) throw std::runtime_error("no free loop device after 10 tries");

    auto mkfs = run_command({"mkfs.btrfs", "-q", "-f", loop_path_}, std::chrono::seconds(60));
    if (mkfs.exit_code != 0) {
      throw std::runtime_error("mkfs.btrfs " + loop_path_ + " failed (" +
                               std::to_string(mkfs.exit_code) + "): " + mkfs.err);
    }
    char dir[] = "/var/tmp/keel-btrfs-mnt-XXXXXX";
    if (::mkdtemp(dir) == nullptr) throw_errno("creating a mount point under /var/tmp");
    mount_point_ = dir;
    if (::mount(loop_path_.c_str(), mount_point_.c_str(), "btrfs", 0, nullptr) != 0)
      throw_errno("mounting " + loop_path_ + " on " + mount_point_);
    mounted_ = true;
  } catch (...) {
    release();
    throw;
  }
}

ScratchBtrfs::~ScratchBtrfs() {
  release();
}

void ScratchBtrfs::remount(bool read_only) {
  const unsigned long flags = MS_REMOUNT | (read_only ? MS_RDONLY : 0);
  if (::mount(loop_path_.c_str(), mount_point_.c_str(), "btrfs", flags, nullptr) != 0)
    throw_errno("remounting " + mount_point_);
}

void ScratchBtrfs::release() noexcept {
  if (mounted_ && ::umount2(mount_point_.c_str(), 0) != 0) {
    // Something still holds it (a failed test's open file): detach lazily.
    ::umount2(mount_point_.c_str(), MNT_DETACH);
  }
  mounted_ = false;
  if (!mount_point_.empty()) ::rmdir(mount_point_.c_str());
  if (loop_.valid()) ::ioctl(loop_.get(), LOOP_CLR_FD, 0);
  loop_.reset();
  if (!backing_.empty()) ::unlink(backing_.c_str());
}

}  // namespace keel::testing
