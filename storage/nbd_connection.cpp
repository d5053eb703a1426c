#include "storage/nbd_connection.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <memory>
#include <unordered_map>

#include "common/error.h"
#include "common/log.h"
#include "storage/nbd_wire.h"
#include "storage/raw_disk.h"

namespace keel::storage {

using namespace nbd;

namespace {

// Requests the session holds at once (reads' and writes' buffers count):
// beyond these it stops reading the socket until replies went out.
constexpr size_t kMaxInFlight = 128;
constexpr uint64_t kMaxBufferedBytes = uint64_t{96} << 20;
// How often a session whose grant can be revoked looks at it while idle.
constexpr int kRevokedLookMs = 200;

struct FreeDeleter {
  void operator()(uint8_t* p) const { std::free(p); }
};
using Buffer = std::unique_ptr<uint8_t, FreeDeleter>;

Buffer aligned_buffer(size_t bytes) {
  void* p = std::aligned_alloc(4096, (bytes + 4095) / 4096 * 4096);
  if (p == nullptr) throw std::bad_alloc();
  return Buffer(static_cast<uint8_t*>(p));
}

class Session {
 public:
  Session(int socket, std::string client, const NbdCatalog& catalog, int stop_fd,
          NbdServerStats& stats)
      : socket_(socket),
        client_(std::move(client)),
        catalog_(catalog),
        stop_fd_(stop_fd),
        stats_(stats) {}

  // Requests still in the kernel write into their buffers: those are kept
  // (leaked, with the ring) rather than freed under the kernel's writes.
  ~Session() {
    if (!disk_) return;
    bool drained = false;
    try {
      drained = disk_->cancel_all(std::chrono::seconds(30));
    } catch (const std::exception&) {
    }
    if (!drained) {
      log::error("nbd: " + client_ + ": requests still in the kernel after 30 s; their " +
                 "buffers are kept");
      for (auto& [tag, p] : pending_) (void)p.buffer.release();
      (void)disk_.release();
    }
  }

  void run() {
    out_ = NbdServerNegotiation::greeting();
    NbdServerNegotiation negotiation(catalog_, client_,
                                     [this](const NbdExport& e) { return open(e); });
    bool negotiating = true;
    // A client gets a minute in all to pick an export; then it may idle.
    const auto handshake_deadline = std::chrono::steady_clock::now() + std::chrono::minutes(1);
    while (true) {
      if (!negotiating) handle_requests();
      // Its grant revoked (the VM's owner moved): the session ends once its
      // requests are done, and the disk's lock with it, so that the new
      // owner can open the disk. Replies are not waited for: a host cut
      // off never reads them.
      const bool revoked = !negotiating && export_.revoked && export_.revoked->load();
      if (revoked && !closing_) {
        log::info("nbd: " + client_ + ": its grant of export " + export_.name +
                  " was revoked; closing");
        closing_ = true;
      }
      if (revoked && pending_.empty() && (!disk_ || disk_->outstanding() == 0)) break;
      const bool no_more = closing_ || (input_closed_ && !request_startable());
      if (no_more && out_pos_ == out_.size() && pending_.empty() &&
          (!disk_ || disk_->outstanding() == 0))
        break;
      int timeout_ms = -1;
      // A grant that can be revoked is looked at now and then, also while
      // the client sends nothing.
      if (!negotiating && export_.revoked) timeout_ms = kRevokedLookMs;
      if (negotiating) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            handshake_deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) break;
        timeout_ms = static_cast<int>(left.count());
      }
      if (!wait_and_move(timeout_ms, negotiating)) break;
      if (negotiating && input_closed_ && in_.empty()) break;
      if (negotiating) {
        const auto state = negotiation.feed(in_, out_);
        if (state == NbdServerNegotiation::State::kClosed) {
          stats_.refused++;
          log::info("nbd: " + client_ + ": " + negotiation.reason());
          closing_ = true;
        } else if (state == NbdServerNegotiation::State::kTransmission) {
          negotiating = false;
          export_ = negotiation.chosen();
          log::info("nbd: " + client_ + " opened export " + export_.name);
        }
      }
    }
  }

 private:
  std::string open(const NbdExport& e) {
    try {
      RawDiskOptions options;
      options.path = e.path;
      options.read_only = e.read_only;
      disk_ = std::make_unique<RawDisk>(options);
    } catch (const std::exception& error) {
      return std::string("export '") + e.name + "' cannot be opened: " + error.what();
    }
    disk_->set_completion_handler(
        [this](uint64_t tag, int64_t result) { finished_.emplace_back(tag, result); });
    return "";
  }

  bool want_input() const {
    return !closing_ && pending_.size() < kMaxInFlight && buffered_ < kMaxBufferedBytes &&
           out_.size() - out_pos_ < kMaxBufferedBytes;
  }

