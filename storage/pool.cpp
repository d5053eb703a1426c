#include "storage/pool.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <charconv>
#include <system_error>
#include <vector>

#include "common/error.h"
#include "common/unique_fd.h"
#include "storage/btrfs_subvolume.h"

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

// What init made, removed again unless it is kept.
class Undo {
 public:
  ~Undo() {
    if (kept_) return;
    for (auto it = made_.rbegin(); it != made_.rend(); ++it) {
      std::error_code ignored;
      fs::remove(*it, ignored);
    }
  }
  void made(fs::path path) { made_.push_back(std::move(path)); }
  void keep() { kept_ = true; }

 private:
  std::vector<fs::path> made_;
  bool kept_ = false;
};

// Writes the marker whole or not at all: a temporary file, then a rename.
void write_marker(const fs::path& dir, Undo& undo) {
  const fs::path tmp = dir / (std::string(kMarker) + ".tmp");
  const fs::path marker = dir / kMarker;
  {
    UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644));
    if (!fd.valid()) throw_errno("creating " + tmp.string());
    undo.made(tmp);
    const std::string text = marker_text();
    const ssize_t n = ::write(fd.get(), text.data(), text.size());
    if (n != static_cast<ssize_t>(text.size()))
      throw_errno(n < 0 ? errno : EIO, "writing " + tmp.string());
    if (::fsync(fd.get()) != 0) throw_errno("fsync of " + tmp.string());
  }
  if (::rename(tmp.c_str(), marker.c_str()) != 0) throw_errno("renaming " + tmp.string());
  undo.made(marker);
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

Pool Pool::init(const std::string& path) {
  const fs::path dir = pool_path(path);
  Undo undo;
  if (!exists_at(dir)) {
    if (!directory_at(dir.parent_path())) {
      throw InputError("pool directory " + dir.string() + ": its parent " +
                       dir.parent_path().string() + " is not a directory");
    }
    require_btrfs(dir.parent_path().string(), "pool directory's parent");
    if (::mkdir(dir.c_str(), 0755) != 0) throw_errno("creating pool directory " + dir.string());
    undo.made(dir);
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
    undo.made(p);
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
