// Where snapshots may be written: one directory fixed when keel-vmm starts
// (--snapshot-root). A client names a directory below it; each component
// is made 0700 or entered without following a symbolic link, and the
// snapshot's files are created new (O_EXCL | O_NOFOLLOW), so neither a
// planted link nor a name with ".." writes anywhere else.
#pragma once

#include <string>

#include "common/unique_fd.h"

namespace keel {

class SnapshotRoot {
 public:
  // Throws InputError when `path` is not an existing directory.
  static SnapshotRoot open(const std::string& path);

  const std::string& path() const { return path_; }

  // `dir`: relative to the root, or absolute and below it (lexically, after
  // "." and ".." are resolved). Creates what is missing (mode 0700) and
  // returns the directory, opened. InputError naming the problem for a name
  // outside the root, the root itself, or a component that is a symbolic
  // link or not a directory.
  UniqueFd make_directory(const std::string& dir) const;

 private:
  SnapshotRoot(UniqueFd fd, std::string path) : fd_(std::move(fd)), path_(std::move(path)) {}
  UniqueFd fd_;
  std::string path_;  // canonical
};

// A new file `name` in `dir` (0600), refused (InputError) when anything
// by that name exists there, a symbolic link included.
UniqueFd create_snapshot_file(int dir, const std::string& name, const std::string& what);

// `path` opened for reading only if it is a regular file: a FIFO or a
// device named like a snapshot file must not hang or feed a restore.
// InputError naming the file otherwise; ENOENT comes back as InputError
// "no WHAT PATH".
UniqueFd open_snapshot_file(const std::string& path, const std::string& what);

}  // namespace keel
