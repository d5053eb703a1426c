#include "vmm/console/serial_output.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/error.h"

namespace keel {

namespace {

// A descriptor for standard output that can be non-blocking without changing
// the description the parent shares: pipes and terminals are reopened through
// /proc; regular files never block for long and are written as they are.
UniqueFd open_stdout() {
  struct stat st {};
  if (::fstat(STDOUT_FILENO, &st) == 0 && !S_ISREG(st.st_mode)) {
    int fd = ::open("/proc/self/fd/1", O_WRONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd >= 0) return UniqueFd(fd);
  }
  int fd = ::fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 3);
  if (fd < 0) throw_errno("dup stdout");
  if (!S_ISREG(st.st_mode)) {
    // A socket: no way around sharing its flags.
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  }
  return UniqueFd(fd);
}

}  // namespace

SerialOutput::SerialOutput(const std::string& path, boost::asio::io_context& events,
                           uint64_t file_limit) {
  if (path.empty()) {
    fd_ = open_stdout();
  } else {
    // Non-blocking from the start: a FIFO or terminal named here must not
    // stall start-up or a vCPU (regular files ignore the flag).
    // Appended to: a restored or restarted guest's output follows what
    // it printed before, and `tail -F` readers see no truncation.
    // No link followed: keel-vmm runs as root, and a planted link would
    // have it write into whatever the link names.
    int fd = ::open(path.c_str(),
                    O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NONBLOCK | O_NOFOLLOW, 0600);
    if (fd < 0 && errno == ENXIO) {
      throw InputError("serial file " + path + " is a FIFO nobody reads");
    }
    if (fd < 0 && errno == ELOOP) {
      throw InputError("serial file " + path + " is a symbolic link (not followed)");
    }
    if (fd < 0) throw InputError("cannot open serial file " + path + ": " + std::strerror(errno));
    fd_.reset(fd);
    struct stat st {};
    if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
      const auto size = static_cast<uint64_t>(st.st_size);
      room_ = size < file_limit ? file_limit - size : 0;
      path_ = path;
      file_limit_ = file_limit;
    }
  }
  // Regular files never wait (and are swapped by rotation).
  if (path_.empty() && (::fcntl(fd_.get(), F_GETFL) & O_NONBLOCK)) {
    int watch = ::fcntl(fd_.get(), F_DUPFD_CLOEXEC, 3);
    if (watch < 0) throw_errno("dup serial output");
    watch_.emplace(events, watch);
  }
  pending_.reserve(4096);
}

void SerialOutput::put(uint8_t byte) {
  std::lock_guard guard(mutex_);
  if (pending_.size() >= kBufferLimit) {
    ++dropped_;
    return;
  }
  pending_.push_back(byte);
  if (byte == '\n' || pending_.size() - complete_ >= 4096) {
    complete_ = pending_.size();
    if (!waiting_) write_locked();
  }
}

void SerialOutput::flush_partial() {
  std::lock_guard guard(mutex_);
  if (complete_ == pending_.size()) return;
  complete_ = pending_.size();
  if (!waiting_) write_locked();
}

void SerialOutput::stop_rotating() {
  std::lock_guard guard(mutex_);
  path_.clear();
}

bool SerialOutput::rotate_locked() {
  if (path_.empty()) return false;
  const std::string old = path_ + ".1";
  if (::rename(path_.c_str(), old.c_str()) != 0) return false;
  // O_EXCL: a name planted between the rename and here is not ours to open.
  int fd =
      ::open(path_.c_str(),
             O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC | O_NONBLOCK | O_NOFOLLOW, 0600);
  if (fd < 0) return false;
  fd_.reset(fd);
  room_ = file_limit_;
  return true;
}

void SerialOutput::write_locked() {
  size_t done = 0;
  while (done < complete_) {
    if (room_ == 0 && !rotate_locked()) {  // the output goes nowhere
      path_.clear();
      room_ = UINT64_MAX;
      fd_.reset();
    }
    if (!fd_.valid()) {
      dropped_ += complete_ - done;
      done = complete_;
      break;
    }
    const size_t chunk = static_cast<size_t>(std::min<uint64_t>(complete_ - done, room_));
    ssize_t n = ::write(fd_.get(), pending_.data() + done, chunk);
    if (n > 0 && room_ != UINT64_MAX) room_ -= static_cast<uint64_t>(n);
    if (n > 0) {
      done += static_cast<size_t>(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && errno == EAGAIN && watch_) {
      break;
    } else {
      // The reader is gone: output goes nowhere, the guest goes on.
      dropped_ += complete_ - done;
      done = complete_;
    }
  }
  pending_.erase(pending_.begin(), pending_.begin() + static_cast<ptrdiff_t>(done));
  complete_ -= done;
  if (complete_ > 0) wait_writable_locked();
}

void SerialOutput::wait_writable_locked() {
  waiting_ = true;
  watch_->async_wait(boost::asio::posix::stream_descriptor::wait_write,
                     [this](const boost::system::error_code& ec) {
                       std::lock_guard guard(mutex_);
                       waiting_ = false;
                       if (!ec) write_locked();
                     });
}

void SerialOutput::finish(std::chrono::milliseconds grace) {
  std::lock_guard guard(mutex_);
  complete_ = pending_.size();  // a last line without its end of line too
  auto deadline = std::chrono::steady_clock::now() + grace;
  while (complete_ > 0 && fd_.valid()) {
    if (room_ == 0 && !rotate_locked()) break;
    ssize_t n = ::write(fd_.get(), pending_.data(),
                        static_cast<size_t>(std::min<uint64_t>(complete_, room_)));
    if (n > 0) {
      if (room_ != UINT64_MAX) room_ -= static_cast<uint64_t>(n);
      pending_.erase(pending_.begin(), pending_.begin() + n);
      complete_ -= static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (n < 0 && errno == EAGAIN && left.count() > 0) {
      pollfd p{fd_.get(), POLLOUT, 0};
      ::poll(&p, 1, static_cast<int>(left.count()));
      continue;
    }
    break;
  }
  dropped_ += complete_;
  pending_.clear();
  complete_ = 0;
  if (watch_) watch_->cancel();
}

uint64_t SerialOutput::dropped() const {
  std::lock_guard guard(mutex_);
  return dropped_;
}

}  // namespace keel
