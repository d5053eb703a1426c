#include "vmm/state/snapshot_root.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "common/error.h"

namespace keel {

SnapshotRoot SnapshotRoot::open(const std::string& path) {
  std::error_code ec;
  const std::filesystem::path canonical = std::filesystem::canonical(path, ec);
  if (ec) throw InputError("snapshot root " + path + ": " + ec.message());
  UniqueFd fd(::open(canonical.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) {
    throw InputError("snapshot root " + path +
                     " is not a directory we can open: " + std::strerror(errno));
  }
  return SnapshotRoot(std::move(fd), canonical.string());
}

UniqueFd SnapshotRoot::make_directory(const std::string& dir) const {
  namespace fs = std::filesystem;
  fs::path wanted = fs::path(dir).lexically_normal();
  if (wanted.is_absolute()) {
    wanted = wanted.lexically_relative(path_);
    if (wanted.empty()) {
      throw InputError("snapshot directory " + dir + " is not below the snapshot root " + path_);
    }
  }
  wanted = wanted.lexically_normal();
  if (wanted.empty() || wanted == "." || *wanted.begin() == "..") {
    throw InputError("snapshot directory " + dir + " is not below the snapshot root " + path_);
  }
  UniqueFd current(::fcntl(fd_.get(), F_DUPFD_CLOEXEC, 0));
  if (!current.valid()) throw_errno("dup of the snapshot root");
  for (const fs::path& part : wanted) {
    const std::string name = part.string();
    if (name.empty() || name == "." || name == "..") {
      throw InputError("snapshot directory " + dir + ": bad component '" + name + "'");
    }
    if (::mkdirat(current.get(), name.c_str(), 0700) != 0 && errno != EEXIST) {
      throw InputError("cannot create snapshot directory " + dir + ": " + name + ": " +
                       std::strerror(errno));
    }
    UniqueFd next(
        ::openat(current.get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!next.valid()) {
      const int err = errno;
      throw InputError("cannot create snapshot directory " + dir + ": " + name +
                       (err == ELOOP || err == ENOTDIR ? " is a symbolic link or not a directory"
                                                       : std::string(": ") + std::strerror(err)));
    }
    current = std::move(next);
  }
  return current;
}

UniqueFd create_snapshot_file(int dir, const std::string& name, const std::string& what) {
  UniqueFd fd(
      ::openat(dir, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd.valid()) {
    if (errno == EEXIST) {
      throw InputError(what + " already holds a file named " + name +
                       " (an unfinished snapshot? choose another directory)");
    }
    throw_errno("create " + what + "/" + name);
  }
  return fd;
}

UniqueFd open_snapshot_file(const std::string& path, const std::string& what) {
  // O_NONBLOCK: opening a FIFO for reading must not wait for a writer.
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  if (!fd.valid()) {
    if (errno == ENOENT) throw InputError("no " + what + " " + path);
    throw_errno("open " + what + " " + path);
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw_errno("stat " + path);
  if (!S_ISREG(st.st_mode)) throw InputError(what + " " + path + " is not a regular file");
  const int flags = ::fcntl(fd.get(), F_GETFL);
  if (flags < 0 || ::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK) < 0) {
    throw_errno("fcntl " + path);
  }
  return fd;
}

}  // namespace keel
