// Where the guest's COM1 output goes: stdout or a file. Written at each end
// of line so that whoever reads it sees lines as the guest prints them, and
// a line not ended yet (a prompt) when flush_partial() says so.
//
// vCPU threads never block here: bytes go into a bounded buffer and are
// written without blocking; what a slow reader leaves behind is written
// from the event loop when the descriptor becomes writable, and what does
// not fit in the buffer is dropped and counted (a stalled console must not
// stall the guest or keep keel-vmm from stopping). A file is created 0600
// without following a link and begun afresh (the pool's and the cluster's
// tests read a VM's log from its start); at `file_limit` bytes it is renamed to PATH.1 (replacing
// the one before) and a new PATH begun, as `tail -F` expects: a guest that prints forever takes at
// most twice the limit of the host's disk.
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
  // opened (a symbolic link is refused). A regular file is rotated at
  // `file_limit` bytes.
  SerialOutput(const std::string& path, boost::asio::io_context& events,
               uint64_t file_limit = kFileLimit);
  SerialOutput(const SerialOutput&) = delete;
  SerialOutput& operator=(const SerialOutput&) = delete;

  void put(uint8_t byte);
  // Writes what is buffered without its end of line (the guest went quiet
  // after a prompt). Any thread.
  void flush_partial();
  // No rotation from now on: at the limit the rest is dropped and counted.
  // A jailed VMM's (before the drop): its root is empty then and its
  // threads may not rename or open files.
  void stop_rotating();
  // At exit: writes what is left, waiting at most `grace` for a slow reader.
  void finish(std::chrono::milliseconds grace);
  uint64_t dropped() const;

  static constexpr size_t kBufferLimit = 1 << 20;
  static constexpr uint64_t kFileLimit = 128ull << 20;

 private:
  void write_locked();
  void wait_writable_locked();
  // The file full: PATH becomes PATH.1 and a new PATH is opened. False
  // (the output then goes nowhere) when that fails.
  bool rotate_locked();

  mutable std::mutex mutex_;
  UniqueFd fd_;
  std::optional<boost::asio::posix::stream_descriptor> watch_;  // a dup of fd_, for waiting
  std::vector<uint8_t> pending_;
  size_t complete_ = 0;  // bytes of pending_ up to the last end of line
  bool waiting_ = false;
  uint64_t dropped_ = 0;
  uint64_t room_ = UINT64_MAX;  // bytes the file may still take before it is rotated
  std::string path_;            // a regular file's, for rotation
  uint64_t file_limit_ = 0;
};

}  // namespace keel
