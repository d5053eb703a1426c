#include "storage/nbd_disk.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "common/error.h"
#include "common/log.h"
#include "storage/nbd_wire.h"

namespace keel::storage {

using namespace nbd;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

namespace {

constexpr milliseconds kFirstBackoff{100};
// The smallest maximum payload taken: a request is cut into pieces of the
// server's maximum, and a smaller one would make millions of them.
constexpr uint32_t kMinMaxPayload = 1 << 20;
constexpr milliseconds kMaxBackoff{2000};
// TRIM and WRITE_ZEROES lengths are 32-bit: ranges go in pieces of this.
constexpr uint32_t kMaxRangePiece = 1u << 30;
// What a write-zeroes request writes from where the server has no
// WRITE_ZEROES (read-only memory, shared by every disk).
constexpr size_t kZeroBytes = 1 << 20;
const uint8_t* zero_buffer() {
  static const std::vector<uint8_t> zeroes(kZeroBytes, 0);
  return zeroes.data();
}

void signal_fd(int fd) {
  const uint64_t one = 1;
  (void)!::write(fd, &one, sizeof one);
}

void drain_fd(int fd) {
  uint64_t value;
  (void)!::read(fd, &value, sizeof value);
}

UniqueFd new_eventfd() {
  UniqueFd fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!fd.valid()) throw_errno("eventfd for an NBD disk");
  return fd;
}

// A dead peer found within seconds: keepalive probes when the connection
// is idle (a cut link with only replies outstanding), a user timeout when
// sent data goes unacknowledged.
void tune_socket(int fd) {
  const int one = 1, idle = 1, interval = 1, probes = 3;
  const unsigned user_timeout_ms = 5000;
  ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &probes, sizeof probes);
  ::setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout_ms, sizeof user_timeout_ms);
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
}

struct Opened {
  UniqueFd socket;
  NbdExportInfo info;
};

struct HandshakeError : InputError {
  using InputError::InputError;
};

// Connects and haggles, waiting at most the handshake's time; `stop_fd`
// readable abandons it. Throws HandshakeError.
Opened open_export(const NbdAddress& address, NbdClientHandshake::Goal goal, int stop_fd) {
  const std::string where = "NBD export " + address.text;
  UniqueFd socket;
  try {
    socket = connect_tcp(address.endpoint, NbdDisk::kConnectTimeout);
  } catch (const InputError& e) {
    throw HandshakeError(where + ": " + e.what());
  }
  tune_socket(socket.get());
  NbdClientHandshake handshake(address.export_name, goal);
  std::string in, out;
  const auto deadline = Clock::now() + NbdDisk::kHandshakeTimeout;
  NbdClientHandshake::State state = handshake.feed(in, out);
  while (true) {
    while (!out.empty()) {
      const ssize_t n = ::send(socket.get(), out.data(), out.size(), MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno != EAGAIN) {
        if (state == NbdClientHandshake::State::kFailed) break;  // the ABORT: best effort
        throw HandshakeError(where + ": sending: " + std::strerror(errno));
      }
      if (n > 0) {
        out.erase(0, static_cast<size_t>(n));
        continue;
      }
      pollfd p[2] = {{socket.get(), POLLOUT, 0}, {stop_fd, POLLIN, 0}};
      ::poll(p, stop_fd >= 0 ? 2 : 1, 100);
      if (stop_fd >= 0 && (p[1].revents & POLLIN)) throw HandshakeError(where + ": stopped");
      if (Clock::now() > deadline) throw HandshakeError(where + ": the handshake timed out");
    }
    if (state == NbdClientHandshake::State::kFailed)
      throw HandshakeError(where + ": " + handshake.reason());
    if (state == NbdClientHandshake::State::kReady) {
      if (!in.empty()) throw HandshakeError(where + ": the server sent bytes nobody asked for");
      return {std::move(socket), handshake.info()};
    }
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) throw HandshakeError(where + ": the handshake timed out");
    pollfd p[2] = {{socket.get(), POLLIN, 0}, {stop_fd, POLLIN, 0}};
    const int n = ::poll(p, stop_fd >= 0 ? 2 : 1, static_cast<int>(left.count()));
    if (n < 0 && errno != EINTR) throw HandshakeError(where + ": poll: " + std::strerror(errno));
    if (stop_fd >= 0 && (p[1].revents & POLLIN)) throw HandshakeError(where + ": stopped");
    if (n <= 0 || !(p[0].revents & (POLLIN | POLLHUP | POLLERR))) continue;
    char buffer[4096];
    const ssize_t got = ::recv(socket.get(), buffer, sizeof buffer, MSG_DONTWAIT);
    if (got == 0) throw HandshakeError(where + ": the server closed the connection");
    if (got < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      throw HandshakeError(where + ": receiving: " + std::strerror(errno));
    }
    in.append(buffer, static_cast<size_t>(got));
    state = handshake.feed(in, out);
  }
}