  // A whole request is buffered and there is room to start it.
  bool request_startable() const {
    if (!want_input() || in_.size() - in_pos_ < kRequestSize) return false;
    const auto* p = reinterpret_cast<const uint8_t*>(in_.data() + in_pos_);
    auto r = parse_request(std::span<const uint8_t, kRequestSize>(p, kRequestSize));
    if (!r || r->type != kCmdWrite || r->length > kMaxPayload) return true;  // handled at once
    return in_.size() - in_pos_ >= kRequestSize + r->length;
  }

  // Polls the socket (and the disk's completions, and stop); reads what
  // came, writes what is ready, collects completions. false: the session
  // is over (the peer went away, an error, stop, or the time for the
  // handshake ran out while `negotiating`).
  bool wait_and_move(int timeout_ms, bool negotiating) {
    pollfd fds[3] = {{socket_, 0, 0}, {stop_fd_, POLLIN, 0}, {-1, POLLIN, 0}};
    if (want_input() && !input_closed_) fds[0].events |= POLLIN;
    if (out_pos_ < out_.size()) fds[0].events |= POLLOUT;
    // Nothing asked of the socket: leave it out (a hung-up one would wake
    // poll at once, again and again, while requests finish).
    if (fds[0].events == 0) fds[0].fd = -1;
    if (disk_) fds[2].fd = disk_->event_fd();
    const int ready = ::poll(fds, 3, timeout_ms);
    if (ready < 0) {
      if (errno == EINTR) return true;
      throw_errno("poll of an NBD connection");
    }
    if (ready == 0) return !negotiating;  // the handshake took too long
    if (fds[1].revents) return false;
    if (fds[2].revents) completions();
    if (fds[0].revents & POLLNVAL) return false;
    if ((fds[0].events & POLLIN) && (fds[0].revents & (POLLIN | POLLHUP | POLLERR))) {
      char buf[256 * 1024];
      const ssize_t n = ::recv(socket_, buf, sizeof buf, MSG_DONTWAIT);
      if (n < 0 && errno != EAGAIN && errno != EINTR) return false;
      // The client shut its side: what it sent before still runs (DISC
      // and a shutdown(SHUT_WR) is how clients end), replies still go.
      if (n == 0) input_closed_ = true;
      if (n > 0) in_.append(buf, static_cast<size_t>(n));
    }
    if ((fds[0].events & POLLOUT) && (fds[0].revents & (POLLOUT | POLLERR | POLLHUP))) {
      const ssize_t n = ::send(socket_, out_.data() + out_pos_, out_.size() - out_pos_,
                               MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n < 0 && errno != EAGAIN && errno != EINTR) return false;
      if (n > 0) out_pos_ += static_cast<size_t>(n);
      // Sent bytes are dropped now and then, not on every send.
      if (out_pos_ == out_.size() || out_pos_ > (size_t{4} << 20)) {
        out_.erase(0, out_pos_);
        out_pos_ = 0;
      }
    }
    return true;
  }

  void reply(uint64_t cookie, uint32_t error) { append_simple_reply(out_, error, cookie); }

  // Checks and starts each whole request in the input.
  void handle_requests() {
    while (!closing_ && want_input() && in_.size() - in_pos_ >= kRequestSize) {
      const auto* p = reinterpret_cast<const uint8_t*>(in_.data() + in_pos_);
      auto request = parse_request(std::span<const uint8_t, kRequestSize>(p, kRequestSize));
      if (!request) {
        log::warning("nbd: " + client_ + ": a request without the request magic; closing");
        closing_ = true;
        break;
      }
      const Request& r = *request;
      const bool write = r.type == kCmdWrite;
      if (write && r.length > kMaxPayload) {
        log::warning("nbd: " + client_ + ": a write of " + std::to_string(r.length) +
                     " bytes, more than 32 MiB; closing");
        closing_ = true;
        break;
      }
      if (write && in_.size() - in_pos_ < kRequestSize + r.length) break;  // payload still coming
      const uint8_t* payload = p + kRequestSize;
      stats_.requests++;
      start(r, payload);
      in_pos_ += kRequestSize + (write ? r.length : 0);
    }
    // What was taken is dropped once per batch, not once per request.
    in_.erase(0, in_pos_);
    in_pos_ = 0;
    if (disk_) disk_->submit();
  }

