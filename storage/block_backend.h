// What a virtual disk reads and writes through: a local image file
// (RawDisk, io_uring) or an export on a storage host (NbdDisk). Requests
// never block the caller; each carries a caller tag and is reported once,
// when it is finished, to the completion handler as (tag, result): for
// reads and writes the bytes transferred, for the others 0, or -errno.
// The owner calls process_completions() when event_fd() turns readable.
// Not thread-safe: the owner serializes every call.
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace keel::storage {

class BlockBackend {
 public:
  using CompletionHandler = std::function<void(uint64_t tag, int64_t result)>;
  using Counters = std::vector<std::pair<std::string, uint64_t>>;

  virtual ~BlockBackend() = default;

  // What the operator named: the image's path, or the NBD address.
  virtual const std::string& name() const = 0;
  virtual uint64_t size() const = 0;
  virtual bool read_only() const = 0;
  // The granularity requests should keep to for the fast path (O_DIRECT's
  // offset alignment); 512 where any sector will do.
  virtual uint32_t preferred_alignment() const = 0;
  // Below this a discard only zeroes (the file system's block).
  virtual uint32_t discard_granularity() const = 0;

  // Exclusive use against other VMMs: a migration hands it over.
  virtual void claim() = 0;
  virtual void release() = 0;

  virtual void set_completion_handler(CompletionHandler handler) = 0;
  // The buffers the iovecs point to stay valid until the completion.
  virtual void read(uint64_t tag, uint64_t offset, std::span<const iovec> iov) = 0;
  virtual void write(uint64_t tag, uint64_t offset, std::span<const iovec> iov) = 0;
  // Every write reported before it is on stable storage when it is reported.
  virtual void flush(uint64_t tag) = 0;
  // Reads return zeroes afterwards (or are unchanged where deallocating is
  // not offered: discard allows that).
  virtual void discard(uint64_t tag, uint64_t offset, uint64_t length) = 0;
  virtual void write_zeroes(uint64_t tag, uint64_t offset, uint64_t length, bool may_unmap) = 0;
  // Hands what was prepared to the kernel or the connection.
  virtual void submit() = 0;
  // What has finished goes to the handler. Clears event_fd() first.
  virtual void process_completions() = 0;
  virtual int event_fd() const = 0;
  // Requests accepted and not yet reported (or abandoned and not yet done
  // with their buffers).
  virtual size_t outstanding() const = 0;
  // Drops every request: none is reported. Those whose buffers may still be
  // written count in outstanding() until they are done.
  virtual void abandon_all() = 0;
  // Everything completed so far on stable storage, waited for; call with
  // nothing in flight.
  virtual void sync() = 0;

  virtual Counters counters() const = 0;
};

}  // namespace keel::storage
