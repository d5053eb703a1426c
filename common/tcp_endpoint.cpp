#include "common/tcp_endpoint.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>

#include <cerrno>
#include <cstring>

#include "common/error.h"

namespace keel {

namespace {

void set_nodelay(int fd) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

}  // namespace

std::string describe_address(const sockaddr_storage& a) {
  char host[INET6_ADDRSTRLEN] = "?";
  uint16_t port = 0;
  if (a.ss_family == AF_INET) {
    const auto& v4 = reinterpret_cast<const sockaddr_in&>(a);
    ::inet_ntop(AF_INET, &v4.sin_addr, host, sizeof host);
    port = ntohs(v4.sin_port);
    return std::string(host) + ":" + std::to_string(port);
  }
  const auto& v6 = reinterpret_cast<const sockaddr_in6&>(a);
  ::inet_ntop(AF_INET6, &v6.sin6_addr, host, sizeof host);
  port = ntohs(v6.sin6_port);
  return "[" + std::string(host) + "]:" + std::to_string(port);
}

TcpEndpoint parse_host_port(const std::string& text, const std::string& what) {
  auto bad = [&](const std::string& why) {
    return InputError(what + " \"" + text + "\": " + why +
                      " (expected ADDR:PORT, ADDR numeric, IPv6 in brackets)");
  };
  const size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon + 1 == text.size()) throw bad("no port");
  const std::string host = text.substr(0, colon);
  const std::string port_text = text.substr(colon + 1);
  if (port_text.size() > 5 || port_text.find_first_not_of("0123456789") != std::string::npos)
    throw bad("port is not a number");
  const unsigned long port = std::stoul(port_text);
  if (port > 65535) throw bad("port above 65535");
  TcpEndpoint e;
  e.text = text;
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    auto& v6 = reinterpret_cast<sockaddr_in6&>(e.address);
    v6.sin6_family = AF_INET6;
    v6.sin6_port = htons(static_cast<uint16_t>(port));
    if (::inet_pton(AF_INET6, host.substr(1, host.size() - 2).c_str(), &v6.sin6_addr) != 1)
      throw bad("not an IPv6 address");
    e.length = sizeof v6;
    return e;
  }
  auto& v4 = reinterpret_cast<sockaddr_in&>(e.address);
  v4.sin_family = AF_INET;
  v4.sin_port = htons(static_cast<uint16_t>(port));
  if (::inet_pton(AF_INET, host.c_str(), &v4.sin_addr) != 1) throw bad("not an IPv4 address");
  e.length = sizeof v4;
  return e;
}

TcpEndpoint parse_tcp_endpoint(const std::string& uri, const std::string& what) {
  if (uri.rfind("tcp:", 0) != 0) {
    throw InputError(what + " \"" + uri + "\": only tcp: is supported (expected tcp:ADDR:PORT)");
  }
  TcpEndpoint e = parse_host_port(uri.substr(4), what);
  e.text = uri;
  return e;
}

UniqueFd connect_tcp(const TcpEndpoint& endpoint, std::chrono::milliseconds timeout) {
  UniqueFd fd(::socket(endpoint.address.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd.valid()) throw_errno("socket for " + endpoint.text);
  int rc =
      ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&endpoint.address), endpoint.length);
  if (rc != 0 && errno != EINPROGRESS) {
    throw InputError("cannot connect to " + endpoint.text + ": " + std::strerror(errno));
  }
  if (rc != 0) {
    pollfd p{fd.get(), POLLOUT, 0};
    int n;
    do {
      n = ::poll(&p, 1, static_cast<int>(timeout.count()));
    } while (n < 0 && errno == EINTR);
    if (n == 0) {
      throw InputError("cannot connect to " + endpoint.text + ": no answer within " +
                       std::to_string(timeout.count()) + " ms");
    }
    int err = 0;
    socklen_t len = sizeof err;
    ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
    if (n < 0 || err != 0) {
      throw InputError("cannot connect to " + endpoint.text + ": " +
                       std::strerror(n < 0 ? errno : err));
    }
  }
  ::fcntl(fd.get(), F_SETFL, 0);  // blocking from here; FrameChannel sets its timeouts
  set_nodelay(fd.get());
  return fd;
}

UniqueFd listen_tcp(const TcpEndpoint& endpoint, int backlog) {
  UniqueFd fd(::socket(endpoint.address.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) throw_errno("socket for " + endpoint.text);
  int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&endpoint.address), endpoint.length) !=
          0 ||
      ::listen(fd.get(), backlog) != 0) {
    throw InputError("cannot listen on " + endpoint.text + ": " + std::strerror(errno));
  }
  return fd;
}

uint16_t local_port(int fd) {
  sockaddr_storage a{};
  socklen_t len = sizeof a;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) throw_errno("getsockname");
  return a.ss_family == AF_INET ? ntohs(reinterpret_cast<sockaddr_in&>(a).sin_port)
                                : ntohs(reinterpret_cast<sockaddr_in6&>(a).sin6_port);
}

UniqueFd accept_tcp(int listener, const std::atomic<bool>& stop, std::string* peer) {
  while (!stop.load()) {
    pollfd p{listener, POLLIN, 0};
    int n = ::poll(&p, 1, 250);
    if (n < 0 && errno != EINTR) throw_errno("poll on a TCP listener");
    if (n <= 0) continue;
    sockaddr_storage from{};
    socklen_t len = sizeof from;
    UniqueFd fd(::accept4(listener, reinterpret_cast<sockaddr*>(&from), &len, SOCK_CLOEXEC));
    if (!fd.valid()) {
      if (errno == EINTR || errno == ECONNABORTED || errno == EAGAIN) continue;
      throw_errno("accept on a TCP listener");
    }
    set_nodelay(fd.get());
    if (peer) *peer = describe_address(from);
    return fd;
  }
  return UniqueFd();
}

}  // namespace keel
