// One migration stream's connection: frames out and in (stream_format.h),
// with a time limit on every wait, so a peer that stops talking or stops
// reading is noticed and named, never waited on forever. Sending and
// receiving each belong to one thread; shutdown() may come from any
// thread and makes every pending and later call fail at once (cancel).
#pragma once

#include <google/protobuf/message_lite.h>
#include <sys/uio.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/unique_fd.h"
#include "migration/stream/stream_format.h"

namespace keel::migration {

class FrameChannel {
 public:
  // `peer` names the other end in messages: "the destination", "the source".
  FrameChannel(UniqueFd socket, std::string peer, std::chrono::milliseconds timeout);

  void send_magic();
  void send(FrameType type, std::span<const uint8_t> payload = {});
  void send(FrameType type, const google::protobuf::MessageLite& message);
  // One frame whose payload is `parts`, gathered without copying.
  void send_gathered(FrameType type, std::span<const iovec> parts);
  // While held, frames are queued in the kernel (MSG_MORE) and leave only
  // in full segments; the first frame sent after release pushes them all.
  // A pause's frames go as one push: each push on loopback runs the
  // receiver's side in the sender's time and wakes the receiver, which
  // in an emulated host costs about a millisecond.
  void hold(bool held) { held_ = held; }

  // Throws StreamError unless the next 8 bytes are kStreamMagic.
  void expect_magic();
  struct Frame {
    FrameType type;
    std::span<const uint8_t> payload;  // valid until the next receive
  };
  // The next frame; StreamError when the peer closed the connection or sent
  // nothing for the timeout, or the header is bad.
  Frame receive();
  // The next frame, which must be `type` (StreamError naming what came
  // instead), parsed into `message` (StreamError when it does not parse).
  void receive_message(FrameType type, google::protobuf::MessageLite& message);

  // The time limit of every later wait (a replica's passive shortens it
  // once it holds a copy: silence then means the active may be gone).
  void set_timeout(std::chrono::milliseconds timeout);
  // When bytes last came in (the epoch of steady_clock before any did);
  // any thread.
  std::chrono::steady_clock::time_point last_received() const {
    return std::chrono::steady_clock::time_point(
        std::chrono::steady_clock::duration(last_received_.load(std::memory_order_relaxed)));
  }

  // Bytes sent that the peer's host does not acknowledge for `limit` (TCP's
  // user timeout; also a zero window that long) end the stream: a peer
  // host gone or cut off is noticed then, its error naming the limit.
  void set_unacked_limit(std::chrono::milliseconds limit);
  // Whether a frame (or the end of the stream) is there to receive within
  // `wait`; false when nothing came. Throws once shut down here.
  bool readable_within(std::chrono::milliseconds wait);
  // Reads and drops whatever comes until the peer closes the connection
  // (true) or `timeout` passes (false); false too once shut down here.
  bool wait_closed(std::chrono::milliseconds timeout);

  void shutdown();
  bool is_shut_down() const { return shut_down_.load(); }
  uint64_t bytes_sent() const { return sent_.load(std::memory_order_relaxed); }
  uint64_t bytes_received() const { return received_; }
  const std::string& peer() const { return peer_; }

 private:
  void write_all(std::span<iovec> parts);
  void read_exact(uint8_t* into, size_t length, const char* what);

  UniqueFd socket_;
  std::string peer_;
  // Why a call failed: errno's text, or for ETIMEDOUT the unacked limit.
  std::string failure(int error) const;

  std::chrono::milliseconds timeout_;
  std::chrono::milliseconds unacked_limit_{0};
  std::atomic<bool> shut_down_{false};
  bool held_ = false;
  std::atomic<uint64_t> sent_{0};
  std::atomic<std::chrono::steady_clock::rep> last_received_{0};
  uint64_t received_ = 0;
  std::vector<uint8_t> buffer_;
  std::string encoded_;
};

}  // namespace keel::migration
