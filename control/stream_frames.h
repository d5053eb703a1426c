// Frames arriving on a control connection that turned into a stream (a
// console attach, an events subscription): bytes read from a non-blocking
// socket, split into the messages the frames carry.
#pragma once

#include <google/protobuf/message_lite.h>

#include <cstdint>
#include <string>
#include <vector>

namespace keel {

class StreamFrames {
 public:
  // `source` and `what` name the peer and its frames in errors ("the VMM at
  // /run/x.sock", "console frame").
  StreamFrames(std::string source, std::string what)
      : source_(std::move(source)), what_(std::move(what)) {}

  // Reads what `fd` has now, up to one largest frame's worth held; false
  // once the peer closed the connection.
  bool read(int fd);
  // The next complete frame into `message`; false when none is complete.
  // Throws ControlClientError on a frame too long or not a `message`.
  bool next(google::protobuf::MessageLite& message);

 private:
  std::string source_, what_;
  std::vector<uint8_t> in_;
  size_t at_ = 0;  // in_'s first byte not yet parsed
};

}  // namespace keel
