// Where snapshots may be written (vmm/state/snapshot_root.h): a client
// names a directory, and nothing it names, nor any link planted in the
// way, writes outside the root or over an existing file.
#include "vmm/state/snapshot_root.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>

#include "common/error.h"
#include "tests/support/input_error.h"
#include "tests/support/scratch_dir.h"
#include "vmm/state/snapshot_state_file.h"

namespace keel {
namespace {

namespace fs = std::filesystem;
using testing::input_error;
using testing::ScratchDir;

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

struct Planted : ::testing::Test {
  ScratchDir scratch{"keel-snapshot-root-test"};
  std::string root = scratch / "root";
  std::string victim = scratch / "victim";  // outside the root
  void SetUp() override {
    fs::create_directory(root);
    fs::create_directory(victim);
    std::ofstream(victim + "/passwd") << "root:x:0:0\n";
  }
};

TEST_F(Planted, DirectoriesBelowTheRootAreMadePrivateByRelativeOrAbsoluteName) {
  const SnapshotRoot r = SnapshotRoot::open(root);
  EXPECT_TRUE(r.make_directory("a/b").valid());
  EXPECT_TRUE(r.make_directory(root + "/a/./c/../d").valid());
  EXPECT_TRUE(fs::is_directory(root + "/a/b"));
  EXPECT_TRUE(fs::is_directory(root + "/a/d"));
  struct stat st {};
  ASSERT_EQ(::stat((root + "/a/b").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0700u);
  EXPECT_TRUE(r.make_directory("a/b").valid()) << "an existing directory is fine";
}

TEST_F(Planted, NamesOutsideTheRootAreRefused) {
  const SnapshotRoot r = SnapshotRoot::open(root);
  for (const std::string& name : {std::string("../victim"), std::string("a/../../victim"), victim,
                                  root, root + "/", std::string("."), std::string("")}) {
    EXPECT_NE(input_error([&] { r.make_directory(name); }).find("not below the snapshot root"),
              std::string::npos)
        << "'" << name << "'";
  }
  EXPECT_FALSE(fs::exists(victim + "/memory"));
}

TEST_F(Planted, ALinkPlantedOnTheWayIsNotFollowed) {
  fs::create_directory_symlink(victim, root + "/snap");
  fs::create_directory(root + "/deep");
  fs::create_directory_symlink(victim, root + "/deep/er");
  const SnapshotRoot r = SnapshotRoot::open(root);
  EXPECT_NE(input_error([&] { r.make_directory("snap"); }).find("snap is a symbolic link"),
            std::string::npos);
  EXPECT_NE(input_error([&] { r.make_directory("deep/er/x"); }).find("er is a symbolic link"),
            std::string::npos);
  EXPECT_FALSE(fs::exists(victim + "/x"));
}

TEST_F(Planted, FilesAreCreatedNewNeverThroughALink) {
  const SnapshotRoot r = SnapshotRoot::open(root);
  const UniqueFd dir = r.make_directory("snap");
  fs::create_symlink(victim + "/passwd", root + "/snap/memory");
  EXPECT_NE(input_error([&] {
              create_snapshot_file(dir.get(), "memory", "snapshot directory snap");
            }).find("already holds a file named memory"),
            std::string::npos);
  // The state file: its temporary name and its final name both planted.
  fs::create_symlink(victim + "/passwd", root + "/snap/state.partial");
  fs::create_symlink(victim + "/passwd", root + "/snap/state");
  EXPECT_NE(input_error([&] {
              write_state_file(dir.get(), "state", "payload", "snap");
            }).find("snap already holds a snapshot"),
            std::string::npos);
  EXPECT_EQ(slurp(victim + "/passwd"), "root:x:0:0\n") << "the link's target was written";
  EXPECT_TRUE(fs::is_symlink(root + "/snap/state"));
  // Without the planted state, the state file is written whole, 0600.
  fs::remove(root + "/snap/state");
  write_state_file(dir.get(), "state", "payload", "snap");
  EXPECT_EQ(read_state_file(root + "/snap/state"), "payload");
  struct stat st {};
  ASSERT_EQ(::lstat((root + "/snap/state").c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_FALSE(fs::exists(root + "/snap/state.partial"));
}

// A restore reads only regular files: a FIFO named `state` is refused at
// once instead of waiting for a writer forever.
TEST_F(Planted, ARestoreOpensOnlyRegularFiles) {
  ASSERT_EQ(::mkfifo((root + "/state").c_str(), 0600), 0);
  const auto begin = std::chrono::steady_clock::now();
  EXPECT_NE(input_error([&] { read_state_file(root + "/state"); }).find("is not a regular file"),
            std::string::npos);
  EXPECT_LT(std::chrono::steady_clock::now() - begin, std::chrono::seconds(5));
  EXPECT_NE(input_error([&] {
              open_snapshot_file(root, "snapshot memory file");
            }).find("is not a regular file"),
            std::string::npos);
  EXPECT_NE(input_error([&] {
              open_snapshot_file(root + "/none", "snapshot memory file");
            }).find("no snapshot memory file"),
            std::string::npos);
}

TEST_F(Planted, TheRootMustBeADirectory) {
  EXPECT_NE(input_error([&] { SnapshotRoot::open(scratch / "missing"); }).find("snapshot root"),
            std::string::npos);
  EXPECT_NE(input_error([&] { SnapshotRoot::open(victim + "/passwd"); }).find("not a directory"),
            std::string::npos);
}

}  // namespace
}  // namespace keel
