// The NBD protocol's numbers and its two fixed-size messages of the
// transmission phase (NetworkBlockDevice/nbd doc/proto.md: fixed newstyle
// handshake, simple replies only), for Keel's server and its client. Every
// integer on the wire is big-endian.
#pragma once

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>

namespace keel::storage::nbd {

constexpr uint64_t kInitMagic = 0x4e42444d41474943ull;    // "NBDMAGIC"
constexpr uint64_t kOptionMagic = 0x49484156454f5054ull;  // "IHAVEOPT"
constexpr uint64_t kOptionReplyMagic = 0x0003e889045565a9ull;
constexpr uint32_t kRequestMagic = 0x25609513;
constexpr uint32_t kSimpleReplyMagic = 0x67446698;

// Handshake flags (server) and client flags.
constexpr uint16_t kFlagFixedNewstyle = 1 << 0;
constexpr uint16_t kFlagNoZeroes = 1 << 1;
constexpr uint32_t kClientFixedNewstyle = 1 << 0;
constexpr uint32_t kClientNoZeroes = 1 << 1;

enum Option : uint32_t {
  kOptExportName = 1,
  kOptAbort = 2,
  kOptList = 3,
  kOptStartTls = 5,
  kOptInfo = 6,
  kOptGo = 7,
  kOptStructuredReply = 8,
};

enum ReplyType : uint32_t {
  kRepAck = 1,
  kRepServer = 2,
  kRepInfo = 3,
  kRepErrUnsup = 0x80000001,
  kRepErrPolicy = 0x80000002,
  kRepErrInvalid = 0x80000003,
  kRepErrUnknown = 0x80000006,
  kRepErrTooBig = 0x80000009,
};

enum Info : uint16_t { kInfoExport = 0, kInfoName = 1, kInfoDescription = 2, kInfoBlockSize = 3 };

// Transmission flags.
constexpr uint16_t kHasFlags = 1 << 0;
constexpr uint16_t kReadOnly = 1 << 1;
constexpr uint16_t kSendFlush = 1 << 2;
constexpr uint16_t kSendFua = 1 << 3;
constexpr uint16_t kSendTrim = 1 << 5;
constexpr uint16_t kSendWriteZeroes = 1 << 6;

enum Command : uint16_t {
  kCmdRead = 0,
  kCmdWrite = 1,
  kCmdDisconnect = 2,
  kCmdFlush = 3,
  kCmdTrim = 4,
  kCmdCache = 5,
  kCmdWriteZeroes = 6,
};
constexpr uint16_t kCmdFlagFua = 1 << 0;
constexpr uint16_t kCmdFlagNoHole = 1 << 1;

// Error values of replies (the protocol's, not the host's errno).
constexpr uint32_t kEperm = 1, kEio = 5, kEnomem = 12, kEinval = 22, kEnospc = 28, kEoverflow = 75,
                   kEnotsup = 95, kEshutdown = 108;

// The largest READ or WRITE payload either side accepts: the protocol's
// default maximum (32 MiB), which every client keeps to.
constexpr uint32_t kMaxPayload = 32u << 20;
// Option data beyond this is refused (export names are at most 4096 bytes).
constexpr uint32_t kMaxOptionData = 8192;

constexpr size_t kRequestSize = 28;
constexpr size_t kSimpleReplySize = 16;

inline uint64_t load_be(const uint8_t* p, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n; ++i) v = (v << 8) | p[i];
  return v;
}
inline void append_be(std::string& out, uint64_t v, size_t n) {
  for (size_t i = n; i-- > 0;) out.push_back(static_cast<char>(v >> (8 * i)));
}

struct Request {
  uint16_t flags = 0;
  uint16_t type = 0;
  uint64_t cookie = 0;
  uint64_t offset = 0;
  uint32_t length = 0;
};

// The request header at the start of `bytes` (28 bytes; its WRITE payload
// follows it). nullopt when the magic is wrong: the stream cannot be
// resynchronised, so the connection ends.
inline std::optional<Request> parse_request(std::span<const uint8_t, kRequestSize> bytes) {
  if (load_be(bytes.data(), 4) != kRequestMagic) return std::nullopt;
  Request r;
  r.flags = static_cast<uint16_t>(load_be(bytes.data() + 4, 2));
  r.type = static_cast<uint16_t>(load_be(bytes.data() + 6, 2));
  r.cookie = load_be(bytes.data() + 8, 8);
  r.offset = load_be(bytes.data() + 16, 8);
  r.length = static_cast<uint32_t>(load_be(bytes.data() + 24, 4));
  return r;
}

inline void append_request(std::string& out, const Request& r) {
  append_be(out, kRequestMagic, 4);
  append_be(out, r.flags, 2);
  append_be(out, r.type, 2);
  append_be(out, r.cookie, 8);
  append_be(out, r.offset, 8);
  append_be(out, r.length, 4);
}

struct SimpleReply {
  uint32_t error = 0;
  uint64_t cookie = 0;
};

// A simple reply's header; nullopt when the magic is wrong (a structured
// reply, which Keel's client never asks for, or garbage).
inline std::optional<SimpleReply> parse_simple_reply(std::span<const uint8_t, kSimpleReplySize> b) {
  if (load_be(b.data(), 4) != kSimpleReplyMagic) return std::nullopt;
  return SimpleReply{static_cast<uint32_t>(load_be(b.data() + 4, 4)), load_be(b.data() + 8, 8)};
}

// The host errno for a reply's error (unknown values as EIO).
inline int errno_for_error(uint32_t error) {
  switch (error) {
    case kEperm:
      return EPERM;
    case kEnomem:
      return ENOMEM;
    case kEinval:
      return EINVAL;
    case kEnospc:
      return ENOSPC;
    case kEoverflow:
      return EOVERFLOW;
    case kEnotsup:
      return ENOTSUP;
    case kEshutdown:
      return ESHUTDOWN;
    default:
      return EIO;
  }
}

inline void append_simple_reply(std::string& out, uint32_t error, uint64_t cookie) {
  append_be(out, kSimpleReplyMagic, 4);
  append_be(out, error, 4);
  append_be(out, cookie, 8);
}

// A peer's bytes, fit for a log line: at most 64, non-printable as '?'.
inline std::string printable(const std::string& text) {
  std::string out = text.substr(0, 64);
  for (char& c : out) {
    if (c < 0x20 || c > 0x7e) c = '?';
  }
  return out;
}

// The protocol's error for a host errno (ENOSPC, EPERM, EINVAL, else EIO).
inline uint32_t error_for_errno(int err) {
  switch (err) {
    case EPERM:
    case EROFS:
      return kEperm;
    case ENOSPC:
    case EDQUOT:
    case EFBIG:
      return kEnospc;
    case EINVAL:
      return kEinval;
    case ENOMEM:
      return kEnomem;
    default:
      return kEio;
  }
}

}  // namespace keel::storage::nbd
