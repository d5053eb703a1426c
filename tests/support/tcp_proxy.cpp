#include "tests/support/tcp_proxy.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

#include <cerrno>
#include <stdexcept>

#include "common/tcp_endpoint.h"

namespace keel::testing {

namespace {

void make_nonblocking(int fd) {
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
}

// Moves what `from` has into `buffer`; false when it closed or failed.
bool pull(int from, std::string& buffer) {
  char chunk[65536];
  while (true) {
    const ssize_t n = ::recv(from, chunk, sizeof chunk, MSG_DONTWAIT);
    if (n > 0) {
      buffer.append(chunk, static_cast<size_t>(n));
      continue;
    }
    if (n == 0) return false;
    return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
  }
}

// Sends what `to` takes of `buffer`; false when it failed.
bool push(int to, std::string& buffer) {
  while (!buffer.empty()) {
    const ssize_t n = ::send(to, buffer.data(), buffer.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
      buffer.erase(0, static_cast<size_t>(n));
      continue;
    }
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR);
  }
  return true;
}

}  // namespace

TcpProxy::TcpProxy(uint16_t target_port)
    : listener_(listen_tcp(parse_host_port("127.0.0.1:0", "proxy"), 16)),
      wake_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)),
      target_(target_port) {
  if (!wake_.valid()) throw std::runtime_error("eventfd for the proxy");
  make_nonblocking(listener_.get());
  port_ = local_port(listener_.get());
  thread_ = std::thread([this] { run(); });
}

TcpProxy::~TcpProxy() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  wake();
  thread_.join();
}

void TcpProxy::wake() {
  const uint64_t one = 1;
  (void)!::write(wake_.get(), &one, sizeof one);
}

void TcpProxy::set_target(uint16_t port) {
  std::lock_guard lock(mutex_);
  target_ = port;
}

void TcpProxy::cut() {
  {
    std::lock_guard lock(mutex_);
    cut_ = true;
  }
  wake();
}

void TcpProxy::refuse(bool on) {
  {
    std::lock_guard lock(mutex_);
    refuse_ = on;
  }
  wake();
}

void TcpProxy::hold_replies(bool on) {
  {
    std::lock_guard lock(mutex_);
    hold_ = on;
  }
  wake();
}

void TcpProxy::run() {
  while (true) {
    bool refuse, hold;
    uint16_t target;
    {
      std::lock_guard lock(mutex_);
      if (stop_) return;
      if (cut_) pairs_.clear();
      cut_ = false;
      refuse = refuse_;
      hold = hold_;
      target = target_;
    }
    std::vector<pollfd> fds{{wake_.get(), POLLIN, 0}, {listener_.get(), POLLIN, 0}};
    for (const Pair& p : pairs_) {
      fds.push_back({p.client.get(),
                     static_cast<short>(POLLIN | (p.to_client.empty() || hold ? 0 : POLLOUT)), 0});
      fds.push_back(
          {p.server.get(), static_cast<short>(POLLIN | (p.to_server.empty() ? 0 : POLLOUT)), 0});
    }
    ::poll(fds.data(), fds.size(), 1000);
    if (fds[0].revents & POLLIN) {
      uint64_t value;
      (void)!::read(wake_.get(), &value, sizeof value);
    }
    if (fds[1].revents & POLLIN) {
      UniqueFd client(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
      if (client.valid() && !refuse) {
        try {
          UniqueFd server =
              connect_tcp(parse_host_port("127.0.0.1:" + std::to_string(target), "proxy target"),
                          std::chrono::milliseconds(2000));
          make_nonblocking(server.get());
          pairs_.push_back(Pair{std::move(client), std::move(server), {}, {}});
          ++connections_;
        } catch (const std::exception&) {
          // The target is down: the client sees its connection closed.
        }
      }
    }
    uint64_t held = 0;
    for (auto it = pairs_.begin(); it != pairs_.end();) {
      const bool ok =
          pull(it->client.get(), it->to_server) && push(it->server.get(), it->to_server) &&
          pull(it->server.get(), it->to_client) && (hold || push(it->client.get(), it->to_client));
      if (hold) held += it->to_client.size();
      it = ok ? it + 1 : pairs_.erase(it);
    }
    held_bytes_ = held;
  }
}

}  // namespace keel::testing