// Why an export cannot back this disk; empty when it can.
std::string unfit(const NbdExportInfo& info, bool read_only) {
  if (!read_only && (info.flags & kReadOnly))
    return "the export is read-only (give the disk readonly=on)";
  if (info.max_payload < kMinMaxPayload) {
    return "the export takes requests of at most " + std::to_string(info.max_payload) +
           " bytes (Keel needs 1 MiB)";
  }
  if (info.min_block > 512) {
    return "the export needs requests in blocks of " + std::to_string(info.min_block) +
           " bytes (Keel's disks take 512)";
  }
  return "";
}

}  // namespace

NbdAddress parse_nbd_address(const std::string& text, const std::string& what) {
  const size_t slash = text.find('/');
  if (text.rfind("tcp:", 0) != 0 || slash == std::string::npos) {
    throw InputError(what + " \"" + text + "\" is not tcp:ADDR:PORT/EXPORT");
  }
  NbdAddress address;
  address.endpoint = parse_tcp_endpoint(text.substr(0, slash), what);
  address.export_name = text.substr(slash + 1);
  if (address.export_name.size() > 4096) {
    throw InputError(what + ": the export name is longer than 4096 bytes (NBD's limit)");
  }
  address.text = text;
  return address;
}

// --- the connection's thread -------------------------------------------

class NbdDisk::Connection {
 public:
  Connection(NbdDisk& disk, UniqueFd socket)
      : address_(disk.address_),
        info_(disk.info_),
        read_only_(disk.read_only_),
        io_timeout_(disk.io_timeout_),
        completions_fd_(disk.completions_fd_.get()),
        wake_(new_eventfd()),
        stop_(new_eventfd()),
        socket_(std::move(socket)) {
    if (socket_.valid()) session_ = std::make_unique<NbdClientSession>(socket_.get());
    thread_ = std::thread([this] { run(); });
  }
  ~Connection() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    signal_fd(stop_.get());
    signal_fd(wake_.get());
    thread_.join();
  }

  void hand_over(std::vector<NbdPiece>& pieces) {
    if (pieces.empty()) return;
    {
      std::lock_guard lock(mutex_);
      for (NbdPiece& p : pieces) submitted_.push_back(std::move(p));
    }
    pieces.clear();
    signal_fd(wake_.get());
  }
  void abandon_before(uint64_t epoch) {
    abandon_epoch_.store(epoch);
    signal_fd(wake_.get());
  }
  std::vector<std::pair<uint64_t, int64_t>> take_completions() {
    std::lock_guard lock(mutex_);
    return std::exchange(completed_, {});
  }
  uint64_t reconnects() const { return reconnects_.load(); }
  uint64_t resent() const { return resent_.load(); }
  uint64_t timeouts() const { return timeouts_.load(); }
  bool connected() const { return connected_.load(); }

 private:
  void run();
  void take_submitted();
  void drop_abandoned();
  void cancel_abandoned_waiting();
  void serve_connection();
  void try_reconnect();
  void lost(std::string why);  // a copy: the session holding it goes
  void fail_overdue();
  Clock::time_point oldest_unanswered() const;
  void report(uint64_t owner, int64_t result) { batch_.emplace_back(owner, result); }
  void flush_reports();

  const NbdAddress& address_;
  const NbdExportInfo info_;
  const bool read_only_;
  const milliseconds io_timeout_;
  const int completions_fd_;
  UniqueFd wake_;  // new requests, an abandonment, the end
  UniqueFd stop_;  // the end only: it alone breaks off a handshake

  std::mutex mutex_;
  bool stopping_ = false;                                // guarded
  std::vector<NbdPiece> submitted_;                      // guarded
  std::vector<std::pair<uint64_t, int64_t>> completed_;  // guarded
  std::atomic<uint64_t> abandon_epoch_{0};
  std::atomic<uint64_t> reconnects_{0}, resent_{0}, timeouts_{0};
  std::atomic<bool> connected_{false};

  // The thread's own.
  UniqueFd socket_;
  std::unique_ptr<NbdClientSession> session_;
  std::deque<NbdPiece> waiting_;  // for a connection, in order
  std::vector<std::pair<uint64_t, int64_t>> batch_;
  uint64_t next_cookie_ = 1;
  uint64_t applied_epoch_ = 0;
  Clock::time_point lost_at_{};
  Clock::time_point next_attempt_{};
  milliseconds backoff_ = kFirstBackoff;
  uint64_t answered_ = 0;  // replies on the current connection
  Clock::time_point last_age_check_{};
  bool failing_ = false;  // io_timeout passed without a connection
  std::string last_failure_;
  std::thread thread_;
};

