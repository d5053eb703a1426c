// The server's side of NBD's fixed newstyle handshake and option haggling
// (doc/proto.md), as a state machine over bytes: fed what the client sent,
// it appends what to answer, until the client picked an export (GO or
// EXPORT_NAME), gave up (ABORT) or broke the protocol. No socket in here,
// so the fuzz target drives it directly.
//
// Options: LIST (the exports this client may open), INFO and GO (export
// size and flags, name, description, block sizes), EXPORT_NAME, ABORT;
// STARTTLS, STRUCTURED_REPLY and the rest are answered "unsupported"
// (simple replies only).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace keel::storage {

struct NbdExport {
  std::string name;
  std::string path;
  std::string description;
  uint64_t size = 0;
  bool read_only = false;
  // Set from outside (the cluster agent, when the VM's owner moved): the
  // connection's writes are refused from then on (EPERM).
  std::shared_ptr<const std::atomic<bool>> revoked;
};

// What the server offers a given client (its address, as text).
class NbdCatalog {
 public:
  enum class Verdict { kOpen, kUnknown, kNotAllowed };
  struct Lookup {
    Verdict verdict = Verdict::kUnknown;
    NbdExport export_;
  };
  virtual ~NbdCatalog() = default;
  virtual std::vector<std::string> names_for(const std::string& client) const = 0;
  virtual Lookup find(const std::string& name, const std::string& client) const = 0;
};

class NbdServerNegotiation {
 public:
  enum class State { kNeedMore, kTransmission, kClosed };
  // `prepare` is called for the export a client chose before the server
  // says yes to it (open the file, take its lock); a non-empty answer is
  // the reason it is refused.
  using Prepare = std::function<std::string(const NbdExport&)>;

  NbdServerNegotiation(const NbdCatalog& catalog, std::string client, Prepare prepare);

  // The server's greeting, sent before anything is read.
  static std::string greeting();
  // Consumes from the front of `in` what it can; appends the answers to
  // `out`. kTransmission: `chosen()` is open and requests follow (bytes
  // left in `in` are the first of them); kClosed: close the connection
  // (`reason()` says why, after `out` is sent).
  State feed(std::string& in, std::string& out);

  const NbdExport& chosen() const { return chosen_; }
  const std::string& reason() const { return reason_; }

 private:
  State option(uint32_t option, const std::string& data, std::string& out);
  State info_or_go(uint32_t option, const std::string& data, std::string& out);
  State close(std::string why);

  const NbdCatalog& catalog_;
  std::string client_;
  Prepare prepare_;
  bool have_flags_ = false;
  bool no_zeroes_ = false;
  unsigned options_seen_ = 0;
  uint64_t skipping_ = 0;  // data of an oversized option still to discard
  uint32_t skipped_option_ = 0;
  NbdExport chosen_;
  std::string reason_;
  State state_ = State::kNeedMore;
};

}  // namespace keel::storage
