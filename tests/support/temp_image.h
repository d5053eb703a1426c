// A scratch disk image for tests: created (sized, sparse) in a directory the
// test picks, removed when the object goes away, also when the test fails.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace keel::testing {

class TempImage {
 public:
  TempImage(const std::string& dir, uint64_t size) {
    std::string pattern = dir + "/keel-disk-XXXXXX";
    const int fd = ::mkstemp(pattern.data());
    if (fd < 0) throw std::runtime_error("mkstemp in " + dir);
    path_ = pattern;
    const bool sized = ::ftruncate(fd, static_cast<off_t>(size)) == 0;
    ::close(fd);
    if (!sized) throw std::runtime_error("ftruncate " + path_);
  }
  ~TempImage() { ::unlink(path_.c_str()); }
  TempImage(const TempImage&) = delete;
  TempImage& operator=(const TempImage&) = delete;

  const std::string& path() const { return path_; }

  // Reads and writes through the page cache, beside whatever the test checks.
  std::vector<uint8_t> read(uint64_t offset, size_t length) const {
    std::vector<uint8_t> out(length);
    const int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    const ssize_t n = ::pread(fd, out.data(), length, static_cast<off_t>(offset));
    ::close(fd);
    if (n != static_cast<ssize_t>(length)) throw std::runtime_error("pread " + path_);
    return out;
  }
  void write(uint64_t offset, const std::vector<uint8_t>& bytes) const {
    const int fd = ::open(path_.c_str(), O_WRONLY | O_CLOEXEC);
    const ssize_t n = ::pwrite(fd, bytes.data(), bytes.size(), static_cast<off_t>(offset));
    ::fsync(fd);
    ::close(fd);
    if (n != static_cast<ssize_t>(bytes.size())) throw std::runtime_error("pwrite " + path_);
  }
  // Bytes the file system has allocated to the file.
  uint64_t allocated() const {
    struct stat st {};
    ::stat(path_.c_str(), &st);
    return static_cast<uint64_t>(st.st_blocks) * 512;
  }

 private:
  std::string path_;
};

// A pattern that tells sectors apart.
inline std::vector<uint8_t> pattern(size_t length, uint8_t seed) {
  std::vector<uint8_t> out(length);
  for (size_t i = 0; i < length; ++i) out[i] = static_cast<uint8_t>(seed + i * 7 + (i >> 9));
  return out;
}

}  // namespace keel::testing
