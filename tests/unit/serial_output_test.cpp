// The guest's console file (keel-vmm --serial file=PATH): created 0600, a
// planted link refused rather than followed, and bounded.
#include "vmm/console/serial_output.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <boost/asio/io_context.hpp>
#include <filesystem>
#include <fstream>
#include <string>

#include "common/error.h"
#include "tests/support/scratch_dir.h"

namespace keel {
namespace {

namespace fs = std::filesystem;

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void print(SerialOutput& out, const std::string& text) {
  for (char c : text) out.put(static_cast<uint8_t>(c));
}

TEST(SerialOutput, TheFileIsPrivateAndHoldsTheLines) {
  testing::ScratchDir scratch("keel-serial-test");
  boost::asio::io_context events;
  const std::string path = scratch / "console";
  {
    SerialOutput out(path, events);
    print(out, "testos: boot\ntestos: ready\n");
    out.finish(std::chrono::seconds(1));
    EXPECT_EQ(out.dropped(), 0u);
  }
  EXPECT_EQ(slurp(path), "testos: boot\ntestos: ready\n");
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
}

TEST(SerialOutput, APlantedLinkIsNotFollowed) {
  testing::ScratchDir scratch("keel-serial-test");
  boost::asio::io_context events;
  const std::string victim = scratch / "victim";
  std::ofstream(victim) << "precious\n";
  fs::create_symlink(victim, scratch / "console");
  try {
    SerialOutput out(scratch / "console", events);
    FAIL() << "a link was followed";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("is a symbolic link"), std::string::npos) << e.what();
  }
  EXPECT_EQ(slurp(victim), "precious\n") << "the link's target was truncated";
}

// Rotated as `tail -F` expects: the file renamed to PATH.1, a new one begun.
TEST(SerialOutput, AGuestThatPrintsForeverFillsOnlyTwiceTheBound) {
  testing::ScratchDir scratch("keel-serial-test");
  boost::asio::io_context events;
  const std::string path = scratch / "console";
  SerialOutput out(path, events, 100);
  const std::string line(39, 'x');
  std::string all;
  for (int i = 0; i < 1000; ++i) all += line + (i % 2 ? "\n" : "y\n");  // 40 500 bytes
  all += "no end of line";
  print(out, all);
  out.finish(std::chrono::seconds(1));
  EXPECT_LE(fs::file_size(path), 100u);
  EXPECT_EQ(fs::file_size(path + ".1"), 100u);
  EXPECT_EQ(out.dropped(), 0u);
  const std::string kept = slurp(path + ".1") + slurp(path);
  EXPECT_EQ(kept, all.substr(all.size() - kept.size())) << "the newest output, in order";
  EXPECT_FALSE(fs::exists(path + ".2"));
}

// A new start appends to what the one before wrote; a prompt without its
// newline reaches the file when flushed.
TEST(SerialOutput, AppendsAndFlushesAPartialLine) {
  testing::ScratchDir scratch("keel-serial-test");
  boost::asio::io_context events;
  const std::string path = scratch / "console";
  {
    SerialOutput out(path, events);
    print(out, "before\n");
    out.finish(std::chrono::seconds(1));
  }
  SerialOutput out(path, events);
  print(out, "login: ");
  EXPECT_EQ(slurp(path), "before\n");
  out.flush_partial();
  EXPECT_EQ(slurp(path), "before\nlogin: ");
  print(out, "root\n");
  EXPECT_EQ(slurp(path), "before\nlogin: root\n");
}

// A start that finds the file at its bound rotates it before writing.
TEST(SerialOutput, AFullFileFromTheRunBeforeIsRotated) {
  testing::ScratchDir scratch("keel-serial-test");
  boost::asio::io_context events;
  const std::string path = scratch / "console";
  std::ofstream(path) << std::string(100, 'o');
  SerialOutput out(path, events, 100);
  print(out, "new\n");
  out.finish(std::chrono::seconds(1));
  EXPECT_EQ(slurp(path), "new\n");
  EXPECT_EQ(slurp(path + ".1"), std::string(100, 'o'));
}

// A jailed VMM's log (it may not rename or open files): capped, the rest
// dropped and counted, no PATH.1.
TEST(SerialOutput, WithoutRotationTheLogIsCapped) {
  testing::ScratchDir scratch("keel-serial-test");
  boost::asio::io_context events;
  const std::string path = scratch / "console";
  SerialOutput out(path, events, 100);
  out.stop_rotating();
  const std::string line(39, 'x');
  for (int i = 0; i < 10; ++i) print(out, line + "\n");
  out.finish(std::chrono::seconds(1));
  EXPECT_EQ(fs::file_size(path), 100u);
  EXPECT_FALSE(fs::exists(path + ".1"));
  EXPECT_EQ(out.dropped(), 300u);
}

}  // namespace
}  // namespace keel
