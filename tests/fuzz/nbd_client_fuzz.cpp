// keel-vmm's NBD client against any server bytes: the handshake (greeting,
// option replies, INFO, block sizes, the EXPORT_NAME fallback), then the
// transmission phase with four requests in flight (a read, a write, a
// flush, a read whose data is dropped), its replies read from a socket.
// Input: a 16-bit little-endian length, that many handshake bytes, the
// rest the server's replies. Seeds: make_seeds.py.
#include <sys/socket.h>

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/unique_fd.h"
#include "storage/nbd_client_handshake.h"
#include "storage/nbd_client_session.h"
#include "storage/nbd_wire.h"

using namespace keel;
using namespace keel::storage;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const size_t split = std::min<size_t>(size - 2, data[0] | (data[1] << 8));
  std::string in(reinterpret_cast<const char*>(data + 2), split);
  const uint8_t* rest = data + 2 + split;
  const size_t rest_size = size - 2 - split;

  for (auto goal : {NbdClientHandshake::Goal::kOpen, NbdClientHandshake::Goal::kDescribe}) {
    std::string copy = in, out;
    NbdClientHandshake handshake("disk", goal);
    // In two feeds, as bytes arrive in pieces.
    std::string first = copy.substr(0, copy.size() / 2), second = copy.substr(copy.size() / 2);
    auto state = handshake.feed(first, out);
    if (state == NbdClientHandshake::State::kNeedMore) {
      first += second;
      state = handshake.feed(first, out);
    }
    if (state == NbdClientHandshake::State::kReady) {
      const NbdExportInfo& info = handshake.info();
      if (info.max_payload > nbd::kMaxPayload || info.min_block > info.preferred_block)
        __builtin_trap();
    }
  }

  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) return 0;
  UniqueFd client(fds[0]), server(fds[1]);
  // The server's bytes wait in the socket (a socketpair holds far more than
  // an input); then it closes its side.
  size_t sent = 0;
  while (sent < rest_size) {
    const ssize_t n = ::send(server.get(), rest + sent, rest_size - sent, MSG_DONTWAIT);
    if (n <= 0) break;
    sent += static_cast<size_t>(n);
  }
  ::shutdown(server.get(), SHUT_WR);

  std::vector<uint8_t> read_buffer(4096), write_buffer(4096, 0x5a), dropped(8192);
  NbdClientSession session(client.get());
  session.send(NbdPiece{
      .cookie = 1, .command = nbd::kCmdRead, .length = 4096, .data = {{read_buffer.data(), 4096}}});
  session.send(NbdPiece{.cookie = 2,
                        .command = nbd::kCmdWrite,
                        .length = 4096,
                        .data = {{write_buffer.data(), 4096}}});
  session.send(NbdPiece{.cookie = 3, .command = nbd::kCmdFlush});
  session.send(NbdPiece{.cookie = 4,
                        .command = nbd::kCmdRead,
                        .length = 8192,
                        .data = {{dropped.data(), 8192}},
                        .drop_data = true});
  session.write_output();
  unsigned answered = 0;
  while (session.read_input([&](NbdPiece& piece, int64_t result) {
    ++answered;
    if (result > 0 && static_cast<uint64_t>(result) != piece.length) __builtin_trap();
  })) {
    // read_input returns true only when the socket has nothing more now,
    // which a closed peer never says: reaching here twice is a bug.
    break;
  }
  if (answered + session.unanswered() != 4) __builtin_trap();
  for (uint8_t b : dropped) {
    if (b != 0) __builtin_trap();  // a dropped read's data went nowhere
  }
  return 0;
}
