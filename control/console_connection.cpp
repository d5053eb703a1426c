#include "control/console_connection.h"

#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "common/error.h"
#include "control/control_frame.h"

namespace keel {

namespace pb = ::keel::api::v1;
using Kind = ControlClientError::Kind;

ConsoleConnection::ConsoleConnection(const std::string& socket, const pb::ConsoleAttach& attach,
                                     std::chrono::milliseconds timeout)
    : socket_(socket), in_("the VMM at " + socket, "console frame") {
  ControlClient client(socket, timeout);
  pb::Request request;
  *request.mutable_console_attach() = attach;
  const pb::Response response = client.call(request, timeout);
  if (!response.ok()) throw ConsoleRefused(response.error());
  if (!response.has_console_attach()) {
    throw ControlClientError(
        Kind::kProtocol, "the VMM at " + socket + " answered the attach " + "with something else");
  }
  attached_ = response.console_attach();
  fd_ = client.release();
}

void ConsoleConnection::send(const std::string& data, bool send_break) {
  size_t at = 0;
  do {
    pb::ConsoleInput input;
    const size_t n = std::min<size_t>(4096, data.size() - at);
    input.set_data(data.substr(at, n));
    at += n;
    if (at == data.size()) input.set_send_break(send_break);
    out_ += encode_control_frame(input);
  } while (at < data.size());
}

short ConsoleConnection::poll_events() const {
  return static_cast<short>(POLLIN | (wants_write() ? POLLOUT : 0));
}

void ConsoleConnection::flush() {
  while (!out_.empty()) {
    const ssize_t n = ::send(fd_.get(), out_.data(), out_.size(), MSG_NOSIGNAL);
    if (n > 0) {
      out_.erase(0, static_cast<size_t>(n));
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && errno == EAGAIN) {
      return;
    } else {
      throw ControlClientError(Kind::kProtocol, "the VMM at " + socket_ +
                                                    " closed the console: " + std::strerror(errno));
    }
  }
}

bool ConsoleConnection::receive(std::vector<pb::ConsoleOutput>& frames) {
  const bool open = in_.read(fd_.get());
  pb::ConsoleOutput frame;
  while (in_.next(frame)) frames.push_back(std::move(frame));
  return open;
}

bool ConsoleConnection::wait_for(pb::ConsoleOutput& frame, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  bool open = true;
  while (ready_.empty() && open) {
    flush();
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          deadline - std::chrono::steady_clock::now())
                          .count();
    if (left <= 0) return false;
    pollfd p{fd_.get(), static_cast<short>(POLLIN | (wants_write() ? POLLOUT : 0)), 0};
    if (::poll(&p, 1, static_cast<int>(left)) < 0 && errno != EINTR) throw_errno("poll console");
    open = receive(ready_);
  }
  if (ready_.empty()) return false;
  frame = std::move(ready_.front());
  ready_.erase(ready_.begin());
  return true;
}

}  // namespace keel
