#include "storage/nbd_client_handshake.h"

#include <algorithm>
#include <bit>

#include "storage/nbd_wire.h"

namespace keel::storage {

using namespace nbd;

namespace {

constexpr size_t kGreetingSize = 18;     // NBDMAGIC, IHAVEOPT, handshake flags
constexpr size_t kReplyHeaderSize = 20;  // magic, option, type, length
// Option replies carry names and descriptions: a few KiB at most.
constexpr uint32_t kMaxReplyData = 64 << 10;
// A server that keeps sending INFO replies without an ACK is not a server.
constexpr unsigned kMaxReplies = 256;

std::string reply_name(uint32_t type) {
  switch (type) {
    case kRepErrUnsup:
      return "unsupported";
    case kRepErrPolicy:
      return "refused by policy";
    case kRepErrInvalid:
      return "invalid";
    case kRepErrUnknown:
      return "unknown export";
    case kRepErrTooBig:
      return "too big";
    default:
      return "error " + std::to_string(type & 0x7fffffff);
  }
}

}  // namespace

NbdClientHandshake::NbdClientHandshake(std::string export_name, Goal goal)
    : name_(std::move(export_name)), goal_(goal) {}

NbdClientHandshake::State NbdClientHandshake::fail(std::string why) {
  reason_ = std::move(why);
  step_ = Step::kDone;
  state_ = State::kFailed;
  return state_;
}

void NbdClientHandshake::send_option(std::string& out, uint32_t option, const std::string& data) {
  append_be(out, kOptionMagic, 8);
  append_be(out, option, 4);
  append_be(out, data.size(), 4);
  out += data;
  asked_ = option;
}

NbdClientHandshake::State NbdClientHandshake::feed(std::string& in, std::string& out) {
  auto p = [&in] { return reinterpret_cast<const uint8_t*>(in.data()); };
  while (state_ == State::kNeedMore) {
    switch (step_) {
      case Step::kGreeting: {
        if (in.size() < kGreetingSize) return state_;
        if (load_be(p(), 8) != kInitMagic) return fail("the server did not greet as NBD does");
        if (load_be(p() + 8, 8) != kOptionMagic)
          return fail("the server speaks oldstyle NBD (Keel needs fixed newstyle)");
        const auto flags = static_cast<uint16_t>(load_be(p() + 16, 2));
        in.erase(0, kGreetingSize);
        if (!(flags & kFlagFixedNewstyle))
          return fail("the server does not offer fixed newstyle NBD");
        no_zeroes_ = (flags & kFlagNoZeroes) != 0;
        append_be(out, kClientFixedNewstyle | (no_zeroes_ ? kClientNoZeroes : 0), 4);
        // GO or INFO: the name, and one information request (block sizes).
        std::string data;
        append_be(data, name_.size(), 4);
        data += name_;
        append_be(data, 1, 2);
        append_be(data, kInfoBlockSize, 2);
        send_option(out, goal_ == Goal::kOpen ? kOptGo : kOptInfo, data);
        step_ = Step::kOptionReplies;
        break;
      }
      case Step::kOptionReplies: {
        if (in.size() < kReplyHeaderSize) return state_;
        if (load_be(p(), 8) != kOptionReplyMagic)
          return fail("the server's option reply has a wrong magic");
        const auto option = static_cast<uint32_t>(load_be(p() + 8, 4));
        const auto type = static_cast<uint32_t>(load_be(p() + 12, 4));
        const uint64_t length = load_be(p() + 16, 4);
        if (option != asked_) {
          return fail("the server answered option " + std::to_string(option) + ", not " +
                      std::to_string(asked_));
        }
        if (length > kMaxReplyData) {
          return fail("the server's option reply holds " + std::to_string(length) +
                      " bytes (at most " + std::to_string(kMaxReplyData) + ")");
        }
        if (in.size() < kReplyHeaderSize + length) return state_;
        const std::string data = in.substr(kReplyHeaderSize, length);
        in.erase(0, kReplyHeaderSize + length);
        if (++replies_ > kMaxReplies) return fail("the server sent option replies without end");
        option_reply(option, type, data, out);
        break;
      }
      case Step::kExportNameReply: {
        const size_t need = 10 + (no_zeroes_ ? 0 : 124);
        if (in.size() < need) return state_;
        info_.size = load_be(p(), 8);
        info_.flags = static_cast<uint16_t>(load_be(p() + 8, 2));
        in.erase(0, need);
        if (!(info_.flags & kHasFlags))
          return fail("the server's transmission flags lack HAS_FLAGS");
        step_ = Step::kDone;
        state_ = State::kReady;
        break;
      }
      case Step::kDone:
        return state_;
    }
  }
  return state_;
}

NbdClientHandshake::State NbdClientHandshake::option_reply(uint32_t option, uint32_t type,
                                                           const std::string& data,
                                                           std::string& out) {
  if (type == kRepInfo) return info_reply(data);
  if (type == kRepAck) {
    if (!have_export_) return fail("the server acknowledged without saying the export's size");
    if (goal_ == Goal::kDescribe) send_option(out, kOptAbort, "");
    step_ = Step::kDone;
    state_ = State::kReady;
    return state_;
  }
  if (type & 0x80000000u) {
    // Old servers know no GO: EXPORT_NAME opens the export without a reply
    // header (and says nothing of block sizes).
    if (type == kRepErrUnsup && option == kOptGo) {
      send_option(out, kOptExportName, name_);
      step_ = Step::kExportNameReply;
      return state_;
    }
    unknown_export_ = type == kRepErrUnknown;
    std::string why = "the server refused export '" + printable(name_) + "': " + reply_name(type);
    if (!data.empty()) why += " (" + printable(data) + ")";
    if (goal_ == Goal::kDescribe || option == kOptGo) send_option(out, kOptAbort, "");
    return fail(why);
  }
  return fail("the server sent option reply type " + std::to_string(type) + " to option " +
              std::to_string(option));
}

NbdClientHandshake::State NbdClientHandshake::info_reply(const std::string& data) {
  const auto* p = reinterpret_cast<const uint8_t*>(data.data());
  if (data.size() < 2) return fail("the server sent an INFO reply without a type");
  switch (load_be(p, 2)) {
    case kInfoExport:
      if (data.size() != 12) return fail("the server's export INFO is not 12 bytes");
      info_.size = load_be(p + 2, 8);
      info_.flags = static_cast<uint16_t>(load_be(p + 10, 2));
      if (!(info_.flags & kHasFlags)) return fail("the server's transmission flags lack HAS_FLAGS");
      have_export_ = true;
      return state_;
    case kInfoBlockSize: {
      if (data.size() != 14) return fail("the server's block-size INFO is not 14 bytes");
      const auto min = static_cast<uint32_t>(load_be(p + 2, 4));
      const auto preferred = static_cast<uint32_t>(load_be(p + 6, 4));
      const auto max = static_cast<uint32_t>(load_be(p + 10, 4));
      // doc/proto.md "Block size constraints": powers of two, min at most
      // 64 KiB, preferred at least min, max a multiple of min or all ones
      // (no limit but the protocol's).
      const bool min_ok = std::has_single_bit(min) && min <= (64u << 10);
      const bool max_ok = max == 0xffffffffu || (min_ok && max >= min && max % min == 0);
      if (!min_ok || !std::has_single_bit(preferred) || preferred < min || !max_ok) {
        return fail("the server's block sizes (" + std::to_string(min) + ", " +
                    std::to_string(preferred) + ", " + std::to_string(max) + ") are not valid");
      }
      info_.min_block = min;
      info_.preferred_block = preferred;
      info_.max_payload = std::min(max, kMaxPayload);
      return state_;
    }
    default:
      return state_;  // name, description and what comes later: not needed
  }
}

}  // namespace keel::storage
