#include "storage/leftover_sweep.h"

#include <signal.h>

#include <cerrno>
#include <charconv>
#include <filesystem>
#include <optional>

#include "storage/btrfs_subvolume.h"

namespace keel::storage {

namespace fs = std::filesystem;

namespace {

// The PID a working name ends in ("-1234" or, for .rollback/.old, the part
// after the first '-'), when it names no running process.
bool owner_gone(const std::string& name) {
  const size_t dash = name.rfind('-');
  if (dash == std::string::npos) return false;
  int pid = 0;
  const char* begin = name.data() + dash + 1;
  const char* end = name.data() + name.size();
  auto [stop, ec] = std::from_chars(begin, end, pid);
  if (ec != std::errc() || stop != end || pid <= 0) return false;
  return ::kill(pid, 0) != 0 && errno == ESRCH;
}

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

// A directory that is or holds subvolumes, gone.
void remove_tree(const fs::path& path) {
  if (is_subvolume(path.string())) {
    delete_subvolume(path.string());
    return;
  }
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(path, ec)) {
    if (e.is_directory(ec) && !e.is_symlink(ec)) remove_tree(e.path());
  }
  fs::remove_all(path);
}

void sweep_rollback(const fs::path& vm, std::vector<std::string>& done) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(vm, ec)) names.push_back(e.path().filename());
  for (const std::string& name : names) {
    if (!(starts_with(name, ".old-") || starts_with(name, ".rollback-")) || !owner_gone(name))
      continue;
    const fs::path at = vm / name;
    // Between the renames: no current, the old one under .old-PID.
    if (starts_with(name, ".old-") && !fs::exists(vm / "current")) {
      fs::rename(at, vm / "current");
      done.push_back("VM " + vm.filename().string() +
                     ": an interrupted rollback undone (its state before it kept)");
      continue;
    }
    remove_tree(at);
    done.push_back("VM " + vm.filename().string() + ": removed " + name +
                   " left by an interrupted rollback");
  }
}

}  // namespace

std::vector<std::string> sweep_leftovers(const Pool& pool) {
  std::vector<std::string> done;
  for (const fs::path& dir : {pool.images(), pool.vms()}) {
    std::vector<fs::directory_entry> entries;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir, ec)) entries.push_back(e);
    for (const auto& e : entries) {
      const std::string name = e.path().filename();
      if (name.empty() || name[0] != '.') {
        // .old-/.rollback- come first: a rollback left half-way must be
        // put back before anything looks for the VM's current state.
        if (dir == pool.vms() && e.is_directory(ec)) sweep_rollback(e.path(), done);
        continue;
      }
      const bool working = starts_with(name, ".import-") || starts_with(name, ".create-") ||
                           starts_with(name, ".delete-");
      if (!working || !owner_gone(name)) continue;
      remove_tree(e.path());
      const std::string what = starts_with(name, ".delete-")
                                   ? "finished an interrupted delete"
                                   : "removed an unfinished " + name.substr(1, 6);
      done.push_back(what + " (" + (dir / name).string() + ")");
    }
  }
  return done;
}

}  // namespace keel::storage