void NbdDisk::Connection::run() {
  pthread_setname_np(pthread_self(), "keel-nbd");
  connected_ = session_ != nullptr;
  if (!session_) {
    lost_at_ = Clock::now();
    next_attempt_ = lost_at_;
  }
  while (true) {
    {
      std::lock_guard lock(mutex_);
      if (stopping_) break;
    }
    take_submitted();
    drop_abandoned();
    // What failed or was dropped at once goes back before any wait.
    flush_reports();
    if (session_) {
      serve_connection();
    } else {
      try_reconnect();
    }
    flush_reports();
  }
  if (session_) {
    session_->send_disconnect();
    session_->write_output();
  }
}

void NbdDisk::Connection::take_submitted() {
  std::vector<NbdPiece> fresh;
  {
    std::lock_guard lock(mutex_);
    fresh.swap(submitted_);
  }
  const auto now = Clock::now();
  for (NbdPiece& p : fresh) {
    p.taken = now;
    if (failing_) {
      report(p.owner, -EIO);
    } else if (session_) {
      p.cookie = next_cookie_++;
      session_->send(std::move(p));
    } else {
      waiting_.push_back(std::move(p));
    }
  }
}

void NbdDisk::Connection::drop_abandoned() {
  const uint64_t epoch = abandon_epoch_.load();
  if (epoch == applied_epoch_) return;
  applied_epoch_ = epoch;
  // Not sent: dropped at once. On the wire: a read's data, when it comes,
  // goes nowhere.
  cancel_abandoned_waiting();
  if (session_) {
    session_->for_each_unanswered([epoch](NbdPiece& p) {
      if (p.epoch < epoch) p.drop_data = true;
    });
  }
}

void NbdDisk::Connection::serve_connection() {
  if (session_->wants_write() && !session_->write_output()) return lost(session_->reason());
  pollfd p[2] = {
      {socket_.get(), static_cast<short>(POLLIN | (session_->wants_write() ? POLLOUT : 0)), 0},
      {wake_.get(), POLLIN, 0}};
  // A server that keeps the connection but answers nothing (wedged, its
  // kernel still acknowledging) is found by the requests' age.
  const int n = ::poll(p, 2, session_->unanswered() > 0 ? 1000 : -1);
  if (n < 0) {
    if (errno == EINTR) return;
    return lost(std::string("poll: ") + std::strerror(errno));
  }
  if (n == 0 || Clock::now() - last_age_check_ >= milliseconds(1000)) {
    last_age_check_ = Clock::now();
    if (session_->unanswered() > 0 && last_age_check_ - oldest_unanswered() >= io_timeout_) {
      return lost("no answer for " + std::to_string(io_timeout_.count()) + " ms");
    }
  }
  if (p[1].revents & POLLIN) drain_fd(wake_.get());
  if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
    // An abandonment that came with the data: its reads land nowhere.
    drop_abandoned();
    const bool ok = session_->read_input([this](NbdPiece& piece, int64_t result) {
      ++answered_;
      report(piece.owner, result);
    });
    if (!ok) return lost(session_->reason());
  }
  if ((p[0].revents & POLLOUT) && !session_->write_output()) return lost(session_->reason());
}

