#include "control/control_server.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <vector>

#include "common/error.h"
#include "common/unique_fd.h"
#include "control/control_frame.h"

namespace keel {

namespace control = keel::api::v1;
using boost::asio::local::stream_protocol;
using boost::system::error_code;

control::Response error_response(control::ErrorCode code, const std::string& message) {
  control::Response response;
  response.set_ok(false);
  response.mutable_error()->set_code(code);
  response.mutable_error()->set_message(message);
  return response;
}

bool control_request_streams(const control::Request& request) {
  return request.operation_case() == control::Request::kConsoleAttach ||
         request.operation_case() == control::Request::kEventsSubscribe;
}

void ControlHandler::handle_stream(const control::Request& request, StreamReply reply) {
  reply(error_response(control::ERROR_CODE_UNIMPLEMENTED,
                       request.operation_case() == control::Request::kConsoleAttach
                           ? "this endpoint has no console"
                           : "this endpoint has no events"),
        {});
}

namespace {

sockaddr_un socket_address(const std::string& path) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(address.sun_path)) {
    throw InputError("api socket path '" + path + "' must be 1 to " +
                     std::to_string(sizeof(address.sun_path) - 1) + " bytes long");
  }
  std::memcpy(address.sun_path, path.data(), path.size());
  return address;
}

// Whether a process accepts connections on the socket file at `path`. A
// non-blocking connect never waits: a full backlog (EAGAIN) is a live server.
bool socket_is_live(const sockaddr_un& address, const std::string& path) {
  UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!probe.valid()) throw_errno("socket for probing " + path);
  if (::connect(probe.get(), reinterpret_cast<const sockaddr*>(&address), sizeof(address)) == 0) {
    return true;
  }
  if (errno == ECONNREFUSED || errno == ENOENT) return false;
  if (errno == EAGAIN) return true;
  throw InputError("cannot tell whether api socket " + path +
                   " is in use: " + std::strerror(errno));
}

// A listening socket at `path`, mode 0600 from its creation.
UniqueFd listen_at(const std::string& path, struct stat& created) {
  const sockaddr_un address = socket_address(path);
  struct stat existing {};
  if (::lstat(path.c_str(), &existing) == 0) {
    if (!S_ISSOCK(existing.st_mode)) {
      throw InputError("api socket path " + path + " exists and is not a socket");
    }
    if (socket_is_live(address, path)) {
      throw InputError("api socket " + path + " is in use by another process");
    }
    // Left behind by a VMM that did not exit cleanly.
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      throw InputError("cannot remove stale api socket " + path + ": " + std::strerror(errno));
    }
  } else if (errno != ENOENT) {
    throw InputError("cannot check api socket path " + path + ": " + std::strerror(errno));
  }

  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd.valid()) throw_errno("socket for " + path);
  // Linux creates the socket file with the socket inode's mode (less the
  // umask): set before bind, the file never exists with wider permissions.
  // (The process-wide umask is no option with other threads creating files.)
  if (::fchmod(fd.get(), 0600) != 0) throw_errno("fchmod api socket");
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0) {
    throw InputError("cannot create api socket " + path + ": " + std::strerror(errno));
  }
  // A umask that took the owner's write bit away would lock the owner out.
  // Not following a link: a name swapped for a symlink between bind and
  // here must not make us chmod its target.
  int err = 0;
  if (::fchmodat(AT_FDCWD, path.c_str(), 0600, AT_SYMLINK_NOFOLLOW) != 0) {
    err = errno;
  } else if (::lstat(path.c_str(), &created) != 0) {
    err = errno;
  } else if (!S_ISSOCK(created.st_mode)) {
    err = ELOOP;  // replaced after bind
  }
  if (err != 0) {
    ::unlink(path.c_str());
    throw_errno(err, "chmod api socket " + path);
  }
  if (::listen(fd.get(), 16) != 0) {
    const int err = errno;
    ::unlink(path.c_str());
    throw_errno(err, "listen on api socket " + path);
  }
  return fd;
}

// What outstanding replies hand their responses to; outlives the server
// (a handler may keep a reply longer), and refuses once the server is gone.
class ReplyGate {
 public:
  explicit ReplyGate(boost::asio::io_context& events) : events_(&events) {}

