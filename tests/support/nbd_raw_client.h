// An NBD client that speaks the protocol byte by byte (storage/nbd_wire.h),
// from a chosen source address, for what the tools never send: tests of
// Keel's NBD server.
#pragma once

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <string>

#include "common/unique_fd.h"
#include "storage/nbd_wire.h"

namespace keel::testing {
namespace nbd_raw {

using namespace storage::nbd;

// A client that speaks the protocol byte by byte, from a chosen source
// address, for what the tools never send.
class RawClient {
 public:
  RawClient(uint16_t port, const std::string& source = "127.0.0.1") {
    fd_ = UniqueFd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in src{};
    src.sin_family = AF_INET;
    ::inet_pton(AF_INET, source.c_str(), &src.sin_addr);
    EXPECT_EQ(::bind(fd_.get(), reinterpret_cast<sockaddr*>(&src), sizeof src), 0);
    sockaddr_in dst{};
    dst.sin_family = AF_INET;
    dst.sin_port = htons(port);
    ::inet_pton(AF_INET, "127.0.0.1", &dst.sin_addr);
    EXPECT_EQ(::connect(fd_.get(), reinterpret_cast<sockaddr*>(&dst), sizeof dst), 0);
    const std::string greeting = read(18);
    EXPECT_EQ(load_be(reinterpret_cast<const uint8_t*>(greeting.data()), 8), kInitMagic);
  }
  void send(const std::string& bytes) {
    ASSERT_EQ(::send(fd_.get(), bytes.data(), bytes.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(bytes.size()));
  }
  // `n` bytes, or fewer when the server closed.
  std::string read(size_t n) {
    std::string out;
    while (out.size() < n) {
      pollfd p{fd_.get(), POLLIN, 0};
      if (::poll(&p, 1, 10000) <= 0) break;
      char buf[65536];
      const ssize_t got = ::recv(fd_.get(), buf, std::min(sizeof buf, n - out.size()), 0);
      if (got <= 0) break;
      out.append(buf, static_cast<size_t>(got));
    }
    return out;
  }
  // What a client does after DISC: no more bytes from it.
  void shutdown_writes() { ::shutdown(fd_.get(), SHUT_WR); }
  bool closed_by_server() {
    pollfd p{fd_.get(), POLLIN, 0};
    if (::poll(&p, 1, 10000) <= 0) return false;
    char c;
    return ::recv(fd_.get(), &c, 1, 0) == 0;
  }
  void option(uint32_t opt, const std::string& data) {
    std::string o;
    append_be(o, kOptionMagic, 8);
    append_be(o, opt, 4);
    append_be(o, data.size(), 4);
    send(o + data);
  }
  struct Reply {
    uint32_t type = 0;
    std::string data;
  };
  Reply option_reply() {
    const std::string head = read(20);
    if (head.size() < 20) return {0, "(closed)"};
    const auto* p = reinterpret_cast<const uint8_t*>(head.data());
    EXPECT_EQ(load_be(p, 8), kOptionReplyMagic);
    Reply r{static_cast<uint32_t>(load_be(p + 12, 4)), ""};
    r.data = read(load_be(p + 16, 4));
    return r;
  }
  // GO for `name`: the final reply's type (after any INFO replies).
  uint32_t go(const std::string& name) {
    std::string data;
    append_be(data, name.size(), 4);
    data += name;
    append_be(data, 0, 2);
    option(kOptGo, data);
    for (;;) {
      Reply r = option_reply();
      if (r.type != kRepInfo) {
        last_message_ = r.data;
        return r.type;
      }
    }
  }
  void request(uint16_t type, uint64_t offset, uint32_t length, uint16_t flags = 0,
               const std::string& payload = "") {
    std::string out;
    append_request(out, {flags, type, ++cookie_, offset, length});
    send(out + payload);
  }
  // The simple reply's error (after checking its magic and cookie).
  uint32_t reply_error(std::string* data = nullptr, size_t length = 0) {
    const std::string head = read(16);
    if (head.size() < 16) return 0xffffffff;
    const auto* p = reinterpret_cast<const uint8_t*>(head.data());
    EXPECT_EQ(load_be(p, 4), kSimpleReplyMagic);
    EXPECT_EQ(load_be(p + 8, 8), cookie_);
    const auto error = static_cast<uint32_t>(load_be(p + 4, 4));
    if (error == 0 && data) *data = read(length);
    return error;
  }
  const std::string& last_message() const { return last_message_; }

 private:
  UniqueFd fd_;
  uint64_t cookie_ = 0;
  std::string last_message_;
};

std::string client_flags(uint32_t flags) {
  std::string out;
  append_be(out, flags, 4);
  return out;
}

}  // namespace nbd_raw

using nbd_raw::client_flags;
using nbd_raw::RawClient;

}  // namespace keel::testing
