// Whole-file OFD locks on disk images: exclusive for a writer, shared for
// readers. keel-vmm takes one on each disk (RawDisk::claim), the NBD
// server on each export it opens, and the pool's delete and rollback on
// the VM's disk while they take it away, so none of them acts on an image
// another has in use.
#pragma once

#include <string>

#include "common/unique_fd.h"

namespace keel::storage {

// Locks the whole file open at `fd`. false when another open file holds a
// conflicting lock; throws (errno and `path`) on any other failure.
bool try_lock_image(int fd, bool exclusive, const std::string& path);
void unlock_image(int fd, const std::string& path);

// `path` opened and locked exclusively for as long as this lives, or
// InputError naming `what` when something else has it in use. A missing
// file is nothing to lock (valid() false).
class ImageLock {
 public:
  ImageLock(const std::string& path, const std::string& what);
  bool valid() const { return fd_.valid(); }

 private:
  UniqueFd fd_;
};

}  // namespace keel::storage