  template <typename Function>
  void post(Function&& function) {
    std::lock_guard guard(mutex_);
    if (events_ != nullptr) boost::asio::post(*events_, std::forward<Function>(function));
  }

  void close() {
    std::lock_guard guard(mutex_);
    events_ = nullptr;
  }

 private:
  std::mutex mutex_;
  boost::asio::io_context* events_;
};

class Connection;

// One request's answer on its way back: see ControlHandler.
class PendingReply {
 public:
  PendingReply(std::weak_ptr<Connection> connection, std::shared_ptr<ReplyGate> gate,
               uint64_t serial)
      : connection_(std::move(connection)), gate_(std::move(gate)), serial_(serial) {}
  ~PendingReply() {
    deliver(error_response(control::ERROR_CODE_INTERNAL, "the VMM dropped the request unanswered"));
  }
  PendingReply(const PendingReply&) = delete;
  PendingReply& operator=(const PendingReply&) = delete;

  void deliver(control::Response response, TakeConnection take = {});

 private:
  std::weak_ptr<Connection> connection_;
  std::shared_ptr<ReplyGate> gate_;
  uint64_t serial_;
  std::atomic<bool> done_{false};
};

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(stream_protocol::socket socket, ControlHandler& handler,
             std::shared_ptr<ReplyGate> gate, const ControlServerLimits& limits)
      : socket_(std::move(socket)),
        timer_(socket_.get_executor()),
        handler_(handler),
        gate_(std::move(gate)),
        limits_(limits) {}

  void start() { process_buffered(); }
  bool is_open() const { return open_; }

  void close() {
    if (!open_) return;
    open_ = false;
    disarm();
    error_code ignored;
    socket_.shutdown(stream_protocol::socket::shutdown_both, ignored);
    socket_.close(ignored);
    in_ = {};  // out_ may still be under an aborted write: freed with us
  }

  // On the event loop: the handler's answer to request `serial`; `take`
  // gets the connection once an ok answer is written.
  void answer(uint64_t serial, control::Response response, TakeConnection take) {
    if (!open_ || !awaiting_reply_ || serial != serial_) return;
    awaiting_reply_ = false;
    response.set_id(request_id_);
    if (response.ok()) take_ = std::move(take);
    send(std::move(response), false);
  }

 private:
  // Dispatches the next complete frame, or reads more of it.
  void process_buffered() {
    if (!open_ || awaiting_reply_ || writing_ || reading_) return;
    if (in_.size() >= kControlFrameHeaderBytes) {
      const size_t length = decode_control_frame_length(in_);
      if (length > kControlMaxFrameBytes) {
        send(error_response(control::ERROR_CODE_FRAME_TOO_LARGE,
                            "frame of " + std::to_string(length) + " bytes exceeds the limit of " +
                                std::to_string(kControlMaxFrameBytes)),
             true);
        return;
      }
      const size_t frame = kControlFrameHeaderBytes + length;
      if (in_.size() >= frame) {
        disarm();
        frame_timer_armed_ = false;
        control::Request request;
        const bool parsed =
            request.ParseFromArray(in_.data() + kControlFrameHeaderBytes, static_cast<int>(length));
        in_.erase(in_.begin(), in_.begin() + static_cast<std::ptrdiff_t>(frame));
        dispatch(parsed ? &request : nullptr);
        return;
      }
    }
    if (!in_.empty() && !frame_timer_armed_) {
      frame_timer_armed_ = true;
      arm(limits_.frame_timeout);
    } else if (in_.empty()) {
      // Between requests: a client that holds a connection and says nothing
      // would otherwise keep one of the few slots for good.
      arm(limits_.idle_timeout);
    }
    read_more();
  }

  void read_more() {
    reading_ = true;
    socket_.async_read_some(
        boost::asio::buffer(chunk_), [self = shared_from_this()](error_code ec, size_t n) {
          self->reading_ = false;
          if (!self->open_) return;
          if (ec) {
            // End of file or a reset, also halfway through a frame.
            self->close();
            return;
          }
          self->in_.insert(self->in_.end(), self->chunk_.begin(),
                           self->chunk_.begin() + static_cast<std::ptrdiff_t>(n));
          self->process_buffered();
        });
  }

  void dispatch(const control::Request* request) {
    if (request == nullptr) {
      send(
          error_response(control::ERROR_CODE_MALFORMED_FRAME, "frame is not a keel.api.v1.Request"),
          false);
      return;
    }
    if (request->api_version() > control::API_VERSION_CURRENT) {
      auto response =
          error_response(control::ERROR_CODE_UNSUPPORTED_VERSION,
                         "request needs api version " + std::to_string(request->api_version()) +
                             ", this VMM speaks " + std::to_string(control::API_VERSION_CURRENT));
      response.set_id(request->id());
      send(std::move(response), false);
      return;
    }
    if (request->operation_case() == control::Request::OPERATION_NOT_SET) {
      auto response = error_response(control::ERROR_CODE_UNKNOWN_REQUEST,
                                     "request names no operation this VMM knows");
      response.set_id(request->id());
      send(std::move(response), false);
      return;
    }
    awaiting_reply_ = true;
    request_id_ = request->id();
    auto pending = std::make_shared<PendingReply>(weak_from_this(), gate_, ++serial_);
    ControlHandler::Reply reply = [pending](control::Response response) {
      pending->deliver(std::move(response));
    };
    try {
      if (control_request_streams(*request)) {
        handler_.handle_stream(*request,
                               [pending](control::Response response, TakeConnection take) {
                                 pending->deliver(std::move(response), std::move(take));
                               });
      } else {
        handler_.handle(*request, reply);
      }
    } catch (const std::exception& e) {
      reply(error_response(control::ERROR_CODE_INTERNAL, e.what()));
    }
  }

  void send(control::Response response, bool close_after) {
    response.set_api_version(control::API_VERSION_CURRENT);
    try {
      out_ = encode_control_frame(response);
    } catch (const std::exception& e) {
      auto error = error_response(control::ERROR_CODE_INTERNAL, e.what());
      error.set_api_version(control::API_VERSION_CURRENT);
      error.set_id(response.id());
      out_ = encode_control_frame(error);
    }
    writing_ = true;
    close_after_write_ = close_after;
    arm(limits_.write_timeout);
    boost::asio::async_write(socket_, boost::asio::buffer(out_),
                             [self = shared_from_this()](error_code ec, size_t) {
                               self->writing_ = false;
                               if (!self->open_) return;
                               self->disarm();
                               if (ec || self->close_after_write_) {
                                 self->close();
                                 return;
                               }
                               if (self->take_) {
                                 self->hand_over();
                                 return;
                               }
                               self->out_.clear();
                               self->frame_timer_armed_ = false;
                               self->process_buffered();
                             });
  }

  // The socket and what the client sent after its request go to take_;
  // this connection is done (the server prunes it).
  void hand_over() {
    open_ = false;
    TakeConnection take = std::move(take_);
    take_ = {};
    take(std::move(socket_), std::move(in_));
    in_ = {};
  }

  // Closes the connection unless disarmed within `timeout`.
  void arm(std::chrono::milliseconds timeout) {
    const uint64_t generation = ++timer_generation_;
    timer_.expires_after(timeout);
    timer_.async_wait([self = shared_from_this(), generation](error_code ec) {
      if (!ec && generation == self->timer_generation_) self->close();
    });
  }

  void disarm() {
    ++timer_generation_;
    timer_.cancel();
  }

  stream_protocol::socket socket_;
  boost::asio::steady_timer timer_;
  ControlHandler& handler_;  // used only while open: the server closes us first
  std::shared_ptr<ReplyGate> gate_;
  const ControlServerLimits limits_;
  std::vector<uint8_t> in_;  // received, not yet dispatched: at most one frame and one chunk
  std::array<uint8_t, 16384> chunk_{};
  std::string out_;
  TakeConnection take_;  // set while an ok answer to a streaming request is written
  bool open_ = true;
  bool reading_ = false;
  bool writing_ = false;
  bool awaiting_reply_ = false;
  bool close_after_write_ = false;
  bool frame_timer_armed_ = false;
  uint64_t serial_ = 0;
  uint64_t request_id_ = 0;
  uint64_t timer_generation_ = 0;
};

