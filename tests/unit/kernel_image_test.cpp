#include "vmm/boot/kernel_image.h"

#include <gtest/gtest.h>

#include "common/error.h"
#include "tests/support/boot_images.h"

namespace keel {
namespace {

std::string error_of(std::vector<uint8_t> file) {
  try {
    parse_kernel_image(std::move(file), "k");
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

TEST(KernelImage, RecognisesBzImage) {
  auto image = parse_kernel_image(testing::make_bzimage(8192), "k");
  EXPECT_EQ(image.format, KernelImage::Format::kLinuxBzImage);
  EXPECT_EQ(image.protocol_version, 0x020f);
  EXPECT_EQ(image.setup_size, 1024u);
  EXPECT_EQ(image.cmdline_size, 255u);
  EXPECT_EQ(image.init_size, 0x10000u);
}

TEST(KernelImage, RuntimeStartFollowsBootProtocol) {
  // Debian's kernels: relocatable, pref_address 16 MiB, 2 MiB alignment.
  auto relocatable =
      parse_kernel_image(testing::make_bzimage(4096, 0x020f, XLF_KERNEL_64, 0x1000000, true), "k");
  EXPECT_EQ(relocatable.runtime_start, 0x1000000u);
  auto low_pref =
      parse_kernel_image(testing::make_bzimage(4096, 0x020f, XLF_KERNEL_64, 0x100000, true), "k");
  EXPECT_EQ(low_pref.runtime_start, 0x200000u) << "1 MiB aligned up to 2 MiB";
  auto fixed =
      parse_kernel_image(testing::make_bzimage(4096, 0x020f, XLF_KERNEL_64, 0x400000, false), "k");
  EXPECT_EQ(fixed.runtime_start, 0x400000u);
}

TEST(KernelImage, InitSizeCoversThePayload) {
  auto image = parse_kernel_image(testing::make_bzimage(0x20000), "k");
  EXPECT_EQ(image.init_size, 0x20000u);
}

TEST(KernelImage, RefusesOldOr32BitOnlyBzImage) {
  EXPECT_NE(error_of(testing::make_bzimage(4096, 0x020b)).find("too old"), std::string::npos);
  EXPECT_NE(error_of(testing::make_bzimage(4096, 0x020f, 0)).find("no 64-bit entry"),
            std::string::npos);
}

TEST(KernelImage, RefusesTruncatedBzImage) {
  auto file = testing::make_bzimage(0);
  file.resize(1024);
  EXPECT_NE(error_of(file).find("truncated"), std::string::npos);
}

TEST(KernelImage, RecognisesPvhElf) {
  auto image = parse_kernel_image(testing::make_pvh_elf(0x100000, 0x100040), "k");
  EXPECT_EQ(image.format, KernelImage::Format::kPvhElf);
  EXPECT_EQ(image.pvh_entry, 0x100040u);
  ASSERT_EQ(image.segments.size(), 1u);
  EXPECT_EQ(image.segments[0].guest_phys, 0x100000u);
  EXPECT_EQ(image.segments[0].memory_size, 0x2000u);
}

TEST(KernelImage, RefusesElfWithoutPvhNote) {
  EXPECT_NE(error_of(testing::make_pvh_elf(0x100000, 0, false)).find("no PVH entry note"),
            std::string::npos);
}

TEST(KernelImage, RefusesSegmentsOutsideTheFile) {
  auto file = testing::make_pvh_elf();
  Elf64_Phdr ph;
  std::memcpy(&ph, file.data() + sizeof(Elf64_Ehdr), sizeof ph);
  ph.p_filesz = 1ull << 40;
  ph.p_memsz = 1ull << 40;
  std::memcpy(file.data() + sizeof(Elf64_Ehdr), &ph, sizeof ph);
  EXPECT_NE(error_of(file).find("outside the file"), std::string::npos);
}

TEST(KernelImage, RefusesNoteRunningPastItsSegment) {
  auto file = testing::make_pvh_elf();
  Elf64_Nhdr nh;
  size_t note_at = sizeof(Elf64_Ehdr) + 2 * sizeof(Elf64_Phdr);
  std::memcpy(&nh, file.data() + note_at, sizeof nh);
  nh.n_descsz = 0xfffffff0;
  std::memcpy(file.data() + note_at, &nh, sizeof nh);
  EXPECT_NE(error_of(file).find("runs past"), std::string::npos);
}

TEST(KernelImage, RefusesUnknownFiles) {
  EXPECT_NE(error_of(std::vector<uint8_t>(4096, 0)).find("not a recognised kernel"),
            std::string::npos);
  EXPECT_NE(error_of({}).find("not a recognised kernel"), std::string::npos);
}

TEST(KernelImage, RefusesBzImageCutInsideItsSetupHeader) {
  auto file = testing::make_bzimage(0);
  file.resize(0x210);  // "HdrS" and the boot flag are there, the rest is not
  EXPECT_NE(error_of(file).find("not a recognised kernel"), std::string::npos);
}

std::string read_error(const std::string& path, uint64_t max = 1ull << 30) {
  try {
    read_file(path, "initrd", max);
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

TEST(ReadFile, NamesMissingFilesAndRefusesNonRegularOnes) {
  EXPECT_NE(read_error("/nonexistent/kernel").find("/nonexistent/kernel"), std::string::npos);
  EXPECT_NE(read_error("/dev/zero").find("not a regular file"), std::string::npos);
  EXPECT_NE(read_error("/").find("not a regular file"), std::string::npos);
}

TEST(ReadFile, RefusesFilesLargerThanTheLimit) {
  std::string path = ::testing::TempDir() + "keel-read-file";
  FILE* f = std::fopen(path.c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fputs("0123456789", f);
  std::fclose(f);
  EXPECT_EQ(read_file(path, "initrd", 10).size(), 10u);
  EXPECT_NE(read_error(path, 9).find("too large"), std::string::npos);
  std::remove(path.c_str());
}

}  // namespace
}  // namespace keel
