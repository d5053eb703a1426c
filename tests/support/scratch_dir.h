// A fresh private directory for a test's files (disk images, snapshots),
// removed with everything in it when the test ends, also on failure.
// Under /var/tmp by default: a tmpfs of its own inside the KVM test host,
// a real disk outside it (large images do not fill a small /tmp).
#pragma once

#include <stdlib.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>

#include "common/child_process.h"

namespace keel::testing {

class ScratchDir {
 public:
  explicit ScratchDir(const std::string& prefix = "keel-test") {
    std::string templ = "/var/tmp/" + prefix + "-XXXXXX";
    if (::mkdtemp(templ.data()) == nullptr)
      throw std::runtime_error("mkdtemp " + templ + " failed");
    path_ = templ;
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

  // A sparse file of `bytes` bytes (zeros) in the directory; its path.
  std::string sparse_file(const std::string& name, uint64_t bytes) const {
    const std::string p = *this / name;
    std::ofstream(p).close();
    std::filesystem::resize_file(p, bytes);
    return p;
  }
  // A sparse copy of `src` in the directory (e.g. a root image booted rw).
  std::string copy_of(const std::string& src, const std::string& name) const {
    const std::string p = *this / name;
    auto cp = run_command({"cp", "--sparse=always", src, p}, std::chrono::seconds(120));
    if (cp.exit_code != 0) throw std::runtime_error("cp " + src + " " + p + ": " + cp.err);
    return p;
  }

 private:
  std::string path_;
};

}  // namespace keel::testing