void PendingReply::deliver(control::Response response, TakeConnection take) {
  if (done_.exchange(true)) return;
  gate_->post([connection = connection_, serial = serial_, response = std::move(response),
               take = std::move(take)]() mutable {
    if (auto open = connection.lock()) open->answer(serial, std::move(response), std::move(take));
  });
}

}  // namespace

class ControlServer::Impl : public std::enable_shared_from_this<ControlServer::Impl> {
 public:
  Impl(boost::asio::io_context& events, const std::string& path, ControlHandler& handler,
       ControlServerLimits limits)
      : path_(path),
        handler_(handler),
        limits_(limits),
        gate_(std::make_shared<ReplyGate>(events)),
        acceptor_(events),
        retry_timer_(events) {
    UniqueFd fd = listen_at(path, created_);
    try {
      acceptor_.assign(stream_protocol(), fd.get());
    } catch (...) {
      ::unlink(path.c_str());
      throw;
    }
    fd.release();
  }

  void start() { accept(); }

  void shutdown() {
    open_ = false;
    gate_->close();
    error_code ignored;
    acceptor_.close(ignored);
    retry_timer_.cancel();
    for (auto& connection : connections_) connection->close();
    connections_.clear();
    // Only our own file: a second VMM may have replaced a file it found stale.
    struct stat now {};
    if (::lstat(path_.c_str(), &now) == 0 && now.st_dev == created_.st_dev &&
        now.st_ino == created_.st_ino) {
      ::unlink(path_.c_str());
    }
  }

