#include "vmm/state/snapshot_memory.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "common/crc32c.h"
#include "common/error.h"
#include "common/unique_fd.h"
#include "vmm/state/snapshot_root.h"

namespace keel {

namespace {

constexpr uint64_t kPage = 4096;
// Extents are cut at this size: a checksum per MiB at most, and big writes.
constexpr uint64_t kMaxExtent = 1 << 20;

bool all_zero(const uint8_t* p, uint64_t size) {
  // Word at a time; pages are 8-byte aligned in the mapping.
  const auto* w = reinterpret_cast<const uint64_t*>(p);
  for (uint64_t i = 0; i < size / 8; ++i) {
    if (w[i] != 0) return false;
  }
  return true;
}

void write_all(int fd, const uint8_t* data, uint64_t size, uint64_t offset,
               const std::string& path) {
  while (size > 0) {
    ssize_t n = ::pwrite(fd, data, size, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_errno("write " + path);
    data += n;
    size -= static_cast<uint64_t>(n);
    offset += static_cast<uint64_t>(n);
  }
}

void read_all(int fd, uint8_t* data, uint64_t size, uint64_t offset, const std::string& path) {
  while (size > 0) {
    ssize_t n = ::pread(fd, data, size, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_errno("read " + path);
    if (n == 0) throw InputError("snapshot memory file " + path + " is truncated");
    data += n;
    size -= static_cast<uint64_t>(n);
    offset += static_cast<uint64_t>(n);
  }
}

}  // namespace

state::v1::MemoryImage write_memory_image(int fd, const uint8_t* mapping, uint64_t size,
                                          const std::string& path, const std::string& file_name) {
  UniqueFd out(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!out.valid()) throw_errno("create " + path);
  return write_memory_image(fd, mapping, size, out.get(), path, file_name);
}

state::v1::MemoryImage write_memory_image(int fd, const uint8_t* mapping, uint64_t size, int out_fd,
                                          const std::string& path, const std::string& file_name,
                                          const std::atomic<bool>* cancel) {
  if (::ftruncate(out_fd, static_cast<off_t>(size)) < 0) throw_errno("size " + path);

  state::v1::MemoryImage image;
  image.set_file(file_name);
  image.set_size(size);
  image.set_page_size(kPage);
  uint64_t written = 0;
  auto flush_extent = [&](uint64_t begin, uint64_t end) {
    if (begin == end) return;
    if (cancel && cancel->load()) throw std::runtime_error("writing " + path + " abandoned");
    write_all(out_fd, mapping + begin, end - begin, begin, path);
    auto* e = image.add_extents();
    e->set_offset(begin);
    e->set_length(end - begin);
    e->set_crc32c(crc32c(mapping + begin, end - begin));
    written += end - begin;
  };

  uint64_t pos = 0;
  while (pos < size) {
    // The memfd's holes were never touched: no need to read them.
    off_t data = ::lseek(fd, static_cast<off_t>(pos), SEEK_DATA);
    if (data < 0 && errno == ENXIO) break;  // only holes from here
    if (data < 0) throw_errno("SEEK_DATA in guest memory");
    off_t hole = ::lseek(fd, data, SEEK_HOLE);
    if (hole < 0) throw_errno("SEEK_HOLE in guest memory");
    uint64_t begin = static_cast<uint64_t>(data) & ~(kPage - 1);
    const uint64_t end =
        std::min<uint64_t>(size, (static_cast<uint64_t>(hole) + kPage - 1) & ~(kPage - 1));
    uint64_t run = begin;  // start of the current run of non-zero pages
    for (uint64_t page = begin; page < end; page += kPage) {
      const bool zero = all_zero(mapping + page, kPage);
      if (zero || page - run >= kMaxExtent) {
        flush_extent(run, page);
        run = zero ? page + kPage : page;
      }
    }
    flush_extent(run, end);
    pos = end;
  }
  image.set_bytes_written(written);
  if (::fdatasync(out_fd) < 0) throw_errno("fdatasync " + path);
  return image;
}

void read_memory_image(const state::v1::MemoryImage& image, const std::string& path,
                       uint8_t* mapping, uint64_t size) {
  if (image.size() != size) {
    throw InputError("snapshot memory is " + std::to_string(image.size()) +
                     " bytes, the guest has " + std::to_string(size));
  }
  if (image.page_size() != kPage) {
    throw InputError("snapshot memory page size " + std::to_string(image.page_size()) +
                     " is not 4096");
  }
  UniqueFd in = open_snapshot_file(path, "snapshot memory file");
  struct stat st {};
  if (::fstat(in.get(), &st) < 0) throw_errno("stat " + path);
  if (static_cast<uint64_t>(st.st_size) != size) {
    throw InputError("snapshot memory file " + path + " is " + std::to_string(st.st_size) +
                     " bytes, expected " + std::to_string(size) +
                     " (truncated or not this snapshot's)");
  }
  uint64_t next = 0;  // extents ascend without overlap
  for (int i = 0; i < image.extents_size(); ++i) {
    const auto& e = image.extents(i);
    if (e.offset() % kPage != 0 || e.length() == 0 || e.length() % kPage != 0 ||
        e.offset() < next || e.offset() > size || e.length() > size - e.offset()) {
      throw InputError("snapshot memory extent " + std::to_string(i) + " (offset " +
                       std::to_string(e.offset()) + ", length " + std::to_string(e.length()) +
                       ") does not fit the guest memory");
    }
    read_all(in.get(), mapping + e.offset(), e.length(), e.offset(), path);
    if (crc32c(mapping + e.offset(), e.length()) != e.crc32c()) {
      throw InputError("snapshot memory is corrupted: extent " + std::to_string(i) + " at offset " +
                       std::to_string(e.offset()) + " fails its checksum");
    }
    next = e.offset() + e.length();
  }
}

}  // namespace keel
