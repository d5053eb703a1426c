// What makes a pool unhealthy for the agent (storage/pool_health.h), on
// real Btrfs volumes (loop devices this test makes and removes): short of
// space, remounted read-only, and a device whose writes fail (its backing
// file on a tmpfs too small for it: the loop device answers EIO, as a dying
// disk does, and Btrfs turns itself read-only). Label "storage"; needs
// root, no KVM.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/unique_fd.h"
#include "storage/pool_health.h"
#include "tests/support/scratch_btrfs.h"

namespace keel::testing {
namespace {

namespace fs = std::filesystem;
using storage::PoolHealth;

uint64_t free_bytes(const std::string& path) {
  struct statvfs s {};
  if (::statvfs(path.c_str(), &s) != 0) throw_errno("statvfs " + path);
  return uint64_t{s.f_bavail} * s.f_frsize;
}

// Writes `bytes` of data into `path` and syncs the filesystem; the first
// error (a full or failing volume) stops it, and is returned.
int write_and_sync(const std::string& path, uint64_t bytes) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
  if (!fd.valid()) return errno;
  std::vector<char> block(1 << 20, 'k');
  for (uint64_t done = 0; done < bytes; done += block.size()) {
    if (::write(fd.get(), block.data(), block.size()) < 0) return errno;
  }
  if (::syncfs(fd.get()) != 0) return errno;
  return 0;
}

// A tmpfs of `bytes`, unmounted (lazily, the loop device on a file in it
// lets go on its own) on destruction.
struct SmallTmpfs {
  std::string path;
  explicit SmallTmpfs(uint64_t bytes) {
    char dir[] = "/var/tmp/keel-small-tmpfs-XXXXXX";
    if (::mkdtemp(dir) == nullptr) throw_errno("mkdtemp under /var/tmp");
    path = dir;
    const std::string options = "size=" + std::to_string(bytes);
    if (::mount("tmpfs", path.c_str(), "tmpfs", 0, options.c_str()) != 0) {
      ::rmdir(path.c_str());
      throw_errno("mounting a tmpfs on " + path);
    }
  }
  ~SmallTmpfs() {
    ::umount2(path.c_str(), MNT_DETACH);
    ::rmdir(path.c_str());
  }
};

TEST(PoolHealth, AFreshPoolIsHealthyAndItsFloorIsFivePercentUpTo1G) {
  ScratchBtrfs volume;
  PoolHealth health(volume.mount_point(), 0);
  EXPECT_EQ(health.check().text, "");
  EXPECT_EQ(health.min_free_for(uint64_t{256} << 20), (uint64_t{256} << 20) / 20);
  EXPECT_EQ(health.min_free_for(uint64_t{1} << 40), uint64_t{1} << 30);
  EXPECT_EQ(PoolHealth(volume.mount_point(), 12345).min_free_for(uint64_t{1} << 40), 12345u);
}

// Short of space under 64 MiB free, and healthy again only from 80 MiB
// (a pool hovering at its floor does not flap).
TEST(PoolHealth, ShortOfSpaceUntilTheFileGoes) {
  ScratchBtrfs volume;
  const std::string pool = volume.mount_point();
  PoolHealth health(pool, uint64_t{64} << 20);
  ASSERT_EQ(health.check().kind, "");
  const uint64_t before = free_bytes(pool);
  ASSERT_GT(before, uint64_t{96} << 20);
  // Down to about 72 MiB free, then 32 (two files: Btrfs frees an extent
  // only whole, so a truncated file would give back less).
  const std::string filler = pool + "/filler", more = pool + "/more";
  ASSERT_EQ(write_and_sync(filler, before - (uint64_t{72} << 20)), 0);
  ASSERT_EQ(write_and_sync(more, uint64_t{40} << 20), 0);
  UniqueFd dir(::open(pool.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  PoolHealth::Problem problem = health.check();
  EXPECT_EQ(problem.kind, "space");
  EXPECT_NE(problem.text.find("pool " + pool + " has "), std::string::npos) << problem.text;
  EXPECT_NE(problem.text.find("free, under its floor of 64 MiB (keel-agent --pool-min-free; "
                              "healthy again from 80 MiB)"),
            std::string::npos)
      << problem.text;
  // About 72 MiB free: above the floor, under the way back.
  fs::remove(more);
  ASSERT_EQ(::syncfs(dir.get()), 0);
  ASSERT_GT(free_bytes(pool), uint64_t{64} << 20);
  ASSERT_LT(free_bytes(pool), uint64_t{80} << 20);
  EXPECT_EQ(health.check().kind, "space");
  fs::remove(filler);
  ASSERT_EQ(::syncfs(dir.get()), 0);
  EXPECT_EQ(health.check().text, "");
}

TEST(PoolHealth, ReadOnlyUntilRemountedReadWrite) {
  ScratchBtrfs volume;
  PoolHealth health(volume.mount_point(), 0);
  volume.remount(true);
  const std::string problem = health.check().text;
  EXPECT_NE(problem.find("pool " + volume.mount_point() + " is read-only"), std::string::npos)
      << problem;
  volume.remount(false);
  EXPECT_EQ(health.check().text, "");
}

TEST(PoolHealth, ADeviceWhoseWritesFailMakesItUnhealthy) {
  SmallTmpfs small(uint64_t{48} << 20);
  ScratchBtrfs volume(uint64_t{256} << 20, small.path);
  PoolHealth health(volume.mount_point(), 0);
  ASSERT_EQ(health.check().text, "");
  // More than the tmpfs holds: the loop device's writes fail with EIO.
  write_and_sync(volume.mount_point() + "/doomed", uint64_t{96} << 20);
  const std::string problem = health.check().text;
  EXPECT_NE(problem.find("pool " + volume.mount_point()), std::string::npos) << problem;
  // Btrfs turned itself read-only (and may have counted the errors too).
  EXPECT_TRUE(problem.find("is read-only") != std::string::npos ||
              problem.find("counted errors") != std::string::npos)
      << problem;
}

TEST(PoolHealth, APathThatIsNoLongerThereIsUnhealthy) {
  const std::string gone = "/var/tmp/keel-no-such-pool-" + std::to_string(::getpid());
  const std::string problem = PoolHealth(gone, 0).check().text;
  EXPECT_NE(problem.find("pool " + gone + " cannot be read: No such file or directory"),
            std::string::npos)
      << problem;
}

}  // namespace
}  // namespace keel::testing
