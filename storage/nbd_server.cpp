#include "storage/nbd_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <charconv>
#include <chrono>
#include <cstring>

#include "common/error.h"
#include "common/log.h"
#include "storage/nbd_connection.h"

namespace keel::storage {

namespace {

// Connections served at once (a thread each); more are closed at accept.
constexpr size_t kMaxConnections = 64;

// The peer's address as text; an IPv4 client of an IPv6 socket as plain
// IPv4 (what allow-lists name).
std::string peer_address(const sockaddr_storage& addr) {
  char text[INET6_ADDRSTRLEN] = {};
  if (addr.ss_family == AF_INET) {
    const auto& v4 = reinterpret_cast<const sockaddr_in&>(addr);
    ::inet_ntop(AF_INET, &v4.sin_addr, text, sizeof text);
  } else if (addr.ss_family == AF_INET6) {
    const auto& v6 = reinterpret_cast<const sockaddr_in6&>(addr);
    if (IN6_IS_ADDR_V4MAPPED(&v6.sin6_addr)) {
      ::inet_ntop(AF_INET, &v6.sin6_addr.s6_addr[12], text, sizeof text);
    } else {
      ::inet_ntop(AF_INET6, &v6.sin6_addr, text, sizeof text);
    }
  }
  return text;
}

}  // namespace

std::pair<std::string, uint16_t> parse_host_port(const std::string& text, const std::string& what) {
  std::string host;
  std::string port;
  if (!text.empty() && text[0] == '[') {
    const auto close = text.find("]:");
    if (close != std::string::npos) {
      host = text.substr(1, close - 1);
      port = text.substr(close + 2);
    }
  } else if (auto colon = text.rfind(':'); colon != std::string::npos) {
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  unsigned value = 0;
  auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  unsigned char buf[16];
  const bool address_ok =
      ::inet_pton(AF_INET, host.c_str(), buf) == 1 || ::inet_pton(AF_INET6, host.c_str(), buf) == 1;
  if (host.empty() || port.empty() || ec != std::errc() || end != port.data() + port.size() ||
      value > 65535 || !address_ok) {
    throw InputError(what + " '" + text + "' is not ADDRESS:PORT (IP address, port 0-65535)");
  }
  return {host, static_cast<uint16_t>(value)};
}

NbdServer::NbdServer(std::shared_ptr<const NbdCatalog> catalog, const std::string& address,
                     uint16_t port)
    : catalog_(std::move(catalog)) {
  sockaddr_storage addr{};
  socklen_t length = 0;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&addr);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&addr);
  if (::inet_pton(AF_INET, address.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    length = sizeof *v4;
  } else if (::inet_pton(AF_INET6, address.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    length = sizeof *v6;
  } else {
    throw InputError("NBD listen address '" + address + "' is not an IP address");
  }
  listener_ = UniqueFd(::socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!listener_.valid()) throw_errno("NBD listening socket");
  const int one = 1;
  ::setsockopt(listener_.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(listener_.get(), reinterpret_cast<sockaddr*>(&addr), length) != 0)
    throw_errno("binding the NBD server to " + address + ":" + std::to_string(port));
  if (::listen(listener_.get(), 64) != 0) throw_errno("listen");
  sockaddr_storage bound{};
  socklen_t bound_length = sizeof bound;
  ::getsockname(listener_.get(), reinterpret_cast<sockaddr*>(&bound), &bound_length);
  port_ = ntohs(bound.ss_family == AF_INET ? reinterpret_cast<sockaddr_in&>(bound).sin_port
                                           : reinterpret_cast<sockaddr_in6&>(bound).sin6_port);
  stop_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!stop_.valid()) throw_errno("eventfd");
}

NbdServer::~NbdServer() {
  stop();
  std::lock_guard guard(threads_mutex_);
  for (auto& w : threads_) {
    if (w.thread.joinable()) w.thread.join();
  }
}

void NbdServer::reap_finished() {
  for (auto it = threads_.begin(); it != threads_.end();) {
    if (it->done->load()) {
      it->thread.join();
      it = threads_.erase(it);
    } else {
      ++it;
    }
  }
}

void NbdServer::stop() {
  const uint64_t one = 1;
  (void)!::write(stop_.get(), &one, sizeof one);
}

void NbdServer::run() {
  while (true) {
    pollfd fds[2] = {{listener_.get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      throw_errno("poll of the NBD listener");
    }
    if (fds[1].revents) return;
    if (!(fds[0].revents & POLLIN)) continue;
    sockaddr_storage peer{};
    socklen_t peer_length = sizeof peer;
    UniqueFd socket(
        ::accept4(listener_.get(), reinterpret_cast<sockaddr*>(&peer), &peer_length, SOCK_CLOEXEC));
    if (!socket.valid()) {
      if (errno == EINTR || errno == ECONNABORTED || errno == EAGAIN) continue;
      // Out of descriptors or memory: say so, keep serving who is connected,
      // and give it a moment (the listener stays readable meanwhile).
      log::warning(std::string("nbd: accept failed: ") + std::strerror(errno));
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      continue;
    }
    const std::string client = peer_address(peer);
    const int one = 1;
    ::setsockopt(socket.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    // A client that vanished (its host died, the network was cut) is found
    // out within about a minute and lets go of its disk.
    const int idle = 30, interval = 10, probes = 3, user_timeout_ms = 60000;
    ::setsockopt(socket.get(), SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    ::setsockopt(socket.get(), IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    ::setsockopt(socket.get(), IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
    ::setsockopt(socket.get(), IPPROTO_TCP, TCP_KEEPCNT, &probes, sizeof probes);
    ::setsockopt(socket.get(), IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout_ms,
                 sizeof user_timeout_ms);
    std::lock_guard guard(threads_mutex_);
    reap_finished();
    if (threads_.size() >= kMaxConnections) {
      log::warning("nbd: " + client + ": refused, " + std::to_string(kMaxConnections) +
                   " connections are open");
      stats_.refused++;
      continue;  // the socket closes here
    }
    stats_.connections++;
    auto done = std::make_shared<std::atomic<bool>>(false);
    try {
      std::thread thread(
          [this, fd = std::make_shared<UniqueFd>(std::move(socket)), client, done]() mutable {
            serve(std::move(*fd), client);
            done->store(true);
          });
      threads_.push_back({std::move(thread), std::move(done)});
    } catch (const std::system_error& e) {
      log::warning("nbd: " + client + ": no thread for the connection: " + e.what());
    }
  }
}

void NbdServer::serve(UniqueFd socket, std::string client) {
  try {
    serve_nbd_connection(socket.get(), client, *catalog_, stop_.get(), stats_);
  } catch (const std::exception& e) {
    log::warning("nbd: " + client + ": " + e.what());
  }
}

}  // namespace keel::storage
