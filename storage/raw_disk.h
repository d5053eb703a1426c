// A raw disk image (a regular file or a block device) read and written
// through io_uring, many requests in flight, none waited for.
//
// Direct I/O: the image is opened with O_DIRECT where its file system allows
// it (the page cache stays out of the guest's way), plus a second, buffered
// descriptor for requests whose offset, buffer addresses or lengths miss the
// alignment O_DIRECT needs (statx STATX_DIOALIGN), or that O_DIRECT refuses
// with EINVAL anyway. Both descriptors name the same file; the kernel keeps
// the two paths coherent.
//
// Each request carries a caller tag; when it is finished the completion
// handler gets (tag, result): for reads and writes the bytes transferred
// (short counts from io_uring are resubmitted for the remainder, so fewer
// than asked means end of file), for the others 0; or -errno. Completions are
// collected by process_completions(), which the owner calls when event_fd()
// turns readable.
//
// Requests beyond what the ring holds wait in a queue and go out as earlier
// ones complete. Not thread-safe: the owner serializes every call.
#pragma once

#include <sys/uio.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/unique_fd.h"
#include "storage/block_backend.h"
#include "storage/io_uring_ring.h"

namespace keel::storage {

struct RawDiskOptions {
  std::string path;
  bool read_only = false;
  bool direct = true;          // try O_DIRECT; false: buffered only
  unsigned queue_depth = 256;  // io_uring submission queue entries
  // Lock the image at once (claim()); false: the caller claims it later
  // (a migration's destination, while the source still runs the guest).
  bool claim = true;
};

struct RawDiskStats {
  uint64_t direct_ops = 0;        // submissions through the O_DIRECT descriptor
  uint64_t buffered_ops = 0;      // submissions through the buffered one
  uint64_t resubmissions = 0;     // short transfers, EAGAIN, EINVAL fallbacks
  uint64_t queued_when_full = 0;  // requests that waited for ring space
};

class RawDisk : public BlockBackend {
 public:
  explicit RawDisk(const RawDiskOptions& options);
  // Waits (bounded) for requests in flight: their buffers belong to the caller.
  ~RawDisk() override;
  RawDisk(const RawDisk&) = delete;
  RawDisk& operator=(const RawDisk&) = delete;

  const std::string& path() const { return path_; }
  const std::string& name() const override { return path_; }
  uint64_t size() const override { return size_; }
  bool read_only() const override { return read_only_; }
  bool direct() const { return direct_fd_.valid(); }
  // What O_DIRECT needs: file offsets and lengths, and buffer addresses.
  uint32_t direct_offset_align() const { return offset_align_; }
  uint32_t direct_memory_align() const { return memory_align_; }
  // The file system's preferred I/O size (st_blksize).
  uint32_t block_size() const { return block_size_; }
  uint32_t preferred_alignment() const override { return direct() ? offset_align_ : 512; }
  uint32_t discard_granularity() const override { return block_size_; }
  const RawDiskStats& stats() const { return stats_; }
  Counters counters() const override;

  // The image's OFD lock (F_OFD_SETLK on the whole file): exclusive for a
  // writable disk, shared for a read-only one, so no two VMMs write one
  // image and none writes what another reads. claim() throws InputError
  // naming the image when another open file holds a conflicting lock;
  // release() lets go (a migration hands the image over).
  void claim() override;
  void release() override;
  bool claimed() const { return claimed_; }

  void set_completion_handler(CompletionHandler handler) override { handler_ = std::move(handler); }

  // Requests: prepared here, handed to the kernel by submit(). The iovecs are
  // copied; the buffers they point to must stay valid until completion.
  void read(uint64_t tag, uint64_t offset, std::span<const iovec> iov) override;
  void write(uint64_t tag, uint64_t offset, std::span<const iovec> iov) override;
  // fdatasync, ordered after every request submitted before it (IOSQE_IO_DRAIN).
  void flush(uint64_t tag) override;
  // fdatasync now, waiting for it (what completed is on stable storage);
  // a no-op for a read-only image. Call with nothing in flight.
  void sync() override;
  // Deallocates [offset, offset + length): reads return zeroes afterwards
  // (fallocate PUNCH_HOLE | KEEP_SIZE). A file system without hole punching
  // completes it as a no-op, which discard allows.
  void discard(uint64_t tag, uint64_t offset, uint64_t length) override;
  // Zeroes [offset, offset + length): ZERO_RANGE keeps the blocks allocated,
  // PUNCH_HOLE when `may_unmap`; where the file system has neither, zeroes
  // are written.
  void write_zeroes(uint64_t tag, uint64_t offset, uint64_t length, bool may_unmap) override;

  void submit() override;

  // Collects what the kernel completed: resubmits partial transfers and the
  // requests that waited for space, reports the finished ones to the handler.
  // Clears event_fd() first, so no completion is missed.
  void process_completions() override;

  int event_fd() const override { return ring_.event_fd(); }
  // Requests the disk has accepted and not yet reported.
  size_t outstanding() const override { return ops_.size(); }

  // Abandons every request without waiting: those still waiting for ring
  // space are dropped, those in the kernel finish there and their results
  // are discarded as process_completions() collects them; the handler is not
  // called for any. outstanding() counts the ones still in the kernel.
  void abandon_all() override;
  // abandon_all(), then waits (up to `timeout`) for the kernel to be done
  // with them. Returns whether nothing is left in the kernel (after a
  // timeout some buffers may still be written).
  bool cancel_all(std::chrono::milliseconds timeout);

 private:
  enum class OpKind { kRead, kWrite, kFlush, kFallocate, kWriteZeroBuffer };
  struct Op {
    uint64_t tag = 0;
    OpKind kind = OpKind::kRead;
    uint64_t offset = 0;
    std::vector<iovec> iov = {};  // what is left to transfer (kRead, kWrite)
    size_t iov_first = 0;         // first iovec not yet done
    uint64_t done = 0;            // bytes transferred so far
    uint64_t length = 0;          // kFallocate, kWriteZeroBuffer: bytes left
    int mode = 0;                 // kFallocate
    bool may_unmap = false;       // kFallocate for write-zeroes
    bool is_discard = false;      // kFallocate for discard
    bool force_buffered = false;
    bool in_kernel = false;
    bool abandoned = false;  // cancel_all(): drop the result
  };

  uint64_t add(Op op);
  void start(uint64_t id);
  bool try_issue(uint64_t id);
  void prepare(io_uring_sqe* sqe, Op& op);
  bool direct_ok(const Op& op) const;
  void complete(uint64_t id, int res);
  void finish(uint64_t id, int64_t result);
  void start_waiting();

  std::string path_;
  bool read_only_;
  bool claimed_ = false;
  UniqueFd buffered_fd_;
  UniqueFd direct_fd_;
  uint64_t size_ = 0;
  uint32_t offset_align_ = 4096;
  uint32_t memory_align_ = 4096;
  uint32_t block_size_ = 4096;
  IoUringRing ring_;
  CompletionHandler handler_;
  uint64_t next_id_ = 1;
  std::unordered_map<uint64_t, Op> ops_;  // node-based: Op addresses stay put
  std::deque<uint64_t> waiting_;          // accepted, no ring space yet
  size_t in_kernel_ = 0;
  RawDiskStats stats_;
};

}  // namespace keel::storage
