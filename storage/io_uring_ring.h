// One io_uring instance (liburing), owned: set up in the constructor, torn
// down in the destructor. Completions also signal an eventfd registered with
// the ring, so an event loop (Boost.Asio) can wait for them without blocking
// in io_uring_enter.
//
// Not thread-safe: its owner serializes every call.
#pragma once

#include <liburing.h>

#include <chrono>
#include <cstdint>

#include "common/unique_fd.h"

namespace keel::storage {

class IoUringRing {
 public:
  // `entries`: submission queue size (the kernel rounds it up to a power of
  // two); the completion queue gets twice as many.
  explicit IoUringRing(unsigned entries);
  ~IoUringRing();
  IoUringRing(const IoUringRing&) = delete;
  IoUringRing& operator=(const IoUringRing&) = delete;

  unsigned sq_entries() const { return ring_.sq.ring_entries; }

  // A free submission entry, or nullptr when the submission queue is full
  // (submit() frees the entries it hands to the kernel).
  io_uring_sqe* get_sqe() { return io_uring_get_sqe(&ring_); }

  // Hands the prepared entries to the kernel. Transient refusals (EAGAIN,
  // EBUSY, EINTR) leave them queued for the next call; anything else throws.
  void submit();

  // The next completion without waiting, or nullptr. Each one returned must
  // be passed to seen() before the next call.
  io_uring_cqe* peek() {
    io_uring_cqe* cqe = nullptr;
    return io_uring_peek_cqe(&ring_, &cqe) == 0 ? cqe : nullptr;
  }
  void seen(io_uring_cqe* cqe) { io_uring_cqe_seen(&ring_, cqe); }

  // Waits up to `timeout` for a completion; nullptr on timeout.
  io_uring_cqe* wait(std::chrono::milliseconds timeout);

  // Readable (non-blocking, counting) whenever completions were posted since
  // the last clear_event().
  int event_fd() const { return event_fd_.get(); }
  void clear_event();

 private:
  io_uring ring_{};
  UniqueFd event_fd_;
};

}  // namespace keel::storage
