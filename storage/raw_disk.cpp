#include "storage/raw_disk.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/error.h"
#include "storage/image_lock.h"

namespace keel::storage {
namespace {

// Source for write-zeroes where the file system cannot zero a range itself.
// Page-aligned, so O_DIRECT takes it; in .bss, so it costs nothing untouched.
alignas(4096) uint8_t zero_buffer[256 * 1024];

bool aligned(uint64_t value, uint64_t alignment) {
  return value % alignment == 0;
}

[[noreturn]] void refuse(const std::string& path, const std::string& what, int err) {
  throw InputError("disk image " + path + ": " + what + ": " + std::strerror(err));
}

}  // namespace

RawDisk::RawDisk(const RawDiskOptions& options)
    : path_(options.path), read_only_(options.read_only), ring_(options.queue_depth) {
  const int access = read_only_ ? O_RDONLY : O_RDWR;
  buffered_fd_.reset(::open(path_.c_str(), access | O_CLOEXEC));
  if (!buffered_fd_.valid()) refuse(path_, "open", errno);

  struct stat st {};
  if (::fstat(buffered_fd_.get(), &st) != 0) refuse(path_, "fstat", errno);
  if (S_ISREG(st.st_mode)) {
    size_ = static_cast<uint64_t>(st.st_size);
  } else if (S_ISBLK(st.st_mode)) {
    if (::ioctl(buffered_fd_.get(), BLKGETSIZE64, &size_) != 0)
      refuse(path_, "BLKGETSIZE64", errno);
  } else {
    throw InputError("disk image " + path_ + ": not a regular file or block device");
  }
  block_size_ = st.st_blksize > 0 ? static_cast<uint32_t>(st.st_blksize) : 4096;
  if (options.claim) claim();

  if (!options.direct) return;
  // What O_DIRECT needs here (Linux 6.1+). File systems that do not say keep
  // the conservative page-size default; EINVAL later still falls back.
  struct statx stx {};
  if (::statx(buffered_fd_.get(), "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0 &&
      (stx.stx_mask & STATX_DIOALIGN)) {
    if (stx.stx_dio_offset_align == 0) return;  // no direct I/O on this file
    offset_align_ = stx.stx_dio_offset_align;
    memory_align_ = std::max<uint32_t>(stx.stx_dio_mem_align, 1);
  }
  // Reopen the very file already open (not whatever the path names now).
  const std::string self = "/proc/self/fd/" + std::to_string(buffered_fd_.get());
  direct_fd_.reset(::open(self.c_str(), access | O_CLOEXEC | O_DIRECT));
  if (!direct_fd_.valid() && errno != EINVAL) refuse(path_, "open with O_DIRECT", errno);
}

void RawDisk::claim() {
  if (claimed_) return;
  if (!try_lock_image(buffered_fd_.get(), !read_only_, path_)) {
    throw InputError("disk image " + path_ + " is in use: another process has it open " +
                     (read_only_ ? "for writing" : "(for reading or writing)") +
                     " and locked (OFD lock)");
  }
  claimed_ = true;
}

void RawDisk::release() {
  if (!claimed_) return;
  unlock_image(buffered_fd_.get(), path_);
  claimed_ = false;
}

RawDisk::~RawDisk() {
  try {
    cancel_all(std::chrono::seconds(5));
  } catch (const std::exception&) {
    // A destructor must not throw; the ring's teardown waits for the rest.
  }
}

void RawDisk::read(uint64_t tag, uint64_t offset, std::span<const iovec> iov) {
  add({.tag = tag, .kind = OpKind::kRead, .offset = offset, .iov = {iov.begin(), iov.end()}});
}

void RawDisk::write(uint64_t tag, uint64_t offset, std::span<const iovec> iov) {
  add({.tag = tag, .kind = OpKind::kWrite, .offset = offset, .iov = {iov.begin(), iov.end()}});
}

void RawDisk::flush(uint64_t tag) {
  add({.tag = tag, .kind = OpKind::kFlush, .offset = 0});
}

void RawDisk::sync() {
  if (read_only_) return;
  if (::fdatasync(buffered_fd_.get()) < 0) throw_errno("fdatasync " + path_);
}

void RawDisk::discard(uint64_t tag, uint64_t offset, uint64_t length) {
  add({.tag = tag,
       .kind = OpKind::kFallocate,
       .offset = offset,
       .length = length,
       .mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
       .is_discard = true});
}

void RawDisk::write_zeroes(uint64_t tag, uint64_t offset, uint64_t length, bool may_unmap) {
  // Without unmap the blocks must stay allocated: ZERO_RANGE, as the loop
  // driver does for REQ_NOUNMAP.
  const int mode = may_unmap ? FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
                             : FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;
  add({.tag = tag,
       .kind = OpKind::kFallocate,
       .offset = offset,
       .length = length,
       .mode = mode,
       .may_unmap = may_unmap});
}

uint64_t RawDisk::add(Op op) {
  const uint64_t id = next_id_++;
  ops_.emplace(id, std::move(op));
  start(id);
  return id;
}

void RawDisk::start(uint64_t id) {
  // First come, first served: nothing overtakes a request waiting for space
  // (a flush must not pass the writes queued before it).
  if (!waiting_.empty() || !try_issue(id)) {
    waiting_.push_back(id);
    ++stats_.queued_when_full;
  }
}

bool RawDisk::try_issue(uint64_t id) {
  // At most one submission queue's worth in the kernel: the completion queue
  // (twice as large) can then never overflow.
  if (in_kernel_ >= ring_.sq_entries()) return false;
  io_uring_sqe* sqe = ring_.get_sqe();
  if (sqe == nullptr) {
    ring_.submit();
    sqe = ring_.get_sqe();
    if (sqe == nullptr) return false;
  }
  Op& op = ops_.at(id);
  prepare(sqe, op);
  io_uring_sqe_set_data64(sqe, id);
  op.in_kernel = true;
  ++in_kernel_;
  return true;
}

bool RawDisk::direct_ok(const Op& op) const {
  if (!direct_fd_.valid() || op.force_buffered) return false;
  if (op.kind == OpKind::kWriteZeroBuffer) {
    return aligned(op.offset, offset_align_) &&
           aligned(std::min<uint64_t>(op.length, sizeof zero_buffer), offset_align_);
  }
  if (!aligned(op.offset + op.done, offset_align_)) return false;
  for (size_t i = op.iov_first; i < op.iov.size(); ++i) {
    if (!aligned(reinterpret_cast<uintptr_t>(op.iov[i].iov_base), memory_align_) ||
        !aligned(op.iov[i].iov_len, offset_align_)) {
      return false;
    }
  }
  return true;
}

void RawDisk::prepare(io_uring_sqe* sqe, Op& op) {
  switch (op.kind) {
    case OpKind::kRead:
    case OpKind::kWrite: {
      const bool direct = direct_ok(op);
      ++(direct ? stats_.direct_ops : stats_.buffered_ops);
      const int fd = direct ? direct_fd_.get() : buffered_fd_.get();
      const iovec* iov = op.iov.data() + op.iov_first;
      const auto count = static_cast<unsigned>(op.iov.size() - op.iov_first);
      if (op.kind == OpKind::kRead) {
        io_uring_prep_readv(sqe, fd, iov, count, op.offset + op.done);
      } else {
        io_uring_prep_writev(sqe, fd, iov, count, op.offset + op.done);
      }
      return;
    }
    case OpKind::kFlush:
      // Drain: the fdatasync starts once everything submitted before it has
      // completed, so it covers every write already completed to the guest.
      io_uring_prep_fsync(sqe, buffered_fd_.get(), IORING_FSYNC_DATASYNC);
      sqe->flags |= IOSQE_IO_DRAIN;
      return;
    case OpKind::kFallocate:
      io_uring_prep_fallocate(sqe, buffered_fd_.get(), op.mode, static_cast<off_t>(op.offset),
                              static_cast<off_t>(op.length));
      return;
    case OpKind::kWriteZeroBuffer: {
      const bool direct = direct_ok(op);
      ++(direct ? stats_.direct_ops : stats_.buffered_ops);
      const auto chunk = static_cast<unsigned>(std::min<uint64_t>(op.length, sizeof zero_buffer));
      io_uring_prep_write(sqe, direct ? direct_fd_.get() : buffered_fd_.get(), zero_buffer, chunk,
                          op.offset);
      return;
    }
  }
}

void RawDisk::submit() {
  start_waiting();
  ring_.submit();
}

void RawDisk::process_completions() {
  // Clear first: a completion posted after this read signals again.
  ring_.clear_event();
  while (io_uring_cqe* cqe = ring_.peek()) {
    const uint64_t id = io_uring_cqe_get_data64(cqe);
    const int res = cqe->res;
    ring_.seen(cqe);
    complete(id, res);
  }
  start_waiting();
  ring_.submit();
}

void RawDisk::start_waiting() {
  while (!waiting_.empty() && try_issue(waiting_.front())) waiting_.pop_front();
}

void RawDisk::complete(uint64_t id, int res) {
  const auto it = ops_.find(id);
  if (it == ops_.end()) return;
  Op& op = it->second;
  op.in_kernel = false;
  --in_kernel_;
  if (op.abandoned) {
    ops_.erase(it);
    return;
  }
  auto again = [&] {
    ++stats_.resubmissions;
    start(id);
  };
  if (res == -EAGAIN || res == -EINTR) return again();

  switch (op.kind) {
    case OpKind::kRead:
    case OpKind::kWrite: {
      if (res == -EINVAL && direct_ok(op)) {
        op.force_buffered = true;  // O_DIRECT refused this one after all
        return again();
      }
      if (res < 0) return finish(id, res);
      if (res == 0) return finish(id, static_cast<int64_t>(op.done));  // end of file
      op.done += static_cast<uint64_t>(res);
      // Skip what was transferred; a partly done iovec keeps its tail.
      auto left = static_cast<size_t>(res);
      while (op.iov_first < op.iov.size() && left >= op.iov[op.iov_first].iov_len) {
        left -= op.iov[op.iov_first].iov_len;
        ++op.iov_first;
      }
      if (op.iov_first == op.iov.size()) return finish(id, static_cast<int64_t>(op.done));
      iovec& partial = op.iov[op.iov_first];
      partial.iov_base = static_cast<uint8_t*>(partial.iov_base) + left;
      partial.iov_len -= left;
      return again();
    }
    case OpKind::kFlush:
      return finish(id, res < 0 ? res : 0);
    case OpKind::kFallocate:
      if (res == -EOPNOTSUPP || res == -ENOTSUP) {
        // Discard is a hint: nothing to do where holes cannot be punched.
        if (op.is_discard) return finish(id, 0);
        // Write-zeroes allowed to unmap: try keeping the blocks instead
        // (tmpfs punches holes but has no ZERO_RANGE, other file systems the
        // other way round). Then write zeroes by hand.
        if (op.may_unmap && (op.mode & FALLOC_FL_PUNCH_HOLE)) {
          op.mode = FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;
        } else {
          op.kind = OpKind::kWriteZeroBuffer;
        }
        return again();
      }
      return finish(id, res < 0 ? res : 0);
    case OpKind::kWriteZeroBuffer:
      if (res == -EINVAL && direct_ok(op)) {
        op.force_buffered = true;
        return again();
      }
      if (res < 0) return finish(id, res);
      if (res == 0) return finish(id, -EIO);
      op.offset += static_cast<uint64_t>(res);
      op.length -= std::min<uint64_t>(op.length, static_cast<uint64_t>(res));
      if (op.length == 0) return finish(id, 0);
      return again();
  }
}

void RawDisk::finish(uint64_t id, int64_t result) {
  const uint64_t tag = ops_.at(id).tag;
  ops_.erase(id);
  // Last: the handler may add requests.
  if (handler_) handler_(tag, result);
}

void RawDisk::abandon_all() {
  for (const uint64_t id : waiting_) ops_.erase(id);
  waiting_.clear();
  for (auto& [id, op] : ops_) op.abandoned = true;
  ring_.submit();  // anything prepared must reach the kernel: its completion ends it
}

bool RawDisk::cancel_all(std::chrono::milliseconds timeout) {
  abandon_all();
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (in_kernel_ > 0) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    io_uring_cqe* cqe = ring_.wait(left);
    if (cqe == nullptr) break;
    const uint64_t id = io_uring_cqe_get_data64(cqe);
    ring_.seen(cqe);
    complete(id, 0);
  }
  return in_kernel_ == 0;
}

BlockBackend::Counters RawDisk::counters() const {
  return {{"direct_ops", stats_.direct_ops},
          {"buffered_ops", stats_.buffered_ops},
          {"resubmissions", stats_.resubmissions},
          {"queued_when_full", stats_.queued_when_full}};
}

}  // namespace keel::storage
