// keel-vmm refuses bad input with one clear line and exit code 1.
#include <gtest/gtest.h>

#include <fstream>
#include <regex>

#include "tests/support/vmm_run.h"

namespace keel::testing {
namespace {

void expect_refused(const VmmRun& run, const std::string& needle) {
  EXPECT_EQ(run.exit_code, 1) << run.err;
  EXPECT_NE(run.err.find(needle), std::string::npos) << "stderr: " << run.err;
  // One line, starting with the program's name.
  EXPECT_TRUE(std::regex_search(run.err, std::regex("^[-0-9T:.]+Z keel-vmm: error: "))) << run.err;
  EXPECT_EQ(std::count(run.err.begin(), run.err.end(), '\n'), 1) << run.err;
  EXPECT_TRUE(run.lines.empty());
}

TEST(BadInput, UnknownOption) {
  expect_refused(run_vmm({"--kernel", testos_bzimage(), "--frobnicate"}), "unknown option");
}

TEST(BadInput, MissingKernelOption) {
  expect_refused(run_vmm({}), "missing --kernel");
}

TEST(BadInput, KernelFileMissing) {
  expect_refused(run_vmm({"--kernel", "/nonexistent/bzImage"}), "/nonexistent/bzImage");
}

TEST(BadInput, KernelNotRecognised) {
  std::string path = ::testing::TempDir() + "not-a-kernel";
  std::ofstream(path) << "just some text, no kernel here\n";
  expect_refused(run_vmm({"--kernel", path}), "not a recognised kernel");
  std::remove(path.c_str());
}

TEST(BadInput, MemoryTooSmall) {
  expect_refused(run_vmm({"--kernel", testos_bzimage(), "--memory", "8M"}), "too small");
}

TEST(BadInput, MemoryTooLargeForTheHost) {
  expect_refused(run_vmm({"--kernel", testos_bzimage(), "--memory", "64T"}),
                 "too large for this host");
}

TEST(BadInput, TooManyVcpus) {
  expect_refused(run_vmm({"--kernel", testos_bzimage(), "--cpus", "1000"}), "too many vCPUs");
}

TEST(BadInput, NoUsableKvm) {
  expect_refused(run_vmm({"--kernel", testos_bzimage()}, std::chrono::seconds(30),
                         {"KEEL_KVM_DEVICE=/nonexistent/kvm"}),
                 "no usable KVM");
}

TEST(BadInput, HelpExitsZero) {
  auto run = run_vmm({"--help"});
  EXPECT_EQ(run.exit_code, 0);
  EXPECT_NE(run.console().find("usage: keel-vmm --kernel PATH"), std::string::npos);
}

}  // namespace
}  // namespace keel::testing
