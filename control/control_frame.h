// Framing on keel-vmm's control socket (proto/control.proto): a 4-byte
// little-endian length, then that many bytes of one serialized message.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>

namespace google::protobuf {
class MessageLite;
}

namespace keel {

inline constexpr size_t kControlFrameHeaderBytes = 4;
// Longest message either side accepts; a longer frame is refused.
inline constexpr size_t kControlMaxFrameBytes = size_t{1} << 20;

// The 4-byte header followed by `message` serialized. Throws std::length_error
// when the message is longer than kControlMaxFrameBytes.
std::string encode_control_frame(const google::protobuf::MessageLite& message);

// The body length a header announces. `header` holds kControlFrameHeaderBytes.
uint32_t decode_control_frame_length(std::span<const uint8_t> header);

}  // namespace keel
