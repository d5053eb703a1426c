// A virtual disk on an NBD export ("tcp:ADDR:PORT/EXPORT"): keel-vmm's
// disk on a storage host. A thread of its own keeps the connection:
// requests cross to it through a queue, replies come back through a
// completion queue and an eventfd, and a READ's data lands straight in the
// request's buffers.
//
// A lost connection (an error, the server closing, TCP keepalive finding
// the peer gone, or no answer to the oldest request for `io_timeout`) is
// retried with backoff (100 ms doubling to 2 s; a connection that answered
// nothing keeps the backoff growing). Requests wait meanwhile, and every
// request not answered is sent again on the next connection, so nothing is
// reported done before the server said so: what the guest was told is
// written stays written. A request not answered within `io_timeout` of its
// submission fails with EIO, whatever the connections did meanwhile, and
// after `io_timeout` without a connection every new one fails at once
// until the server is back: the VMM never hangs on it. A reconnection that
// finds the export changed (another size, read-only, smaller limits, fewer
// commands) counts as a failure.
//
// Flushes follow NBD's rule: a FLUSH covers every write answered before it
// was sent, which is every write the guest saw completed. Without the
// server's SEND_FLUSH, flushes complete at once; without SEND_TRIM,
// discards do (discard allows it); without SEND_WRITE_ZEROES, zeroes are
// written.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/tcp_endpoint.h"
#include "common/unique_fd.h"
#include "storage/block_backend.h"
#include "storage/nbd_client_handshake.h"
#include "storage/nbd_client_session.h"

namespace keel::storage {

struct NbdAddress {
  TcpEndpoint endpoint;
  std::string export_name;
  std::string text;  // as given
};

// "tcp:ADDR:PORT/EXPORT" (the export name may be empty: the server's
// default); InputError naming `what` and what is wrong.
NbdAddress parse_nbd_address(const std::string& text, const std::string& what);

struct NbdDiskOptions {
  std::string address;  // tcp:ADDR:PORT/EXPORT
  bool read_only = false;
  std::chrono::milliseconds io_timeout{30000};
  // Connect at once; false: only ask the export's size and flags, and
  // connect at claim() (a migration's destination, while the source still
  // has the export open).
  bool claim = true;
};

class NbdDisk : public BlockBackend {
 public:
  static constexpr std::chrono::milliseconds kConnectTimeout{2000};
  static constexpr std::chrono::milliseconds kHandshakeTimeout{5000};

  // Connects (or describes) now: InputError naming the address when the
  // server cannot be reached, refuses the export, or offers one that does
  // not fit (read-only for a writable disk, a minimum block above 512, a
  // maximum request below 1 MiB).
  explicit NbdDisk(const NbdDiskOptions& options);
  // Ends the connection's thread: requests not answered are dropped (their
  // buffers are not touched after it returns).
  ~NbdDisk() override;
  NbdDisk(const NbdDisk&) = delete;
  NbdDisk& operator=(const NbdDisk&) = delete;

  const std::string& name() const override { return address_.text; }
  uint64_t size() const override { return info_.size; }
  bool read_only() const override { return read_only_; }
  uint32_t preferred_alignment() const override { return 512; }
  uint32_t discard_granularity() const override { return info_.preferred_block; }
  const NbdExportInfo& export_info() const { return info_; }

  // Connects when described only, or after release().
  void claim() override;
  // Ends the connection (the server's lock on the export goes with it).
  void release() override;

  void set_completion_handler(CompletionHandler handler) override { handler_ = std::move(handler); }
  void read(uint64_t tag, uint64_t offset, std::span<const iovec> iov) override;
  void write(uint64_t tag, uint64_t offset, std::span<const iovec> iov) override;
  void flush(uint64_t tag) override;
  void discard(uint64_t tag, uint64_t offset, uint64_t length) override;
  void write_zeroes(uint64_t tag, uint64_t offset, uint64_t length, bool may_unmap) override;
  void submit() override;
  void process_completions() override;
  int event_fd() const override { return completions_fd_.get(); }
  size_t outstanding() const override { return requests_.size(); }
  void abandon_all() override;
  // Flushes and waits (at most io_timeout plus the handshake's time);
  // std::runtime_error when the server does not confirm it.
  void sync() override;
  Counters counters() const override;

  // Connections made after the first one.
  uint64_t reconnects() const;

 private:
  struct Request {
    uint64_t tag = 0;
    uint32_t pieces_left = 0;
    uint64_t bytes = 0;
    int64_t error = 0;
    bool transfers = false;
    bool abandoned = false;
    bool internal = false;  // sync(): not reported to the handler
  };
  class Connection;

  uint64_t add_request(uint64_t tag, bool transfers);
  void add_piece(uint64_t request, uint16_t command, uint16_t flags, uint64_t offset,
                 uint32_t length, std::vector<iovec> data);
  void split_transfer(uint64_t tag, uint16_t command, uint64_t offset, std::span<const iovec> iov);
  void split_range(uint64_t tag, uint16_t command, uint16_t flags, uint64_t offset,
                   uint64_t length);
  void complete_now(uint64_t tag, int64_t result);
  bool in_range(uint64_t offset, uint64_t length) const;

  NbdAddress address_;
  bool read_only_;
  std::chrono::milliseconds io_timeout_;
  NbdExportInfo info_;
  UniqueFd completions_fd_;
  CompletionHandler handler_;
  std::unordered_map<uint64_t, Request> requests_;
  uint64_t next_request_ = 1;
  uint64_t epoch_ = 0;                               // bumped by abandon_all()
  std::vector<NbdPiece> staged_;                     // prepared, not submitted
  std::vector<std::pair<uint64_t, int64_t>> local_;  // answered without the server
  uint64_t sync_request_ = 0;                        // the flush sync() waits for
  bool sync_done_ = false;
  int64_t sync_result_ = 0;
  std::unique_ptr<Connection> connection_;
};

}  // namespace keel::storage
