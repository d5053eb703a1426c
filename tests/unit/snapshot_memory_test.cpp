#include "vmm/state/snapshot_memory.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>

#include "common/error.h"
#include "common/guest_memory.h"

namespace keel {
namespace {

constexpr uint64_t kMiB = 1 << 20;

struct SnapshotMemoryTest : ::testing::Test {
  std::string dir;
  SnapshotMemoryTest() {
    std::string templ = "/var/tmp/keel-snapmem-XXXXXX";
    if (!::mkdtemp(templ.data())) throw std::runtime_error("mkdtemp");
    dir = templ;
  }
  ~SnapshotMemoryTest() override { std::filesystem::remove_all(dir); }
  std::string path() const { return dir + "/memory"; }

  // 8 MiB guest: data on a few pages, one touched page left all zeros.
  GuestMemory guest{{{0, 8 * kMiB, 0}}};
  void fill() {
    uint8_t* base = guest.host_all_for_write().data();
    std::memset(base + 0x1000, 0xaa, 0x3000);  // 3 pages
    base[5 * kMiB + 17] = 1;                   // 1 page
    std::memset(base + 6 * kMiB, 0, 4096);     // touched, zero
    std::memset(base + 7 * kMiB, 0x5c, kMiB);  // a 1 MiB run
  }
};

TEST_F(SnapshotMemoryTest, WritesOnlyDataPagesAndReadsThemBack) {
  fill();
  auto image = write_memory_image(guest.fd(), guest.host_base(), guest.size(), path(), "memory");
  EXPECT_EQ(image.size(), 8 * kMiB);
  EXPECT_EQ(image.bytes_written(), 0x3000 + 4096 + kMiB);
  ASSERT_GE(image.extents_size(), 3);
  EXPECT_EQ(image.extents(0).offset(), 0x1000u);
  EXPECT_EQ(image.extents(0).length(), 0x3000u);
  // The file is sparse: about what was written, not 8 MiB.
  struct stat st {};
  ASSERT_EQ(::stat(path().c_str(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), 8 * kMiB);
  EXPECT_LE(static_cast<uint64_t>(st.st_blocks) * 512, 2 * kMiB);

  GuestMemory restored{{{0, 8 * kMiB, 0}}};
  read_memory_image(image, path(), restored.host_all_for_write().data(), restored.size());
  EXPECT_EQ(std::memcmp(restored.host_base(), guest.host_base(), guest.size()), 0);
}

TEST_F(SnapshotMemoryTest, AnUntouchedGuestWritesNothing) {
  auto image = write_memory_image(guest.fd(), guest.host_base(), guest.size(), path(), "memory");
  EXPECT_EQ(image.extents_size(), 0);
  EXPECT_EQ(image.bytes_written(), 0u);
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

TEST_F(SnapshotMemoryTest, CorruptedTruncatedOrForeignImagesAreRefused) {
  fill();
  auto image = write_memory_image(guest.fd(), guest.host_base(), guest.size(), path(), "memory");
  GuestMemory target{{{0, 8 * kMiB, 0}}};
  auto load = [&](const state::v1::MemoryImage& im) {
    return error_of(
        [&] { read_memory_image(im, path(), target.host_all_for_write().data(), target.size()); });
  };
  {
    std::fstream f(path(), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(5 * kMiB + 17);
    f.put(2);
  }
  EXPECT_NE(load(image).find("fails its checksum"), std::string::npos);
  auto bad = image;
  bad.mutable_extents(1)->set_offset(8 * kMiB);
  EXPECT_NE(load(bad).find("does not fit"), std::string::npos);
  bad = image;
  bad.mutable_extents(0)->set_length(0x1001);
  EXPECT_NE(load(bad).find("does not fit"), std::string::npos);
  bad = image;
  bad.mutable_extents(1)->set_offset(0x2000);  // overlaps extent 0
  EXPECT_NE(load(bad).find("does not fit"), std::string::npos);
  bad = image;
  bad.set_size(16 * kMiB);
  EXPECT_NE(load(bad).find("the guest has"), std::string::npos);
  bad = image;
  bad.set_page_size(2 * kMiB);
  EXPECT_NE(load(bad).find("page size"), std::string::npos);
  std::filesystem::resize_file(path(), 6 * kMiB);
  EXPECT_NE(load(image).find("truncated"), std::string::npos);
}

}  // namespace
}  // namespace keel

#include "vmm/state/snapshot_state_file.h"

namespace keel {
namespace {

TEST_F(SnapshotMemoryTest, StateFileRoundTripsAndRefusesDamage) {
  const std::string file = dir + "/state";
  std::string payload(5000, '\0');
  for (size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<char>(i * 13);
  write_state_file(file, payload);
  EXPECT_EQ(read_state_file(file), payload);
  EXPECT_FALSE(std::filesystem::exists(file + ".partial"));

  auto damaged = [&](const std::function<void(std::string&)>& change) {
    std::string bytes;
    {
      std::ifstream in(file, std::ios::binary);
      bytes.assign(std::istreambuf_iterator<char>(in), {});
    }
    change(bytes);
    const std::string other = dir + "/damaged";
    std::ofstream(other, std::ios::binary | std::ios::trunc) << bytes;
    return error_of([&] { read_state_file(other); });
  };
  EXPECT_NE(damaged([](std::string& b) { b[100] ^= 1; }).find("corrupted"), std::string::npos);
  EXPECT_NE(damaged([](std::string& b) { b.resize(b.size() - 1); }).find("truncated"),
            std::string::npos);
  EXPECT_NE(damaged([](std::string& b) { b.resize(10); }).find("not a Keel snapshot"),
            std::string::npos);
  EXPECT_NE(damaged([](std::string& b) { b[0] = 'X'; }).find("not a Keel snapshot"),
            std::string::npos);
  EXPECT_NE(damaged([](std::string& b) { b[8] = 9; }).find("format version 9"), std::string::npos);
  EXPECT_NE(error_of([&] { read_state_file(dir + "/missing"); }).find("no snapshot state file"),
            std::string::npos);
}

}  // namespace
}  // namespace keel
