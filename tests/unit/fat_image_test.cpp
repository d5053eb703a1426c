// The seed disk's FAT16 image, checked by Debian's own FAT tools: fsck.fat
// finds nothing wrong, mtools reads the files back under their long names,
// blkid sees the label cloud-init looks for.
#include "storage/fat_image.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <string>

#include "common/child_process.h"
#include "common/error.h"

namespace keel::storage {
namespace {

// The image in a file under /dev/shm, removed at the end.
struct ImageFile {
  std::string path;
  explicit ImageFile(const std::vector<uint8_t>& bytes) {
    char name[] = "/dev/shm/keel-fat-test-XXXXXX";
    int fd = ::mkstemp(name);
    if (fd < 0) throw std::system_error(errno, std::generic_category(), name);
    ::close(fd);
    path = name;
    std::ofstream(path, std::ios::binary)
        .write(reinterpret_cast<const char*>(bytes.data()),
               static_cast<std::streamsize>(bytes.size()));
  }
  ~ImageFile() { ::unlink(path.c_str()); }
};

CommandResult run(const std::vector<std::string>& argv) {
  auto r = run_command(argv, std::chrono::seconds(30));
  if (r.exit_code == 127) ADD_FAILURE() << argv[0] << " is not installed (tools/setup installs it)";
  return r;
}

TEST(FatImage, DebiansToolsReadTheFilesUnderTheirLongNames) {
  std::string big(3000, 'x');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>('a' + i % 26);
  const std::vector<FatFile> files = {
      {"meta-data", "instance-id: keel-test\nlocal-hostname: web1\n"},
      {"user-data", "#cloud-config\n"},
      {"network-config", big},  // 14 characters: two long-name entries; 6 clusters
      {"empty", ""},
      {"a-name-of-exactly-26-chars", "26\n"}};
  ImageFile image(make_fat_image("cidata", files));

  auto fsck = run({"fsck.fat", "-n", "-v", image.path});
  EXPECT_EQ(fsck.exit_code, 0) << fsck.out << fsck.err;

  for (const auto& f : files) {
    auto type = run({"mtype", "-i", image.path, "::" + f.name});
    EXPECT_EQ(type.exit_code, 0) << f.name << ": " << type.err;
    EXPECT_EQ(type.out, f.data) << f.name;
  }
  auto label = run({"blkid", "-p", "-o", "value", "-s", "LABEL", image.path});
  EXPECT_EQ(label.out, "cidata\n") << label.err;
  auto type = run({"blkid", "-p", "-o", "value", "-s", "TYPE", image.path});
  EXPECT_EQ(type.out, "vfat\n") << type.err;
  auto version = run({"blkid", "-p", "-o", "value", "-s", "VERSION", image.path});
  EXPECT_EQ(version.out, "FAT16\n") << version.err;
}

TEST(FatImage, SizeFollowsTheFilesWithinLimits) {
  EXPECT_EQ(make_fat_image("cidata", {}).size() % 512, 0u);
  EXPECT_GE(make_fat_image("cidata", {}).size(), 2u << 20);
  const auto large = make_fat_image("cidata", {{"user-data", std::string(10 << 20, 'u')}});
  EXPECT_GT(large.size(), 10u << 20);
  ImageFile image(large);
  auto fsck = run({"fsck.fat", "-n", image.path});
  EXPECT_EQ(fsck.exit_code, 0) << fsck.out << fsck.err;
}

std::string refusal(const std::string& label, const std::vector<FatFile>& files) {
  try {
    make_fat_image(label, files);
  } catch (const InputError& e) {
    return e.what();
  }
  return "(accepted)";
}

TEST(FatImage, RefusesWhatFatCannotHold) {
  EXPECT_NE(refusal("cidata", {{"a/b", ""}}).find("'a/b' is not allowed"), std::string::npos);
  EXPECT_NE(refusal("cidata", {{"", ""}}).find("not allowed"), std::string::npos);
  EXPECT_NE(refusal("cidata", {{"x", ""}, {"X", ""}}).find("there twice"), std::string::npos);
  EXPECT_NE(refusal("a-label-too-long", {}).find("not 1 to 11"), std::string::npos);
  EXPECT_NE(refusal("cidata", {{"user-data", std::string(40 << 20, 'u')}}).find("32 MiB"),
            std::string::npos);
}

}  // namespace
}  // namespace keel::storage
