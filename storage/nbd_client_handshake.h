// The client's side of NBD's fixed newstyle handshake (doc/proto.md), as a
// state machine over bytes: fed what the server sent, it appends what to
// answer, until the export is open (GO, or EXPORT_NAME where a server does
// not know GO), only described (INFO, then ABORT) or refused. No socket in
// here, so the fuzz target drives it directly; every length and value the
// server sends is checked before it is used.
#pragma once

#include <cstdint>
#include <string>

namespace keel::storage {

struct NbdExportInfo {
  uint64_t size = 0;
  uint16_t flags = 0;  // transmission flags (nbd::kReadOnly, kSendFlush, ...)
  // NBD_INFO_BLOCK_SIZE, or the protocol's defaults when the server sends none.
  uint32_t min_block = 1;
  uint32_t preferred_block = 4096;
  uint32_t max_payload = 32u << 20;
};

class NbdClientHandshake {
 public:
  enum class State { kNeedMore, kReady, kFailed };
  enum class Goal { kOpen, kDescribe };

  NbdClientHandshake(std::string export_name, Goal goal);

  // Consumes from the front of `in` what it can; appends what to send to
  // `out`. kReady: info() holds the export (kOpen: requests may follow at
  // once; bytes left in `in` belong to the transmission phase); kFailed:
  // reason() says why (send `out` first, it may hold an ABORT).
  State feed(std::string& in, std::string& out);

  const NbdExportInfo& info() const { return info_; }
  const std::string& reason() const { return reason_; }
  // The server answered that it has no such export (or may not tell).
  bool unknown_export() const { return unknown_export_; }

 private:
  enum class Step { kGreeting, kOptionReplies, kExportNameReply, kDone };
  State option_reply(uint32_t option, uint32_t type, const std::string& data, std::string& out);
  State info_reply(const std::string& data);
  void send_option(std::string& out, uint32_t option, const std::string& data);
  State fail(std::string why);

  std::string name_;
  Goal goal_;
  Step step_ = Step::kGreeting;
  bool no_zeroes_ = false;
  bool have_export_ = false;
  bool unknown_export_ = false;
  uint32_t asked_ = 0;    // the option whose replies are awaited
  unsigned replies_ = 0;  // option replies so far
  NbdExportInfo info_;
  std::string reason_;
  State state_ = State::kNeedMore;
};

}  // namespace keel::storage
