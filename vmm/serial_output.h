// Where the guest's COM1 output goes: stdout or a file. Written at each end
// of line so that whoever reads it sees lines as the guest prints them.
//
// vCPU threads never block here: bytes go into a bounded buffer and are
// written without blocking; what a slow reader leaves behind is written
// from the event loop when the descriptor becomes writable, and what does
// not fit in the buffer is dropped and counted (a stalled console must not
// stall the guest or keep keel-vmm from stopping). A file is created 0600
// without following a link, and grows to at most a bound: a guest that
// prints forever must not fill the host's disk.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/unique_fd.h"

namespace keel {

class SerialOutput {
 public:
  // Empty path: standard output. Throws InputError when the file cannot be
  // opened (a symbolic link is refused). A regular file takes at most
  // `file_limit` bytes; the rest is dropped and counted.
  SerialOutput(const std::string& path, boost::asio::io_context& events,
               uint64_t file_limit = kFileLimit);
  SerialOutput(const SerialOutput&) = delete;
  SerialOutput& operator=(const SerialOutput&) = delete;

  void put(uint8_t byte);
  // At exit: writes what is left, waiting at most `grace` for a slow reader.
  void finish(std::chrono::milliseconds grace);
  uint64_t dropped() const;

  static constexpr size_t kBufferLimit = 1 << 20;
  static constexpr uint64_t kFileLimit = 256ull << 20;

 private:
  void write_locked();
  void wait_writable_locked();

  mutable std::mutex mutex_;
  UniqueFd fd_;
  std::optional<boost::asio::posix::stream_descriptor> watch_;  // a dup of fd_, for waiting
  std::vector<uint8_t> pending_;
  size_t complete_ = 0;  // bytes of pending_ up to the last end of line
  bool waiting_ = false;
  uint64_t dropped_ = 0;
  uint64_t room_ = UINT64_MAX;  // bytes the file may still take
};

}  // namespace keel
