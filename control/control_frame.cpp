#include "control/control_frame.h"

#include <google/protobuf/message_lite.h>

#include <stdexcept>

#include "common/little_endian.h"

namespace keel {

std::string encode_control_frame(const google::protobuf::MessageLite& message) {
  const size_t size = message.ByteSizeLong();
  if (size > kControlMaxFrameBytes) {
    throw std::length_error("control message of " + std::to_string(size) +
                            " bytes exceeds the 1 MiB frame limit");
  }
  std::string frame(kControlFrameHeaderBytes + size, '\0');
  store_le(std::span(reinterpret_cast<uint8_t*>(frame.data()), kControlFrameHeaderBytes), size);
  if (!message.SerializeToArray(frame.data() + kControlFrameHeaderBytes, static_cast<int>(size))) {
    throw std::runtime_error("cannot serialize control message");
  }
  return frame;
}

uint32_t decode_control_frame_length(std::span<const uint8_t> header) {
  return static_cast<uint32_t>(load_le(header.first(kControlFrameHeaderBytes)));
}

}  // namespace keel
