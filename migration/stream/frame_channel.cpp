#include "migration/stream/frame_channel.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#include <array>
#include <cerrno>
#include <cstring>

#include "common/error.h"

namespace keel::migration {

FrameChannel::FrameChannel(UniqueFd socket, std::string peer, std::chrono::milliseconds timeout)
    : socket_(std::move(socket)), peer_(std::move(peer)) {
  set_timeout(timeout);
}

void FrameChannel::set_timeout(std::chrono::milliseconds timeout) {
  timeout_ = timeout;
  // A peer that stops reading: a send waits this long, then fails.
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout_.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((timeout_.count() % 1000) * 1000);
  ::setsockopt(socket_.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

void FrameChannel::set_unacked_limit(std::chrono::milliseconds limit) {
  const auto ms = static_cast<unsigned>(limit.count());
  if (::setsockopt(socket_.get(), IPPROTO_TCP, TCP_USER_TIMEOUT, &ms, sizeof ms) != 0)
    throw_errno("TCP_USER_TIMEOUT on the migration stream");
  unacked_limit_ = limit;
}

std::string FrameChannel::failure(int error) const {
  if (error == ETIMEDOUT && unacked_limit_.count() > 0) {
    return peer_ + "'s host acknowledged nothing for " + std::to_string(unacked_limit_.count()) +
           " ms (gone or cut off)";
  }
  return std::strerror(error);
}

bool FrameChannel::readable_within(std::chrono::milliseconds wait) {
  if (shut_down_.load()) throw StreamError("cancelled");
  pollfd p{socket_.get(), POLLIN, 0};
  const int n = ::poll(&p, 1, static_cast<int>(wait.count()));
  if (n < 0 && errno != EINTR) throw_errno("poll on the migration stream");
  return n > 0;
}

bool FrameChannel::wait_closed(std::chrono::milliseconds timeout) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  std::array<uint8_t, 4096> scratch{};
  for (;;) {
    if (shut_down_.load()) return false;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        until - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd p{socket_.get(), POLLIN, 0};
    const int n = ::poll(&p, 1, static_cast<int>(left.count()));
    if (n < 0 && errno != EINTR) return false;
    if (n <= 0) continue;
    const ssize_t r = ::recv(socket_.get(), scratch.data(), scratch.size(), 0);
    if (r == 0) return !shut_down_.load();
    if (r < 0 && errno != EINTR && errno != EAGAIN) return errno == ECONNRESET;
  }
}

void FrameChannel::shutdown() {
  shut_down_.store(true);
  ::shutdown(socket_.get(), SHUT_RDWR);
}

void FrameChannel::write_all(std::span<iovec> parts) {
  size_t first = 0;
  while (first < parts.size()) {
    if (shut_down_.load()) throw StreamError("cancelled");
    msghdr msg{};
    msg.msg_iov = parts.data() + first;
    msg.msg_iovlen = std::min<size_t>(parts.size() - first, IOV_MAX);
    ssize_t n = ::sendmsg(socket_.get(), &msg, MSG_NOSIGNAL | (held_ ? MSG_MORE : 0));
    if (n < 0) {
      if (errno == EINTR) continue;
      if (shut_down_.load()) throw StreamError("cancelled");
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        throw StreamError(peer_ + " stopped reading for " + std::to_string(timeout_.count()) +
                          " ms");
      }
      throw StreamError("sending to " + peer_ + ": " + failure(errno));
    }
    sent_.fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
    auto left = static_cast<size_t>(n);
    while (first < parts.size() && left >= parts[first].iov_len) left -= parts[first++].iov_len;
    if (first < parts.size()) {
      parts[first].iov_base = static_cast<uint8_t*>(parts[first].iov_base) + left;
      parts[first].iov_len -= left;
    }
  }
}

void FrameChannel::send_magic() {
  iovec part{const_cast<uint8_t*>(kStreamMagic.data()), kStreamMagic.size()};
  write_all({&part, 1});
}

void FrameChannel::send(FrameType type, std::span<const uint8_t> payload) {
  iovec part{const_cast<uint8_t*>(payload.data()), payload.size()};
  send_gathered(type, {&part, payload.empty() ? 0u : 1u});
}

void FrameChannel::send(FrameType type, const google::protobuf::MessageLite& message) {
  encoded_.clear();
  if (!message.SerializeToString(&encoded_))
    throw std::runtime_error(std::string("cannot encode the ") + frame_name(type) + " frame");
  send(type, {reinterpret_cast<const uint8_t*>(encoded_.data()), encoded_.size()});
}

void FrameChannel::send_gathered(FrameType type, std::span<const iovec> parts) {
  uint64_t length = 0;
  for (const iovec& p : parts) length += p.iov_len;
  if (length > kMaxFramePayload) {
    throw std::logic_error(std::string(frame_name(type)) + " frame too large to send");
  }
  auto header = encode_frame_header(type, static_cast<uint32_t>(length));
  std::vector<iovec> all;
  all.reserve(parts.size() + 1);
  all.push_back({header.data(), header.size()});
  all.insert(all.end(), parts.begin(), parts.end());
  write_all(all);
}

void FrameChannel::read_exact(uint8_t* into, size_t length, const char* what) {
  size_t got = 0;
  while (got < length) {
    if (shut_down_.load()) throw StreamError("cancelled");
    pollfd p{socket_.get(), POLLIN, 0};
    int n = ::poll(&p, 1, static_cast<int>(timeout_.count()));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno("poll on the migration stream");
    }
    if (n == 0) {
      throw StreamError(peer_ + " sent nothing for " + std::to_string(timeout_.count()) +
                        " ms (waiting for " + what + ")");
    }
    ssize_t r = ::recv(socket_.get(), into + got, length - got, 0);
    if (r < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      if (shut_down_.load()) throw StreamError("cancelled");
      throw StreamError("receiving from " + peer_ + ": " + failure(errno));
    }
    if (r == 0) {
      if (shut_down_.load()) throw StreamError("cancelled");
      throw StreamError(peer_ + " closed the connection" +
                        (got == 0 ? std::string(" (waiting for ") + what + ")"
                                  : std::string(" in the middle of ") + what));
    }
    got += static_cast<size_t>(r);
    last_received_.store(std::chrono::steady_clock::now().time_since_epoch().count(),
                         std::memory_order_relaxed);
    received_ += static_cast<uint64_t>(r);
  }
}

void FrameChannel::expect_magic() {
  std::array<uint8_t, 8> magic{};
  read_exact(magic.data(), magic.size(), "the stream's first bytes");
  if (magic != kStreamMagic) throw StreamError("not a Keel migration stream (bad magic)");
}

FrameChannel::Frame FrameChannel::receive() {
  std::array<uint8_t, 8> header_bytes{};
  read_exact(header_bytes.data(), header_bytes.size(), "a frame header");
  const FrameHeader header = decode_frame_header(header_bytes);
  if (buffer_.size() < header.length) buffer_.resize(header.length);
  read_exact(buffer_.data(), header.length, frame_name(header.type));
  return {header.type, {buffer_.data(), header.length}};
}

void FrameChannel::receive_message(FrameType type, google::protobuf::MessageLite& message) {
  Frame frame = receive();
  if (frame.type != type) {
    throw StreamError(std::string("expected a ") + frame_name(type) + " frame, got " +
                      frame_name(frame.type));
  }
  if (!message.ParseFromArray(frame.payload.data(), static_cast<int>(frame.payload.size()))) {
    throw StreamError(std::string(frame_name(type)) + " frame does not parse");
  }
}

}  // namespace keel::migration
