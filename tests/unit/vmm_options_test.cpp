#include "vmm/vmm_options.h"

#include <gtest/gtest.h>

#include "common/error.h"

namespace keel {
namespace {

std::string error_of(const std::vector<std::string>& args) {
  try {
    parse_vmm_options(args);
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

TEST(VmmOptions, ParsesEverything) {
  auto o = parse_vmm_options({"--kernel", "k", "--initrd=i", "--cmdline", "job=heartbeat count=3",
                              "--cpus", "2", "--memory", "4G", "--serial", "file=/tmp/s"});
  EXPECT_EQ(o.kernel, "k");
  EXPECT_EQ(o.initrd, "i");
  EXPECT_EQ(o.cmdline, "job=heartbeat count=3");
  EXPECT_EQ(o.cpus, 2u);
  EXPECT_EQ(o.memory, 4ull << 30);
  EXPECT_EQ(o.serial_file, "/tmp/s");
}

TEST(VmmOptions, Defaults) {
  auto o = parse_vmm_options({"--kernel", "k"});
  EXPECT_EQ(o.cpus, 1u);
  EXPECT_EQ(o.memory, 512ull << 20);
  EXPECT_TRUE(o.serial_file.empty());
  EXPECT_TRUE(parse_vmm_options({"--kernel", "k", "--serial", "stdout"}).serial_file.empty());
}

TEST(VmmOptions, HelpNeedsNoKernel) { EXPECT_TRUE(parse_vmm_options({"--help"}).help); }

TEST(VmmOptions, BadInputNamesTheProblem) {
  EXPECT_NE(error_of({}).find("missing --kernel"), std::string::npos);
  EXPECT_NE(error_of({"--kernel", "k", "--bogus"}).find("unknown option '--bogus'"),
            std::string::npos);
  EXPECT_NE(error_of({"--kernel"}).find("--kernel needs a value"), std::string::npos);
  EXPECT_NE(error_of({"--kernel", "k", "--cpus", "0"}).find("--cpus"), std::string::npos);
  EXPECT_NE(error_of({"--kernel", "k", "--cpus", "two"}).find("'two'"), std::string::npos);
  EXPECT_NE(error_of({"--kernel", "k", "--cpus", "256"}).find("too many vCPUs"), std::string::npos);
  EXPECT_NE(error_of({"--kernel", "k", "--memory", "1M"}).find("too small"), std::string::npos);
  EXPECT_NE(error_of({"--kernel", "k", "--memory", "lots"}).find("'lots'"), std::string::npos);
  EXPECT_NE(error_of({"--kernel", "k", "--memory", "16777217"}).find("multiple of 4K"),
            std::string::npos);
  EXPECT_NE(error_of({"--kernel", "k", "--serial", "tcp"}).find("--serial"), std::string::npos);
}

}  // namespace
}  // namespace keel