  const std::string& path() const { return path_; }

  size_t connections() {
    prune();
    return connections_.size();
  }

 private:
  void prune() {
    std::erase_if(connections_, [](const std::shared_ptr<Connection>& connection) {
      return !connection->is_open();
    });
  }

  void accept() {
    acceptor_.async_accept(
        [self = shared_from_this()](error_code ec, stream_protocol::socket socket) {
          if (!self->open_) return;
          if (ec) {
            // EMFILE and the like: try again a little later rather than spin.
            self->retry_timer_.expires_after(std::chrono::milliseconds(100));
            self->retry_timer_.async_wait([self](error_code wait_ec) {
              if (!wait_ec && self->open_) self->accept();
            });
            return;
          }
          self->admit(std::move(socket));
          self->accept();
        });
  }

  void admit(stream_protocol::socket socket) {
    prune();
    if (connections_.size() >= limits_.max_connections) {
      // One best-effort non-blocking send into the empty socket buffer.
      auto busy = error_response(control::ERROR_CODE_BUSY,
                                 "too many clients on this api socket (at most " +
                                     std::to_string(limits_.max_connections) + ")");
      busy.set_api_version(control::API_VERSION_CURRENT);
      const std::string frame = encode_control_frame(busy);
      error_code ignored;
      socket.non_blocking(true, ignored);
      socket.send(boost::asio::buffer(frame), 0, ignored);
      socket.close(ignored);
      return;
    }
    auto connection = std::make_shared<Connection>(std::move(socket), handler_, gate_, limits_);
    connections_.push_back(connection);
    connection->start();
  }

  const std::string path_;
  ControlHandler& handler_;
  const ControlServerLimits limits_;
  std::shared_ptr<ReplyGate> gate_;
  stream_protocol::acceptor acceptor_;
  boost::asio::steady_timer retry_timer_;
  struct stat created_ {};
  // Owned here while open: a connection waiting for the handler's reply has
  // no operation of its own in flight to keep it alive.
  std::vector<std::shared_ptr<Connection>> connections_;
  bool open_ = true;
};

ControlServer::ControlServer(boost::asio::io_context& events, const std::string& path,
                             ControlHandler& handler, ControlServerLimits limits)
    : impl_(std::make_shared<Impl>(events, path, handler, limits)) {
  impl_->start();
}

ControlServer::~ControlServer() {
  impl_->shutdown();
}

const std::string& ControlServer::path() const {
  return impl_->path();
}

size_t ControlServer::connections() const {
  return impl_->connections();
}

}  // namespace keel