  uint32_t check(const Request& r) const {
    const bool writes = r.type == kCmdWrite || r.type == kCmdWriteZeroes || r.type == kCmdTrim;
    uint16_t allowed = kCmdFlagFua;
    if (r.type == kCmdWriteZeroes) allowed |= kCmdFlagNoHole;
    if (r.flags & ~allowed) return kEinval;
    if (writes && export_.read_only) return kEperm;
    if (writes && export_.revoked && export_.revoked->load()) return kEperm;
    if (r.type == kCmdFlush && (r.offset != 0 || r.length != 0)) return kEinval;
    const bool past_end = r.offset > export_.size || r.length > export_.size - r.offset;
    if (past_end) return (r.type == kCmdWrite || r.type == kCmdWriteZeroes) ? kEnospc : kEinval;
    if (r.type == kCmdRead && r.length > kMaxPayload) return kEoverflow;
    return 0;
  }

  void start(const Request& r, const uint8_t* payload) {
    switch (r.type) {
      case kCmdRead:
      case kCmdWrite:
      case kCmdFlush:
      case kCmdTrim:
      case kCmdWriteZeroes:
        break;
      case kCmdCache:  // a hint; nothing to prefetch into
        if (r.flags != 0) return reply(r.cookie, kEinval);
        return reply(r.cookie, 0);
      case kCmdDisconnect:
        // Finishes what is in flight, then closes (no reply to DISC).
        closing_ = true;
        return;
      default:
        return reply(r.cookie, kEinval);
    }
    if (uint32_t error = check(r); error != 0) return reply(r.cookie, error);
    if (r.length == 0 && r.type != kCmdFlush) return reply(r.cookie, 0);
    const uint64_t tag = next_tag_++;
    Pending& pending = pending_[tag];
    pending.request = r;
    switch (r.type) {
      case kCmdRead: {
        pending.buffer = aligned_buffer(r.length);
        buffered_ += r.length;
        iovec iov{pending.buffer.get(), r.length};
        disk_->read(tag, r.offset, std::span<const iovec>(&iov, 1));
        break;
      }
      case kCmdWrite: {
        pending.buffer = aligned_buffer(r.length);
        buffered_ += r.length;
        std::memcpy(pending.buffer.get(), payload, r.length);
        iovec iov{pending.buffer.get(), r.length};
        disk_->write(tag, r.offset, std::span<const iovec>(&iov, 1));
        break;
      }
      case kCmdFlush:
        disk_->flush(tag);
        break;
      case kCmdTrim:
        disk_->discard(tag, r.offset, r.length);
        break;
      case kCmdWriteZeroes:
        disk_->write_zeroes(tag, r.offset, r.length, (r.flags & kCmdFlagNoHole) == 0);
        break;
    }
  }

  void completions() {
    disk_->process_completions();
    auto done = std::move(finished_);
    finished_.clear();
    for (auto [tag, result] : done) {
      auto it = pending_.find(tag);
      if (it == pending_.end()) continue;
      Pending& p = it->second;
      const Request& r = p.request;
      if (result >= 0 && (r.flags & kCmdFlagFua) && r.type != kCmdRead && r.type != kCmdFlush &&
          !p.fua_flushed) {
        // FUA: the reply waits until this write is on stable storage.
        Pending moved = std::move(p);
        pending_.erase(it);
        moved.fua_flushed = true;
        const uint64_t flush_tag = next_tag_++;
        pending_.emplace(flush_tag, std::move(moved));
        disk_->flush(flush_tag);
        continue;
      }
      uint32_t error = 0;
      if (result < 0) {
        error = error_for_errno(static_cast<int>(-result));
      } else if (r.type == kCmdRead && static_cast<uint64_t>(result) != r.length) {
        error = kEio;  // the file is shorter than the export said
      }
      reply(r.cookie, error);
      if (error == 0 && r.type == kCmdRead)
        out_.append(reinterpret_cast<const char*>(p.buffer.get()), r.length);
      if (p.buffer) buffered_ -= r.length;
      pending_.erase(it);
    }
    disk_->submit();
  }

  struct Pending {
    Request request;
    Buffer buffer;
    bool fua_flushed = false;
  };

  int socket_;
  std::string client_;
  const NbdCatalog& catalog_;
  int stop_fd_;
  NbdServerStats& stats_;
  std::string in_, out_;
  size_t in_pos_ = 0, out_pos_ = 0;  // bytes of in_ taken, of out_ sent
  bool closing_ = false;             // DISC, or a stream that cannot be trusted: no new requests
  bool input_closed_ = false;        // the client shut its side down
  NbdExport export_;
  std::unique_ptr<RawDisk> disk_;
  std::unordered_map<uint64_t, Pending> pending_;
  std::vector<std::pair<uint64_t, int64_t>> finished_;
  uint64_t next_tag_ = 1;
  uint64_t buffered_ = 0;
};

}  // namespace

void serve_nbd_connection(int socket, const std::string& client, const NbdCatalog& catalog,
                          int stop_fd, NbdServerStats& stats) {
  Session(socket, client, catalog, stop_fd, stats).run();
}

}  // namespace keel::storage
