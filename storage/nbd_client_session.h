// One NBD connection's transmission phase, client side (doc/proto.md,
// simple replies): requests queued in order, written as the socket takes
// them, replies matched to their requests by cookie in whatever order the
// server sends them. A READ's data lands straight in the request's buffers.
// Over a non-blocking socket it does not own; no thread of its own, so the
// fuzz target drives it directly. Anything the server sends that does not
// fit (a wrong magic, a cookie never sent or already answered) ends the
// connection: the stream cannot be trusted after it.
#pragma once

#include <sys/uio.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <unordered_map>
#include <vector>

namespace keel::storage {

struct NbdPiece {
  uint64_t cookie = 0;  // unique on the connection, increasing
  uint16_t command = 0;
  uint16_t flags = 0;
  uint64_t offset = 0;
  uint32_t length = 0;
  // READ: where the reply's data lands; WRITE: what is sent. `length`
  // bytes in all.
  std::vector<iovec> data;
  // The owner's: which request the piece belongs to, and when it was made.
  uint64_t owner = 0;
  uint64_t epoch = 0;
  // A READ whose request was abandoned: its data is read and dropped.
  bool drop_data = false;
  // When the owner's thread first took it: the disk's timeout counts from
  // here, across connections.
  std::chrono::steady_clock::time_point taken{};
};

class NbdClientSession {
 public:
  // (piece, result): bytes for READ and WRITE, 0 for the others, or -errno
  // as the server answered.
  using Done = std::function<void(NbdPiece& piece, int64_t result)>;

  explicit NbdClientSession(int fd) : fd_(fd) {}

  void send(NbdPiece piece);
  // The disconnect request, after what is queued (no reply comes).
  void send_disconnect();
  bool wants_write() const { return !output_.empty(); }
  // Writes what the socket takes now. false: the connection is broken
  // (reason()).
  bool write_output();
  // Reads what has arrived and completes the pieces it answers. false: the
  // connection is broken or the server broke the protocol (reason()).
  bool read_input(const Done& done);

  // Pieces queued or sent and not answered, in the order they were queued
  // (the connection is done with; they go to the next one).
  std::vector<NbdPiece> take_unanswered();
  // Called for every piece not answered (to mark reads whose data to drop).
  void for_each_unanswered(const std::function<void(NbdPiece&)>& fn);
  size_t unanswered() const { return pieces_.size(); }
  const std::string& reason() const { return reason_; }

 private:
  enum class Progress { kMoved, kWouldBlock, kBroken };
  bool fail(std::string why);
  Progress receive_payload(const Done& done);

  int fd_;
  std::unordered_map<uint64_t, NbdPiece> pieces_;  // by cookie
  std::deque<uint64_t> output_;                    // cookies not yet fully written
  size_t output_done_ = 0;                         // bytes of output_.front() written
  std::string header_;                             // output_.front()'s request header
  bool disconnect_queued_ = false;
  uint8_t reply_[16] = {};
  size_t reply_fill_ = 0;
  uint64_t receiving_ = 0;  // the READ whose data is arriving (0: none)
  uint32_t received_ = 0;
  std::string reason_;
};

}  // namespace keel::storage
