#include "storage/nbd_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

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

NbdServer::NbdServer(std::shared_ptr<const NbdCatalog> catalog, const TcpEndpoint& listen)
    : catalog_(std::move(catalog)), listener_(listen_tcp(listen, 64)) {
  port_ = local_port(listener_.get());
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
    // out within seconds and lets go of its disk: probed after 3 s idle, its
    // host answers a reset once the link is back (keel-vmm's disk has
    // reconnected meanwhile and waits for the export's lock), or 3 probes a
    // second apart go unanswered.
    const int idle = 3, interval = 1, probes = 3, user_timeout_ms = 10000;
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