void NbdDisk::Connection::lost(std::string why) {
  std::vector<NbdPiece> unanswered = session_->take_unanswered();
  resent_ += unanswered.size();
  // Unanswered first: they were sent before anything still waiting.
  for (auto it = unanswered.rbegin(); it != unanswered.rend(); ++it) {
    it->drop_data = false;
    waiting_.push_front(std::move(*it));
  }
  session_.reset();
  socket_.reset();
  connected_ = false;
  lost_at_ = Clock::now();
  // A connection that answered nothing before it went (a server that drops
  // every connection, or this request) is not retried at once: the
  // backoff goes on growing.
  if (answered_ > 0) backoff_ = kFirstBackoff;
  next_attempt_ = answered_ > 0 ? lost_at_ : lost_at_ + backoff_;
  if (answered_ == 0) backoff_ = std::min(backoff_ * 2, kMaxBackoff);
  answered_ = 0;
  log::warning("NBD disk " + address_.text + ": connection lost (" + why + "); " +
               std::to_string(waiting_.size()) + " requests wait, reconnecting");
  // Abandoned while on the wire: not sent again.
  cancel_abandoned_waiting();
}

void NbdDisk::Connection::cancel_abandoned_waiting() {
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    if (it->epoch < applied_epoch_) {
      report(it->owner, -ECANCELED);
      it = waiting_.erase(it);
    } else {
      ++it;
    }
  }
}

// Requests waiting longer than the timeout (for a connection, or on
// connections that kept going) fail with EIO.
void NbdDisk::Connection::fail_overdue() {
  const auto now = Clock::now();
  size_t failed = 0;
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    if (failing_ || now - it->taken >= io_timeout_) {
      report(it->owner, -EIO);
      it = waiting_.erase(it);
      ++failed;
    } else {
      ++it;
    }
  }
  if (failed > 0) {
    log::error("NBD disk " + address_.text + ": " + std::to_string(failed) +
               " requests not answered within " + std::to_string(io_timeout_.count()) +
               " ms fail with I/O errors" +
               (last_failure_.empty() ? "" : " (" + last_failure_ + ")"));
  }
}

Clock::time_point NbdDisk::Connection::oldest_unanswered() const {
  Clock::time_point oldest = Clock::time_point::max();
  session_->for_each_unanswered([&oldest](NbdPiece& p) { oldest = std::min(oldest, p.taken); });
  return oldest;
}

