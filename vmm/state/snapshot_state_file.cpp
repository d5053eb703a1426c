#include "vmm/state/snapshot_state_file.h"

#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>

#include "common/crc32c.h"
#include "common/error.h"
#include "common/little_endian.h"
#include "common/unique_fd.h"
#include "vmm/state/snapshot_root.h"

namespace keel {

namespace {

constexpr char kMagic[8] = {'K', 'E', 'E', 'L', 'S', 'N', 'A', 'P'};
constexpr size_t kHeaderSize = 24;  // magic, version u32, crc u32, length u64

}  // namespace

void write_state_file(int dir, const std::string& name, const std::string& payload,
                      const std::string& what) {
  if (payload.size() > kMaxStatePayload) throw std::runtime_error("VM state too large to save");
  uint8_t header[kHeaderSize];
  std::memcpy(header, kMagic, 8);
  store_le(std::span<uint8_t>(header + 8, 4), kSnapshotFormatVersion);
  store_le(std::span<uint8_t>(header + 12, 4), crc32c(payload.data(), payload.size()));
  store_le(std::span<uint8_t>(header + 16, 8), payload.size());
  const std::string temporary = name + ".partial";
  // Left by a snapshot that died half-way: unlinkat removes a link itself,
  // never what it points to.
  if (::unlinkat(dir, temporary.c_str(), 0) != 0 && errno != ENOENT) {
    throw_errno("remove " + what + "/" + temporary);
  }
  {
    UniqueFd fd = create_snapshot_file(dir, temporary, what);
    std::string all(reinterpret_cast<const char*>(header), kHeaderSize);
    all += payload;
    size_t done = 0;
    while (done < all.size()) {
      ssize_t n = ::write(fd.get(), all.data() + done, all.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw_errno("write " + what + "/" + temporary);
      done += static_cast<size_t>(n);
    }
    if (::fsync(fd.get()) < 0) throw_errno("fsync " + what + "/" + temporary);
  }
  // Never over something already there (a state, or a link planted since).
  if (::renameat2(dir, temporary.c_str(), dir, name.c_str(), RENAME_NOREPLACE) < 0) {
    if (errno == EEXIST) throw InputError(what + " already holds a snapshot");
    throw_errno("rename to " + what + "/" + name);
  }
  if (::fsync(dir) < 0) throw_errno("fsync directory " + what);
}

void write_state_file(const std::string& path, const std::string& payload) {
  const std::filesystem::path p(path);
  const std::string parent = p.parent_path().empty() ? "." : p.parent_path().string();
  UniqueFd dir(::open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir.valid()) throw_errno("open directory " + parent);
  write_state_file(dir.get(), p.filename().string(), payload, parent);
}

std::string read_state_file(const std::string& path) {
  UniqueFd fd = open_snapshot_file(path, "snapshot state file");
  std::string all;
  char buffer[65536];
  for (;;) {
    ssize_t n = ::read(fd.get(), buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_errno("read " + path);
    if (n == 0) break;
    all.append(buffer, static_cast<size_t>(n));
    if (all.size() > kHeaderSize + kMaxStatePayload) {
      throw InputError("snapshot state file " + path + " is too large to be one");
    }
  }
  if (all.size() < kHeaderSize || std::memcmp(all.data(), kMagic, 8) != 0) {
    throw InputError(path + " is not a Keel snapshot state file");
  }
  auto header = std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(all.data()), kHeaderSize);
  const auto version = static_cast<uint32_t>(load_le(header.subspan(8, 4)));
  const auto crc = static_cast<uint32_t>(load_le(header.subspan(12, 4)));
  const uint64_t length = load_le(header.subspan(16, 8));
  if (version != kSnapshotFormatVersion) {
    throw InputError("snapshot format version " + std::to_string(version) + " in " + path +
                     " (this keel-vmm reads version " + std::to_string(kSnapshotFormatVersion) +
                     ")");
  }
  if (length != all.size() - kHeaderSize) {
    throw InputError("snapshot state file " + path +
                     " is truncated or padded: " + std::to_string(all.size() - kHeaderSize) +
                     " bytes of state, the header says " + std::to_string(length));
  }
  std::string payload = all.substr(kHeaderSize);
  if (crc32c(payload.data(), payload.size()) != crc) {
    throw InputError("snapshot state file " + path + " is corrupted (checksum mismatch)");
  }
  return payload;
}

}  // namespace keel
