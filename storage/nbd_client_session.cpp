#include "storage/nbd_client_session.h"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "storage/nbd_wire.h"

namespace keel::storage {

using namespace nbd;

namespace {

// iovecs handed to one sendmsg or readv (the kernel's IOV_MAX is 1024).
constexpr size_t kMaxIov = 256;

// The iovecs of `data` from byte `skip` on, at most kMaxIov of them.
void append_from(std::vector<iovec>& out, const std::vector<iovec>& data, size_t skip) {
  for (const iovec& v : data) {
    if (out.size() == kMaxIov) return;
    if (skip >= v.iov_len) {
      skip -= v.iov_len;
      continue;
    }
    out.push_back({static_cast<char*>(v.iov_base) + skip, v.iov_len - skip});
    skip = 0;
  }
}

}  // namespace

bool NbdClientSession::fail(std::string why) {
  if (reason_.empty()) reason_ = std::move(why);
  return false;
}

void NbdClientSession::send(NbdPiece piece) {
  const uint64_t cookie = piece.cookie;
  output_.push_back(cookie);
  pieces_.emplace(cookie, std::move(piece));
}

void NbdClientSession::send_disconnect() {
  disconnect_queued_ = true;
}

bool NbdClientSession::write_output() {
  while (!output_.empty() || disconnect_queued_) {
    if (output_.empty()) {
      // Best effort: the server may close first, and nothing waits for it.
      std::string disc;
      append_request(disc, Request{0, kCmdDisconnect, 0, 0, 0});
      (void)!::send(fd_, disc.data(), disc.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      disconnect_queued_ = false;
      return true;
    }
    const NbdPiece& piece = pieces_.at(output_.front());
    if (output_done_ == 0) {
      header_.clear();
      append_request(header_,
                     Request{piece.flags, piece.command, piece.cookie, piece.offset, piece.length});
    }
    std::vector<iovec> iov;
    if (output_done_ < header_.size()) {
      iov.push_back({header_.data() + output_done_, header_.size() - output_done_});
    }
    const size_t total =
        header_.size() + (piece.command == kCmdWrite ? size_t{piece.length} : size_t{0});
    if (piece.command == kCmdWrite) {
      append_from(iov, piece.data,
                  output_done_ > header_.size() ? output_done_ - header_.size() : 0);
    }
    msghdr msg{};
    msg.msg_iov = iov.data();
    msg.msg_iovlen = iov.size();
    // More requests behind this one: let TCP fill its segments.
    const int more = output_.size() > 1 ? MSG_MORE : 0;
    const ssize_t n = ::sendmsg(fd_, &msg, MSG_NOSIGNAL | MSG_DONTWAIT | more);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
      if (errno == EINTR) continue;
      return fail(std::string("sending: ") + std::strerror(errno));
    }
    output_done_ += static_cast<size_t>(n);
    if (output_done_ == total) {
      output_.pop_front();
      output_done_ = 0;
    }
  }
  return true;
}

bool NbdClientSession::read_input(const Done& done) {
  while (true) {
    if (receiving_ != 0) {
      const Progress p = receive_payload(done);
      if (p == Progress::kBroken) return false;
      if (p == Progress::kWouldBlock) return true;
      continue;
    }
    const ssize_t n = ::recv(fd_, reply_ + reply_fill_, sizeof reply_ - reply_fill_, MSG_DONTWAIT);
    if (n == 0) return fail("the server closed the connection");
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
      if (errno == EINTR) continue;
      return fail(std::string("receiving: ") + std::strerror(errno));
    }
    reply_fill_ += static_cast<size_t>(n);
    if (reply_fill_ < sizeof reply_) continue;
    reply_fill_ = 0;
    const auto reply = parse_simple_reply(std::span<const uint8_t, kSimpleReplySize>(reply_));
    if (!reply) return fail("the server sent a reply with a wrong magic");
    auto it = pieces_.find(reply->cookie);
    // Output still holding the piece means the server answered a request
    // it has not read whole.
    const bool unsent = it != pieces_.end() && !output_.empty() &&
                        std::find(output_.begin(), output_.end(), reply->cookie) != output_.end();
    if (it == pieces_.end() || unsent) {
      return fail("the server answered cookie " + std::to_string(reply->cookie) +
                  ", which no request in flight has");
    }
    NbdPiece& piece = it->second;
    if (reply->error == kEshutdown) {
      // The request is not done: it goes to the next connection.
      return fail("the server is shutting down");
    }
    if (reply->error != 0) {
      done(piece, -errno_for_error(reply->error));
      pieces_.erase(it);
      continue;
    }
    if (piece.command == kCmdRead && piece.length > 0) {
      receiving_ = piece.cookie;
      received_ = 0;
      continue;
    }
    const int64_t result = piece.command == kCmdWrite ? int64_t{piece.length} : 0;
    done(piece, result);
    pieces_.erase(it);
  }
}

NbdClientSession::Progress NbdClientSession::receive_payload(const Done& done) {
  NbdPiece& piece = pieces_.at(receiving_);
  std::vector<iovec> iov;
  static thread_local char scratch[64 << 10];
  if (piece.drop_data) {
    iov.push_back({scratch, std::min<size_t>(sizeof scratch, piece.length - received_)});
  } else {
    append_from(iov, piece.data, received_);
  }
  const ssize_t n = ::readv(fd_, iov.data(), static_cast<int>(iov.size()));
  if (n == 0) {
    fail("the server closed the connection in a read's data");
    return Progress::kBroken;
  }
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return Progress::kWouldBlock;
    if (errno == EINTR) return Progress::kMoved;
    fail(std::string("receiving: ") + std::strerror(errno));
    return Progress::kBroken;
  }
  received_ += static_cast<uint32_t>(n);
  if (received_ == piece.length) {
    done(piece, piece.length);
    pieces_.erase(receiving_);
    receiving_ = 0;
  }
  return Progress::kMoved;
}

std::vector<NbdPiece> NbdClientSession::take_unanswered() {
  std::vector<NbdPiece> out;
  out.reserve(pieces_.size());
  for (auto& [cookie, piece] : pieces_) out.push_back(std::move(piece));
  std::sort(out.begin(), out.end(),
            [](const NbdPiece& a, const NbdPiece& b) { return a.cookie < b.cookie; });
  pieces_.clear();
  output_.clear();
  output_done_ = 0;
  receiving_ = 0;
  reply_fill_ = 0;
  return out;
}

void NbdClientSession::for_each_unanswered(const std::function<void(NbdPiece&)>& fn) {
  for (auto& [cookie, piece] : pieces_) fn(piece);
}

}  // namespace keel::storage
