#include "storage/pool.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <system_error>
#include <vector>

#include "common/error.h"
#include "common/size_parse.h"
#include "common/unique_fd.h"
#include "storage/btrfs_subvolume.h"
#include "storage/undo_list.h"

namespace keel::storage {

namespace fs = std::filesystem;

namespace {

constexpr const char* kMarker = "keel-pool";
constexpr const char* kMarkerPrefix = "keel pool format ";

// Absolute, normal, no trailing slash: the name the pool's messages use.
fs::path pool_path(const std::string& path) {
  if (path.empty()) throw InputError("pool directory: an empty path");
  fs::path dir = fs::absolute(path).lexically_normal();
  if (dir.has_relative_path() && dir.filename().empty()) dir = dir.parent_path();
  return dir;
}

std::string marker_text() {
  return kMarkerPrefix + std::to_string(Pool::kFormat) + "\n";
}

void fsync_path(const fs::path& path, int flags) {
  UniqueFd fd(::open(path.c_str(), flags | O_CLOEXEC));
  if (!fd.valid()) throw_errno("opening " + path.string());
  if (::fsync(fd.get()) != 0) throw_errno("fsync of " + path.string());
}

// Writes the marker whole or not at all: a temporary file, then a rename.
void write_marker(const fs::path& dir, UndoList& undo) {
  const fs::path tmp = dir / (std::string(kMarker) + ".tmp");
  const fs::path marker = dir / kMarker;
  {
    UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644));
    if (!fd.valid()) throw_errno("creating " + tmp.string());
    undo.add([tmp] { fs::remove(tmp); });
    const std::string text = marker_text();
    const ssize_t n = ::write(fd.get(), text.data(), text.size());
    if (n != static_cast<ssize_t>(text.size()))
      throw_errno(n < 0 ? errno : EIO, "writing " + tmp.string());
    if (::fsync(fd.get()) != 0) throw_errno("fsync of " + tmp.string());
  }
  if (::rename(tmp.c_str(), marker.c_str()) != 0) throw_errno("renaming " + tmp.string());
  undo.add([marker] { fs::remove(marker); });
  fsync_path(dir, O_RDONLY | O_DIRECTORY);
}

// Whether something is at `path` (a dangling symbolic link counts); what
// cannot be looked at is an error, not an absence.
bool exists_at(const fs::path& path) {
  std::error_code ec;
  const fs::file_status st = fs::symlink_status(path, ec);
  if (st.type() == fs::file_type::not_found) return false;
  if (ec) throw std::system_error(ec, "looking at " + path.string());
  return true;
}

bool directory_at(const fs::path& path) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (st.type() == fs::file_type::not_found) return false;
  if (ec) throw std::system_error(ec, "looking at " + path.string());
  return st.type() == fs::file_type::directory;
}

void require_writable(const fs::path& path) {
  struct statvfs vfs {};
  if (::statvfs(path.c_str(), &vfs) != 0) throw_errno("pool directory " + path.string());
  if (vfs.f_flag & ST_RDONLY)
    throw InputError("pool directory " + path.string() + " is on a read-only mount");
  if (::access(path.c_str(), W_OK | X_OK) != 0)
    throw InputError("pool directory " + path.string() + " is not writable by this user");
}

}  // namespace

void check_pool_name(const std::string& kind, const std::string& name) {
  auto allowed = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_';
  };
  const bool ok = !name.empty() && name.size() <= 63 && allowed(name[0]) && name[0] != '-' &&
                  name[0] != '.' && name[0] != '_' &&
                  std::all_of(name.begin(), name.end(), allowed);
  if (!ok) {
    throw InputError(kind + " name '" + name +
                     "' is not allowed: 1 to 63 of a-z, 0-9, '-', '.', '_', starting with a "
                     "letter or a digit");
  }
}

std::vector<std::string> pool_entry_names(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) {
    std::string name = e.path().filename();
    if (!name.empty() && name[0] != '.') names.push_back(std::move(name));
  }
  std::sort(names.begin(), names.end());
  return names;
}

