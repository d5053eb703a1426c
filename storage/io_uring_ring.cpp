#include "storage/io_uring_ring.h"

#include <sys/eventfd.h>

#include <cerrno>
#include <cstdint>

#include "common/error.h"

namespace keel::storage {

IoUringRing::IoUringRing(unsigned entries) {
  if (const int err = io_uring_queue_init(entries, &ring_, 0); err < 0) {
    throw_errno(-err, "io_uring_queue_init");
  }
  event_fd_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!event_fd_.valid()) {
    const int err = errno;
    io_uring_queue_exit(&ring_);
    throw_errno(err, "eventfd for io_uring completions");
  }
  if (const int err = io_uring_register_eventfd(&ring_, event_fd_.get()); err < 0) {
    io_uring_queue_exit(&ring_);
    throw_errno(-err, "io_uring_register_eventfd");
  }
}

IoUringRing::~IoUringRing() {
  io_uring_queue_exit(&ring_);
}

void IoUringRing::submit() {
  for (int attempt = 0; attempt < 8; ++attempt) {
    const int n = io_uring_submit(&ring_);
    if (n >= 0) return;
    if (n == -EINTR) continue;
    // Out of kernel resources or completions backed up: the entries stay in
    // the ring and go with the next submit.
    if (n == -EAGAIN || n == -EBUSY) return;
    throw_errno(-n, "io_uring_submit");
  }
}

io_uring_cqe* IoUringRing::wait(std::chrono::milliseconds timeout) {
  __kernel_timespec ts{};
  ts.tv_sec = timeout.count() / 1000;
  ts.tv_nsec = (timeout.count() % 1000) * 1000000;
  io_uring_cqe* cqe = nullptr;
  for (;;) {
    const int err = io_uring_wait_cqe_timeout(&ring_, &cqe, &ts);
    if (err == 0) return cqe;
    if (err == -EINTR) continue;
    if (err == -ETIME || err == -EAGAIN) return nullptr;
    throw_errno(-err, "io_uring_wait_cqe_timeout");
  }
}

void IoUringRing::clear_event() {
  uint64_t count;
  // Non-blocking: EAGAIN just means nothing was signalled.
  [[maybe_unused]] const ssize_t n = ::read(event_fd_.get(), &count, sizeof count);
}

}  // namespace keel::storage