void NbdDisk::Connection::try_reconnect() {
  const auto now = Clock::now();
  if (!failing_ && now - lost_at_ >= io_timeout_) {
    failing_ = true;
    ++timeouts_;
    log::error("NBD disk " + address_.text + ": no connection for " +
               std::to_string(io_timeout_.count()) + " ms (" + last_failure_ +
               "): requests fail with I/O errors until it is back");
  }
  fail_overdue();
  if (now >= next_attempt_) {
    try {
      Opened opened = open_export(address_, NbdClientHandshake::Goal::kOpen, stop_.get());
      const NbdExportInfo& now_info = opened.info;
      if (now_info.size != info_.size) {
        throw HandshakeError("the export's size is now " + std::to_string(now_info.size) +
                             " bytes, not " + std::to_string(info_.size));
      }
      if (std::string why = unfit(now_info, read_only_); !why.empty()) throw HandshakeError(why);
      // Requests were cut and chosen for what the export offered at first.
      const uint16_t used = info_.flags & (kSendFlush | kSendTrim | kSendWriteZeroes);
      if (now_info.max_payload < info_.max_payload || (now_info.flags & used) != used ||
          now_info.min_block > info_.min_block) {
        throw HandshakeError("the export now offers less than at first (its limits or commands)");
      }
      socket_ = std::move(opened.socket);
      session_ = std::make_unique<NbdClientSession>(socket_.get());
      connected_ = true;
      ++reconnects_;
      failing_ = false;
      last_failure_.clear();
      log::info("NBD disk " + address_.text + ": reconnected; sending " +
                std::to_string(waiting_.size()) + " requests again");
      while (!waiting_.empty()) {
        NbdPiece p = std::move(waiting_.front());
        waiting_.pop_front();
        p.cookie = next_cookie_++;
        session_->send(std::move(p));
      }
      return;
    } catch (const InputError& e) {
      if (e.what() != last_failure_) {
        log::warning("NBD disk " + address_.text + ": reconnecting: " + e.what());
        last_failure_ = e.what();
      }
      next_attempt_ = Clock::now() + backoff_;
      backoff_ = std::min(backoff_ * 2, kMaxBackoff);
    }
  }
  // Sleep until the next attempt or the timeout, woken by new requests,
  // an abandonment or the end.
  auto until = next_attempt_;
  if (!failing_) until = std::min(until, lost_at_ + io_timeout_);
  const auto wait =
      std::max<int64_t>(0, std::chrono::duration_cast<milliseconds>(until - Clock::now()).count());
  pollfd p{wake_.get(), POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(wait)) > 0) drain_fd(wake_.get());
}

void NbdDisk::Connection::flush_reports() {
  if (batch_.empty()) return;
  {
    std::lock_guard lock(mutex_);
    completed_.insert(completed_.end(), batch_.begin(), batch_.end());
  }
  batch_.clear();
  signal_fd(completions_fd_);
}

// --- the owner's side ----------------------------------------------------

NbdDisk::NbdDisk(const NbdDiskOptions& options)
    : address_(parse_nbd_address(options.address, "NBD disk")),
      read_only_(options.read_only),
      io_timeout_(options.io_timeout),
      completions_fd_(new_eventfd()) {
  Opened opened = open_export(
      address_,
      options.claim ? NbdClientHandshake::Goal::kOpen : NbdClientHandshake::Goal::kDescribe, -1);
  info_ = opened.info;
  if (std::string why = unfit(info_, read_only_); !why.empty())
    throw InputError("NBD export " + address_.text + ": " + why);
  if (options.claim) connection_ = std::make_unique<Connection>(*this, std::move(opened.socket));
}

NbdDisk::~NbdDisk() = default;

void NbdDisk::claim() {
  if (connection_) return;
  // A migration's source let go an instant ago: its server may still be
  // closing that connection (and holding the export's lock) for a moment.
  const auto deadline = Clock::now() + kHandshakeTimeout;
  while (true) {
    try {
      Opened opened = open_export(address_, NbdClientHandshake::Goal::kOpen, -1);
      if (opened.info.size != info_.size) {
        throw InputError("NBD export " + address_.text + ": its size is now " +
                         std::to_string(opened.info.size) + " bytes, not " +
                         std::to_string(info_.size));
      }
      if (std::string why = unfit(opened.info, read_only_); !why.empty())
        throw InputError("NBD export " + address_.text + ": " + why);
      info_ = opened.info;
      connection_ = std::make_unique<Connection>(*this, std::move(opened.socket));
      return;
    } catch (const HandshakeError&) {
      if (Clock::now() > deadline) throw;
      std::this_thread::sleep_for(milliseconds(20));
    }
  }
}

void NbdDisk::release() {
  // The export's lock is the server's, one per connection: letting go of
  // the disk is ending the connection (a migration's destination opens its
  // own). Nothing is in flight when a migration hands the disk over.
  connection_.reset();
}

uint64_t NbdDisk::reconnects() const {
  return connection_ ? connection_->reconnects() : 0;
}

bool NbdDisk::in_range(uint64_t offset, uint64_t length) const {
  return offset <= info_.size && length <= info_.size - offset;
}

