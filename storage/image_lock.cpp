#include "storage/image_lock.h"

#include <fcntl.h>

#include <cerrno>

#include "common/error.h"

namespace keel::storage {

bool try_lock_image(int fd, bool exclusive, const std::string& path) {
  struct flock lock {};
  lock.l_type = exclusive ? F_WRLCK : F_RDLCK;
  lock.l_whence = SEEK_SET;  // l_start 0, l_len 0: the whole file
  if (::fcntl(fd, F_OFD_SETLK, &lock) == 0) return true;
  if (errno == EAGAIN || errno == EACCES) return false;
  throw_errno("locking " + path + " (F_OFD_SETLK)");
}

void unlock_image(int fd, const std::string& path) {
  struct flock lock {};
  lock.l_type = F_UNLCK;
  lock.l_whence = SEEK_SET;
  if (::fcntl(fd, F_OFD_SETLK, &lock) != 0) throw_errno("unlocking " + path);
}

ImageLock::ImageLock(const std::string& path, const std::string& what) {
  // Read-write: a write lock needs it.
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW));
  if (!fd.valid()) {
    if (errno == ENOENT) return;
    throw_errno("opening " + path);
  }
  if (!try_lock_image(fd.get(), true, path)) {
    throw InputError(what + ": its disk is in use (a keel-vmm or an NBD client has " + path +
                     " open)");
  }
  fd_ = std::move(fd);
}

}  // namespace keel::storage