uint64_t Pool::available_bytes() const {
  struct statvfs vfs {};
  if (::statvfs(path_.c_str(), &vfs) != 0) throw_errno("free space of pool " + path_.string());
  return static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize;
}

void Pool::require_space(uint64_t needed, const std::string& what) const {
  // Btrfs needs room for metadata beside the data, and its free figure is
  // an estimate: keep a margin rather than fail half-way.
  constexpr uint64_t kMargin = uint64_t{32} << 20;
  const uint64_t free = available_bytes();
  if (needed + kMargin > free) {
    throw InputError("the volume of pool " + path_.string() + " is too full: " + what +
                     " needs about " + human_bytes(needed) + " (and " + human_bytes(kMargin) +
                     " to spare), " + human_bytes(free) + " is free");
  }
}

Pool Pool::init(const std::string& path) {
  const fs::path dir = pool_path(path);
  UndoList undo;
  if (!exists_at(dir)) {
    if (!directory_at(dir.parent_path())) {
      throw InputError("pool directory " + dir.string() + ": its parent " +
                       dir.parent_path().string() + " is not a directory");
    }
    require_btrfs(dir.parent_path().string(), "pool directory's parent");
    if (::mkdir(dir.c_str(), 0755) != 0) throw_errno("creating pool directory " + dir.string());
    undo.add([dir] { fs::remove(dir); });
  } else if (!directory_at(dir)) {
    throw InputError("pool directory " + dir.string() + " is not a directory");
  }
  require_btrfs(dir.string(), "pool directory");
  require_writable(dir);
  if (exists_at(dir / kMarker)) throw InputError(dir.string() + " is a Keel pool already");
  for (const char* sub : {"images", "vms"}) {
    if (exists_at(dir / sub)) {
      throw InputError("pool directory " + dir.string() + " holds " + sub +
                       " already (not made by Keel: move it away or pick another directory)");
    }
  }
  for (const char* sub : {"images", "vms"}) {
    const fs::path p = dir / sub;
    if (::mkdir(p.c_str(), 0755) != 0) throw_errno("creating " + p.string());
    undo.add([p] { fs::remove(p); });
  }
  write_marker(dir, undo);
  undo.keep();
  return Pool(dir);
}

Pool Pool::open(const std::string& path) {
  const fs::path dir = pool_path(path);
  if (!directory_at(dir)) throw InputError("pool " + dir.string() + ": no such directory");
  const fs::path marker = dir / kMarker;
  UniqueFd fd(::open(marker.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) {
    if (errno == ENOENT)
      throw InputError(dir.string() + " is not a Keel pool (keelctl pool init makes one)");
    throw_errno("opening " + marker.string());
  }
  char buf[64];
  const ssize_t n = ::read(fd.get(), buf, sizeof buf);
  if (n < 0) throw_errno("reading " + marker.string());
  const std::string text(buf, static_cast<size_t>(n));
  const std::string prefix = kMarkerPrefix;
  int format = 0;
  const char* digits = text.data() + prefix.size();
  const char* end = text.data() + text.size();
  bool parsed = text.size() > prefix.size() && text.compare(0, prefix.size(), prefix) == 0 &&
                text.back() == '\n';
  if (parsed) {
    auto [stop, err] = std::from_chars(digits, end - 1, format);
    parsed = err == std::errc() && stop == end - 1;
  }
  if (!parsed) throw InputError(marker.string() + " is not a Keel pool marker");
  if (format != kFormat) {
    throw InputError("pool " + dir.string() + " has format " + std::to_string(format) +
                     "; this Keel reads format " + std::to_string(kFormat));
  }
  require_btrfs(dir.string(), "pool directory");
  for (const fs::path& sub : {dir / "images", dir / "vms"}) {
    if (!directory_at(sub))
      throw InputError("pool " + dir.string() + " has lost its " + sub.filename().string());
  }
  return Pool(dir);
}

}  // namespace keel::storage
