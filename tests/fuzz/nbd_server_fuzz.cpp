// The NBD server's parsers with any client bytes (storage/nbd_negotiation.h,
// storage/nbd_wire.h): the handshake and option haggling, fed in chunks of
// the sizes the input's first byte picks, then the requests that follow a
// successful GO or EXPORT_NAME. Input: [chunk seed][client bytes...]. The
// server never answers more than a bounded amount per byte received, never
// opens what the catalog refuses, and never reads past the input.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>

#include "storage/nbd_negotiation.h"
#include "storage/nbd_wire.h"

namespace {

using keel::storage::NbdCatalog;
using keel::storage::NbdExport;

class FuzzCatalog : public NbdCatalog {
 public:
  std::vector<std::string> names_for(const std::string&) const override { return {"disk"}; }
  Lookup find(const std::string& name, const std::string&) const override {
    if (name == "disk")
      return {Verdict::kOpen, {"disk", "/nonexistent", "a disk", 1 << 20, false, nullptr}};
    if (name == "ro") return {Verdict::kOpen, {"ro", "/nonexistent", "", 4096, true, nullptr}};
    if (name == "secret") return {Verdict::kNotAllowed, {}};
    return {};
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const unsigned chunk = 1 + data[0] % 64;
  FuzzCatalog catalog;
  keel::storage::NbdServerNegotiation negotiation(catalog, "192.0.2.1", [](const NbdExport& e) {
    if (e.name == "secret") std::abort();  // the catalog said no: never opened
    return std::string(e.name == "ro" ? "in use" : "");
  });
  std::string in, out;
  size_t at = 1;
  auto state = keel::storage::NbdServerNegotiation::State::kNeedMore;
  while (at < size && state == keel::storage::NbdServerNegotiation::State::kNeedMore) {
    const size_t n = std::min<size_t>(chunk, size - at);
    in.append(reinterpret_cast<const char*>(data + at), n);
    at += n;
    state = negotiation.feed(in, out);
    // Each option gets a bounded answer (LIST: one export here).
    if (out.size() > 64 * (at + 1) + 4096) std::abort();
  }
  if (state != keel::storage::NbdServerNegotiation::State::kTransmission) return 0;
  if (negotiation.chosen().name != "disk") std::abort();
  in.append(reinterpret_cast<const char*>(data + at), size - at);
  size_t pos = 0;
  while (in.size() - pos >= keel::storage::nbd::kRequestSize) {
    auto request = keel::storage::nbd::parse_request(
        std::span<const uint8_t, keel::storage::nbd::kRequestSize>(
            reinterpret_cast<const uint8_t*>(in.data() + pos), keel::storage::nbd::kRequestSize));
    if (!request) break;
    pos += keel::storage::nbd::kRequestSize;
    if (request->type == keel::storage::nbd::kCmdWrite) {
      if (request->length > keel::storage::nbd::kMaxPayload) break;
      pos += std::min<size_t>(request->length, in.size() - pos);
    }
  }
  return 0;
}
