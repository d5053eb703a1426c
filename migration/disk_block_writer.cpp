#include "migration/disk_block_writer.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/error.h"

namespace keel::migration {

DiskBlockWriter::DiskBlockWriter(const std::string& path, uint64_t bytes)
    : path_(path), blocks_(bytes / kPageSize) {
  fd_.reset(::open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW));
  if (!fd_.valid()) {
    throw InputError("the passive's disk " + path +
                     " cannot be opened for writing: " + std::strerror(errno));
  }
  struct stat st {};
  if (::fstat(fd_.get(), &st) != 0 || !S_ISREG(st.st_mode))
    throw InputError("the passive's disk " + path + " is not a regular file");
  if (static_cast<uint64_t>(st.st_size) != bytes) {
    throw InputError("the passive's disk " + path + " is " + std::to_string(st.st_size) +
                     " bytes, the active's " + std::to_string(bytes) +
                     " (a replica keeps its own copy, of the same size)");
  }
}

PageBatchCounts DiskBlockWriter::write(std::span<const uint8_t> batch) {
  return decode_page_batch(batch, blocks_, [this](uint64_t block, const uint8_t* data) {
    const auto offset = static_cast<off_t>(block * kPageSize);
    if (data == nullptr) {
      if (::fallocate(fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset,
                      static_cast<off_t>(kPageSize)) == 0) {
        return;
      }
      static const uint8_t zeros[kPageSize] = {};
      data = zeros;  // a file system without holes: zeros written
    }
    size_t done = 0;
    while (done < kPageSize) {
      const ssize_t n =
          ::pwrite(fd_.get(), data + done, kPageSize - done, offset + static_cast<off_t>(done));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) throw_errno("writing the replica's disk " + path_);
      done += static_cast<size_t>(n);
    }
  });
}

}  // namespace keel::migration
