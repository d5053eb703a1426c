#include "control/control_client.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cerrno>
#include <cstring>
#include <thread>
#include <vector>

#include "common/error.h"
#include "control/control_frame.h"

namespace keel {

namespace control = keel::api::v1;
using Clock = std::chrono::steady_clock;
using Kind = ControlClientError::Kind;

ControlClient::ControlClient(const std::string& path, std::chrono::milliseconds timeout)
    : path_(path) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(address.sun_path)) {
    throw ControlClientError(Kind::kConnect, "socket path '" + path + "' is too long or empty");
  }
  std::memcpy(address.sun_path, path.data(), path.size());
  fd_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd_.valid()) throw_errno("socket");
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    if (::connect(fd_.get(), reinterpret_cast<const sockaddr*>(&address), sizeof(address)) == 0) {
      return;
    }
    const int err = errno;
    if (err == EINTR) continue;
    if (err == EAGAIN && Clock::now() < deadline) {
      // The VMM's backlog is full: it is alive but has not accepted yet.
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      continue;
    }
    std::string why;
    switch (err) {
      case ENOENT:
        why = "no such socket (is keel-vmm running with --api-socket " + path + "?)";
        break;
      case ECONNREFUSED:
        why = "nobody is listening (a stale socket: keel-vmm is gone)";
        break;
      case EAGAIN:
        throw ControlClientError(Kind::kTimeout,
                                 "cannot connect to " + path + ": the VMM did not accept in time");
      default:
        why = std::strerror(err);
    }
    throw ControlClientError(Kind::kConnect, "cannot connect to " + path + ": " + why);
  }
}

void ControlClient::wait_for(short events, Clock::time_point deadline) {
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) {
      throw ControlClientError(Kind::kTimeout, "the VMM at " + path_ + " did not answer in time");
    }
    pollfd poll_fd{fd_.get(), events, 0};
    const int ready = ::poll(&poll_fd, 1, static_cast<int>(std::min<long long>(left, 1 << 30)));
    if (ready > 0) return;  // readable, writable, or an error that the next call reports
    if (ready < 0 && errno != EINTR) throw_errno("poll on " + path_);
  }
}

void ControlClient::write_all(const std::string& bytes, Clock::time_point deadline) {
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::send(fd_.get(), bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
    if (n > 0) {
      done += static_cast<size_t>(n);
    } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      wait_for(POLLOUT, deadline);
    } else {
      throw ControlClientError(Kind::kProtocol, "the VMM at " + path_ + " closed the connection: " +
                                                    std::strerror(errno));
    }
  }
}

void ControlClient::read_exact(uint8_t* data, size_t size, Clock::time_point deadline) {
  size_t done = 0;
  while (done < size) {
    const ssize_t n = ::recv(fd_.get(), data + done, size - done, 0);
    if (n > 0) {
      done += static_cast<size_t>(n);
    } else if (n == 0) {
      throw ControlClientError(Kind::kProtocol,
                               "the VMM at " + path_ + " closed the connection without answering");
    } else if (errno == EAGAIN || errno == EINTR) {
      wait_for(POLLIN, deadline);
    } else {
      throw ControlClientError(Kind::kProtocol,
                               "reading from the VMM at " + path_ + ": " + std::strerror(errno));
    }
  }
}

control::Response ControlClient::call(control::Request request, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  if (request.id() == 0) request.set_id(next_id_++);
  write_all(encode_control_frame(request), deadline);

  uint8_t header[kControlFrameHeaderBytes];
  read_exact(header, sizeof(header), deadline);
  const uint32_t length = decode_control_frame_length(header);
  if (length > kControlMaxFrameBytes) {
    throw ControlClientError(Kind::kProtocol, "the VMM at " + path_ + " sent a frame of " +
                                                  std::to_string(length) + " bytes (limit 1 MiB)");
  }
  std::vector<uint8_t> body(length);
  read_exact(body.data(), body.size(), deadline);
  control::Response response;
  if (!response.ParseFromArray(body.data(), static_cast<int>(body.size()))) {
    throw ControlClientError(Kind::kProtocol, "the VMM at " + path_ + " sent a malformed response");
  }
  // An error about the frame itself carries id 0.
  if (response.id() != request.id() && response.id() != 0) {
    throw ControlClientError(Kind::kProtocol, "the VMM at " + path_ + " answered request " +
                                                  std::to_string(response.id()) + " instead of " +
                                                  std::to_string(request.id()));
  }
  return response;
}

}  // namespace keel