uint64_t NbdDisk::add_request(uint64_t tag, bool transfers) {
  const uint64_t id = next_request_++;
  requests_.emplace(id, Request{.tag = tag, .transfers = transfers});
  return id;
}

void NbdDisk::add_piece(uint64_t request, uint16_t command, uint16_t flags, uint64_t offset,
                        uint32_t length, std::vector<iovec> data) {
  ++requests_.at(request).pieces_left;
  staged_.push_back(NbdPiece{.command = command,
                             .flags = flags,
                             .offset = offset,
                             .length = length,
                             .data = std::move(data),
                             .owner = request,
                             .epoch = epoch_});
}

// Answered here, without the server; reported by process_completions()
// like the rest.
void NbdDisk::complete_now(uint64_t tag, int64_t result) {
  const uint64_t id = add_request(tag, false);
  requests_.at(id).pieces_left = 1;
  local_.emplace_back(id, result);
  signal_fd(completions_fd_.get());
}

void NbdDisk::split_transfer(uint64_t tag, uint16_t command, uint64_t offset,
                             std::span<const iovec> iov) {
  uint64_t length = 0;
  for (const iovec& v : iov) length += v.iov_len;
  if (!in_range(offset, length)) return complete_now(tag, -EINVAL);
  if (command == kCmdWrite && read_only_) return complete_now(tag, -EROFS);
  if (length == 0) return complete_now(tag, 0);
  const uint64_t id = add_request(tag, true);
  // Pieces of at most the server's maximum payload, cut across iovecs.
  std::vector<iovec> piece;
  uint32_t piece_length = 0;
  uint64_t piece_offset = offset;
  for (iovec v : iov) {
    while (v.iov_len > 0) {
      const size_t n = std::min<size_t>(v.iov_len, info_.max_payload - piece_length);
      piece.push_back({v.iov_base, n});
      piece_length += static_cast<uint32_t>(n);
      v.iov_base = static_cast<char*>(v.iov_base) + n;
      v.iov_len -= n;
      if (piece_length == info_.max_payload) {
        add_piece(id, command, 0, piece_offset, piece_length, std::move(piece));
        piece_offset += piece_length;
        piece = {};
        piece_length = 0;
      }
    }
  }
  if (piece_length > 0) add_piece(id, command, 0, piece_offset, piece_length, std::move(piece));
}

void NbdDisk::split_range(uint64_t tag, uint16_t command, uint16_t flags, uint64_t offset,
                          uint64_t length) {
  if (!in_range(offset, length)) return complete_now(tag, -EINVAL);
  if (read_only_) return complete_now(tag, -EROFS);
  if (length == 0) return complete_now(tag, 0);
  const uint64_t id = add_request(tag, false);
  const bool write_zeroes_by_hand = command == kCmdWriteZeroes && !(info_.flags & kSendWriteZeroes);
  const uint64_t step =
      write_zeroes_by_hand ? std::min<uint64_t>(kZeroBytes, info_.max_payload) : kMaxRangePiece;
  for (uint64_t done = 0; done < length; done += step) {
    const auto n = static_cast<uint32_t>(std::min(step, length - done));
    if (write_zeroes_by_hand) {
      add_piece(id, kCmdWrite, 0, offset + done, n, {{const_cast<uint8_t*>(zero_buffer()), n}});
    } else {
      add_piece(id, command, flags, offset + done, n, {});
    }
  }
}

void NbdDisk::read(uint64_t tag, uint64_t offset, std::span<const iovec> iov) {
  split_transfer(tag, kCmdRead, offset, iov);
}

void NbdDisk::write(uint64_t tag, uint64_t offset, std::span<const iovec> iov) {
  split_transfer(tag, kCmdWrite, offset, iov);
}

void NbdDisk::flush(uint64_t tag) {
  if (read_only_ || !(info_.flags & kSendFlush)) return complete_now(tag, 0);
  const uint64_t id = add_request(tag, false);
  add_piece(id, kCmdFlush, 0, 0, 0, {});
}

