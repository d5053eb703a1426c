#include "storage/nbd_negotiation.h"

#include <algorithm>

#include "storage/nbd_wire.h"

namespace keel::storage {

using namespace nbd;

namespace {

// A client that keeps haggling forever is not a client.
constexpr unsigned kMaxOptions = 1024;

void option_reply(std::string& out, uint32_t option, uint32_t type, const std::string& data = "") {
  append_be(out, kOptionReplyMagic, 8);
  append_be(out, option, 4);
  append_be(out, type, 4);
  append_be(out, data.size(), 4);
  out += data;
}

uint16_t transmission_flags(const NbdExport& e) {
  uint16_t flags = kHasFlags | kSendFlush | kSendFua;
  if (e.read_only) {
    flags |= kReadOnly;
  } else {
    flags |= kSendTrim | kSendWriteZeroes;
  }
  return flags;
}

}  // namespace

NbdServerNegotiation::NbdServerNegotiation(const NbdCatalog& catalog, std::string client,
                                           Prepare prepare)
    : catalog_(catalog), client_(std::move(client)), prepare_(std::move(prepare)) {}

std::string NbdServerNegotiation::greeting() {
  std::string out;
  append_be(out, kInitMagic, 8);
  append_be(out, kOptionMagic, 8);
  append_be(out, kFlagFixedNewstyle | kFlagNoZeroes, 2);
  return out;
}

NbdServerNegotiation::State NbdServerNegotiation::close(std::string why) {
  reason_ = std::move(why);
  state_ = State::kClosed;
  return state_;
}

NbdServerNegotiation::State NbdServerNegotiation::feed(std::string& in, std::string& out) {
  while (state_ == State::kNeedMore) {
    if (!have_flags_) {
      if (in.size() < 4) return state_;
      const auto flags =
          static_cast<uint32_t>(load_be(reinterpret_cast<const uint8_t*>(in.data()), 4));
      in.erase(0, 4);
      // Bits the server did not offer end the session (the protocol's MUST).
      if (flags & ~(kClientFixedNewstyle | kClientNoZeroes))
        return close("client flags 0x" + std::to_string(flags) + " hold bits never offered");
      no_zeroes_ = (flags & kClientNoZeroes) != 0;
      have_flags_ = true;
      continue;
    }
    if (skipping_ > 0) {
      const uint64_t n = std::min<uint64_t>(skipping_, in.size());
      in.erase(0, n);
      skipping_ -= n;
      if (skipping_ > 0) return state_;
      if (skipped_option_ == kOptExportName)
        return close("export name longer than the protocol allows");
      option_reply(out, skipped_option_, kRepErrTooBig, "option data too long");
      continue;
    }
    if (in.size() < 16) return state_;
    const auto* p = reinterpret_cast<const uint8_t*>(in.data());
    if (load_be(p, 8) != kOptionMagic) return close("an option without the IHAVEOPT magic");
    const auto opt = static_cast<uint32_t>(load_be(p + 8, 4));
    const auto length = static_cast<uint32_t>(load_be(p + 12, 4));
    if (++options_seen_ > kMaxOptions) return close("more than 1024 options");
    if (length > kMaxOptionData) {
      in.erase(0, 16);
      skipping_ = length;
      skipped_option_ = opt;
      continue;
    }
    if (in.size() < 16 + static_cast<size_t>(length)) return state_;
    const std::string data = in.substr(16, length);
    in.erase(0, 16 + static_cast<size_t>(length));
    option(opt, data, out);
  }
  return state_;
}

NbdServerNegotiation::State NbdServerNegotiation::option(uint32_t opt, const std::string& data,
                                                         std::string& out) {
  switch (opt) {
    case kOptAbort:
      option_reply(out, opt, kRepAck);
      return close("the client aborted");
    case kOptList: {
      if (!data.empty()) {
        option_reply(out, opt, kRepErrInvalid, "LIST takes no data");
        return state_;
      }
      for (const auto& name : catalog_.names_for(client_)) {
        std::string entry;
        append_be(entry, name.size(), 4);
        entry += name;
        option_reply(out, opt, kRepServer, entry);
      }
      option_reply(out, opt, kRepAck);
      return state_;
    }
    case kOptExportName: {
      auto found = catalog_.find(data, client_);
      if (found.verdict != NbdCatalog::Verdict::kOpen)
        return close("export '" + printable(data) + "' is unknown or not allowed for " + client_);
      if (std::string why = prepare_(found.export_); !why.empty()) return close(why);
      chosen_ = found.export_;
      append_be(out, chosen_.size, 8);
      append_be(out, transmission_flags(chosen_), 2);
      if (!no_zeroes_) out.append(124, '\0');
      state_ = State::kTransmission;
      return state_;
    }
    case kOptInfo:
    case kOptGo:
      return info_or_go(opt, data, out);
    default:
      // STARTTLS, STRUCTURED_REPLY, meta contexts and whatever comes later.
      option_reply(out, opt, kRepErrUnsup, "not supported by Keel's NBD server");
      return state_;
  }
}

NbdServerNegotiation::State NbdServerNegotiation::info_or_go(uint32_t opt, const std::string& data,
                                                             std::string& out) {
  const auto* p = reinterpret_cast<const uint8_t*>(data.data());
  if (data.size() < 6) {
    option_reply(out, opt, kRepErrInvalid, "INFO/GO data shorter than 6 bytes");
    return state_;
  }
  const uint64_t name_length = load_be(p, 4);
  if (name_length > data.size() - 6) {
    option_reply(out, opt, kRepErrInvalid, "export name longer than the option");
    return state_;
  }
  const std::string name = data.substr(4, name_length);
  const uint64_t requests = load_be(p + 4 + name_length, 2);
  if (data.size() != 6 + name_length + 2 * requests) {
    option_reply(out, opt, kRepErrInvalid, "INFO/GO length does not match its requests");
    return state_;
  }
  std::vector<uint16_t> wanted;
  for (uint64_t i = 0; i < requests; ++i)
    wanted.push_back(static_cast<uint16_t>(load_be(p + 6 + name_length + 2 * i, 2)));
  auto asked = [&wanted](uint16_t type) {
    return std::find(wanted.begin(), wanted.end(), type) != wanted.end();
  };

  auto found = catalog_.find(name, client_);
  // Not allowed is answered as unknown: a client learns no names it may
  // not open.
  if (found.verdict != NbdCatalog::Verdict::kOpen) {
    option_reply(out, opt, kRepErrUnknown,
                 "no export named '" + printable(name) + "' for " + client_);
    return state_;
  }
  if (opt == kOptGo) {
    if (std::string why = prepare_(found.export_); !why.empty()) {
      option_reply(out, opt, kRepErrPolicy, why);
      return state_;
    }
  }
  const NbdExport& e = found.export_;
  std::string info;
  append_be(info, kInfoExport, 2);
  append_be(info, e.size, 8);
  append_be(info, transmission_flags(e), 2);
  option_reply(out, opt, kRepInfo, info);
  if (asked(kInfoName)) {
    info.clear();
    append_be(info, kInfoName, 2);
    option_reply(out, opt, kRepInfo, info + e.name);
  }
  if (asked(kInfoDescription) && !e.description.empty()) {
    info.clear();
    append_be(info, kInfoDescription, 2);
    option_reply(out, opt, kRepInfo, info + e.description);
  }
  if (asked(kInfoBlockSize)) {
    info.clear();
    append_be(info, kInfoBlockSize, 2);
    append_be(info, 1, 4);            // any offset and length work
    append_be(info, 4096, 4);         // what the file system likes
    append_be(info, kMaxPayload, 4);  // the protocol's default
    option_reply(out, opt, kRepInfo, info);
  }
  option_reply(out, opt, kRepAck);
  if (opt == kOptGo) {
    chosen_ = e;
    state_ = State::kTransmission;
  }
  return state_;
}

}  // namespace keel::storage
