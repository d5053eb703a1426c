// The pool on a real Btrfs volume (a loop device this test makes and
// removes): init, open, its refusals, and the subvolume operations images
// and VMs are made of. Label "storage"; needs root, no KVM.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "common/error.h"
#include "storage/btrfs_subvolume.h"
#include "storage/pool.h"
#include "tests/support/input_error.h"
#include "tests/support/scratch_btrfs.h"

namespace keel::testing {
namespace {

namespace fs = std::filesystem;
using storage::Pool;

std::vector<std::string> entries(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename());
  std::sort(names.begin(), names.end());
  return names;
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// A directory on tmpfs, removed with what is in it.
struct TmpfsDir {
  std::string path;
  TmpfsDir() {
    char name[] = "/dev/shm/keel-pool-test-XXXXXX";
    if (::mkdtemp(name) == nullptr) throw std::system_error(errno, std::generic_category(), name);
    path = name;
  }
  ~TmpfsDir() {
    std::error_code ignored;
    fs::remove_all(path, ignored);
  }
};

class StoragePool : public ::testing::Test {
 protected:
  ScratchBtrfs volume_;
  fs::path root() const { return volume_.mount_point(); }
};

TEST_F(StoragePool, InitMakesAPoolThatOpenFinds) {
  const fs::path dir = root() / "pool";
  Pool made = Pool::init(dir);
  EXPECT_EQ(made.path(), dir);
  EXPECT_EQ(entries(dir), (std::vector<std::string>{"images", "keel-pool", "vms"}));
  EXPECT_EQ(read_file(dir / "keel-pool"), "keel pool format 1\n");

  Pool opened = Pool::open(dir.string() + "/");
  EXPECT_EQ(opened.path(), dir);
  EXPECT_EQ(opened.images(), dir / "images");
  EXPECT_EQ(opened.vms(), dir / "vms");
  EXPECT_NE(input_error([&] { Pool::init(dir); }).find("is a Keel pool already"),
            std::string::npos);
}

TEST_F(StoragePool, InitRefusesADirectoryNotOnBtrfs) {
  TmpfsDir shm;
  const std::string tmp = shm.path;
  const std::string message = input_error([&] { Pool::init(tmp); });
  EXPECT_NE(message.find("is on tmpfs, not Btrfs"), std::string::npos) << message;
  EXPECT_TRUE(entries(tmp).empty()) << "a refused init made something";
  const std::string below = input_error([&] { Pool::init(tmp + "/pool"); });
  EXPECT_NE(below.find("not Btrfs"), std::string::npos) << below;
  EXPECT_FALSE(fs::exists(tmp + "/pool"));
}

TEST_F(StoragePool, InitRefusesAReadOnlyMountAndWhatIsNotADirectory) {
  volume_.remount(true);
  const std::string message = input_error([&] { Pool::init(root()); });
  volume_.remount(false);
  EXPECT_NE(message.find("read-only mount"), std::string::npos) << message;

  std::ofstream(root() / "file") << "x";
  const std::string file = input_error([&] { Pool::init(root() / "file"); });
  EXPECT_NE(file.find("is not a directory"), std::string::npos) << file;
  const std::string parent = input_error([&] { Pool::init(root() / "no" / "pool"); });
  EXPECT_NE(parent.find("is not a directory"), std::string::npos) << parent;
}

TEST_F(StoragePool, InitRefusesADirectoryThatHoldsImagesOrVmsAlready) {
  fs::create_directory(root() / "vms");
  const std::string message = input_error([&] { Pool::init(root()); });
  EXPECT_NE(message.find("holds vms already"), std::string::npos) << message;
  EXPECT_EQ(entries(root()), (std::vector<std::string>{"vms"}));
}

TEST_F(StoragePool, AFailedInitLeavesNothingBehind) {
  // The marker's temporary name taken by a directory: init fails after
  // making images/ and vms/, and takes them away again (not what it did
  // not make).
  const fs::path dir = root() / "pool";
  fs::create_directory(dir);
  fs::create_directory(dir / "keel-pool.tmp");
  EXPECT_THROW(Pool::init(dir), std::system_error);
  EXPECT_EQ(entries(dir), (std::vector<std::string>{"keel-pool.tmp"}));
  EXPECT_THROW(Pool::open(dir), InputError);
}

TEST_F(StoragePool, OpenRefusesWhatIsNotAPoolOfThisFormat) {
  const fs::path dir = root() / "pool";
  EXPECT_NE(input_error([&] { Pool::open(dir); }).find("no such directory"), std::string::npos);
  fs::create_directory(dir);
  EXPECT_NE(input_error([&] { Pool::open(dir); }).find("is not a Keel pool"), std::string::npos);
  Pool::init(root() / "other");
  std::ofstream(root() / "other" / "keel-pool", std::ios::trunc) << "keel pool format 2\n";
  EXPECT_NE(input_error([&] { Pool::open(root() / "other"); }).find("has format 2"),
            std::string::npos);
  std::ofstream(root() / "other" / "keel-pool", std::ios::trunc) << "keel pool format 1";
  EXPECT_NE(input_error([&] { Pool::open(root() / "other"); }).find("not a Keel pool marker"),
            std::string::npos);
  std::ofstream(root() / "other" / "keel-pool", std::ios::trunc) << "keel pool format 1\n";
  fs::remove(root() / "other" / "vms");
  EXPECT_NE(input_error([&] { Pool::open(root() / "other"); }).find("has lost its vms"),
            std::string::npos);
}

// What images and VMs are made of: a read-only snapshot shares the image's
// data, a writable snapshot of it diverges, and deleting a VM takes its own
// snapshots with it.
TEST_F(StoragePool, SubvolumesSnapshotsAndRecursiveDelete) {
  const std::string image = (root() / "image").string();
  EXPECT_FALSE(storage::is_subvolume(root() / "nothing-here"));
  storage::create_subvolume(image);
  EXPECT_TRUE(storage::is_subvolume(image));
  std::ofstream(image + "/disk.raw") << "installed system";
  storage::set_subvolume_read_only(image, true);
  EXPECT_TRUE(storage::subvolume_read_only(image));

  const std::string vm = (root() / "vm").string();
  storage::snapshot_subvolume(image, vm, false);
  EXPECT_FALSE(storage::subvolume_read_only(vm));
  std::ofstream(vm + "/disk.raw", std::ios::app) << ", then changed";
  EXPECT_EQ(read_file(vm + "/disk.raw"), "installed system, then changed");
  EXPECT_EQ(read_file(image + "/disk.raw"), "installed system");

  storage::snapshot_subvolume(vm, vm + "/snap-1", true);
  EXPECT_TRUE(storage::subvolume_read_only(vm + "/snap-1"));
  EXPECT_THROW(storage::snapshot_subvolume(vm, vm + "/snap-1", true), std::runtime_error);
  storage::delete_subvolume(vm);
  EXPECT_FALSE(fs::exists(vm));
  EXPECT_TRUE(storage::is_subvolume(image));
}

}  // namespace
}  // namespace keel::testing