void NbdDisk::discard(uint64_t tag, uint64_t offset, uint64_t length) {
  // Without TRIM a discard is allowed to do nothing (virtio 1.x 5.2.6).
  if (!(info_.flags & kSendTrim) && !read_only_ && in_range(offset, length))
    return complete_now(tag, 0);
  split_range(tag, kCmdTrim, 0, offset, length);
}

void NbdDisk::write_zeroes(uint64_t tag, uint64_t offset, uint64_t length, bool may_unmap) {
  split_range(tag, kCmdWriteZeroes, may_unmap ? 0 : kCmdFlagNoHole, offset, length);
}

void NbdDisk::submit() {
  if (staged_.empty()) return;
  if (!connection_) {
    // Not claimed: no connection to send on.
    for (NbdPiece& p : staged_) local_.emplace_back(p.owner, -EIO);
    staged_.clear();
    signal_fd(completions_fd_.get());
    return;
  }
  connection_->hand_over(staged_);
}

void NbdDisk::process_completions() {
  drain_fd(completions_fd_.get());
  std::vector<std::pair<uint64_t, int64_t>> done = std::exchange(local_, {});
  if (connection_) {
    auto more = connection_->take_completions();
    done.insert(done.end(), more.begin(), more.end());
  }
  for (const auto& [id, result] : done) {
    auto it = requests_.find(id);
    if (it == requests_.end()) continue;
    Request& r = it->second;
    if (result < 0 && r.error == 0) r.error = result;
    if (result > 0) r.bytes += static_cast<uint64_t>(result);
    if (--r.pieces_left > 0) continue;
    const Request finished = r;
    requests_.erase(it);
    if (finished.abandoned) continue;
    const int64_t reported =
        finished.error != 0 ? finished.error : (finished.transfers ? int64_t(finished.bytes) : 0);
    if (finished.internal) {
      // Only the flush the current sync() waits for: an earlier one that
      // timed out confirms nothing written since.
      if (id == sync_request_) {
        sync_result_ = reported;
        sync_done_ = true;
      }
      continue;
    }
    if (handler_) handler_(finished.tag, reported);
  }
}

void NbdDisk::abandon_all() {
  for (auto& [id, r] : requests_) r.abandoned = true;
  // Staged but not submitted: never reached the connection.
  for (NbdPiece& p : staged_) {
    auto it = requests_.find(p.owner);
    if (it != requests_.end() && --it->second.pieces_left == 0) requests_.erase(it);
  }
  staged_.clear();
  ++epoch_;
  if (connection_) connection_->abandon_before(epoch_);
}

void NbdDisk::sync() {
  if (read_only_ || !(info_.flags & kSendFlush) || !connection_) return;
  const uint64_t id = add_request(0, false);
  requests_.at(id).internal = true;
  add_piece(id, kCmdFlush, 0, 0, 0, {});
  sync_request_ = id;
  sync_done_ = false;
  submit();
  const milliseconds limit = io_timeout_ + kHandshakeTimeout + kConnectTimeout;
  const auto deadline = Clock::now() + limit;
  while (!sync_done_) {
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) {
      // Left to finish (or fail) on its own: reported to nobody.
      throw std::runtime_error("NBD disk " + address_.text + ": flush not confirmed within " +
                               std::to_string(limit.count()) + " ms");
    }
    pollfd p{completions_fd_.get(), POLLIN, 0};
    ::poll(&p, 1, static_cast<int>(left.count()));
    process_completions();
  }
  if (sync_result_ < 0) {
    throw std::runtime_error("NBD disk " + address_.text +
                             ": flush failed: " + std::strerror(static_cast<int>(-sync_result_)));
  }
}

BlockBackend::Counters NbdDisk::counters() const {
  if (!connection_) return {{"nbd_connected", 0}};
  return {{"nbd_connected", connection_->connected() ? 1 : 0},
          {"nbd_reconnects", connection_->reconnects()},
          {"nbd_resent", connection_->resent()},
          {"nbd_timeouts", connection_->timeouts()}};
}

}  // namespace keel::storage
