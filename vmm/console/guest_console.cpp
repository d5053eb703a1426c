#include "vmm/console/guest_console.h"

#include <algorithm>
#include <array>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>

#include "common/error.h"
#include "common/log.h"
#include "control/control_frame.h"

namespace keel {

namespace pb = ::keel::api::v1;
using boost::system::error_code;

namespace {

// Output frames carry at most this much: a client far behind catches up in
// steps, and the event loop is never held by one large copy.
constexpr size_t kOutputChunk = 64 * 1024;
// A ConsoleInput frame's body: 4096 bytes of data and the field overhead.
constexpr size_t kInputFrameLimit = 4096 + 64;
// Input accepted beyond the UART's FIFO; a writer is not read past it.
constexpr size_t kInputQueue = 8192;

}  // namespace

// One attached client: its connection, where it is in the history, and the
// input frames it sends. Lives on the event loop; held by the console's list
// and by its own pending operations.
class ConsoleClient : public std::enable_shared_from_this<ConsoleClient> {
 public:
  ConsoleClient(GuestConsole& console, ControlStreamSocket socket, uint64_t next, bool writer)
      : console_(console), socket_(std::move(socket)), next_(next), writer_(writer) {}

  void start(std::vector<uint8_t> unread) {
    in_ = std::move(unread);
    parse();
  }

  void close() {
    if (!open_) return;
    open_ = false;
    error_code ignored;
    socket_.shutdown(ControlStreamSocket::shutdown_both, ignored);
    socket_.close(ignored);
  }

  bool open() const { return open_; }
  bool writer() const { return writer_; }

  // Reading resumes once the console's input queue has room again.
  void resume_reading() {
    if (open_ && held_) {
      held_ = false;
      parse();
    }
  }

  // Frames parsed from in_; reads more unless input is held back.
  void parse() {
    while (open_) {
      if (in_.size() < kControlFrameHeaderBytes) break;
      const size_t length = decode_control_frame_length(in_);
      if (length > kInputFrameLimit) {
        fail("console input frame of " + std::to_string(length) + " bytes (at most " +
             std::to_string(kInputFrameLimit) + ")");
        return;
      }
      if (in_.size() < kControlFrameHeaderBytes + length) break;
      pb::ConsoleInput input;
      const bool parsed =
          input.ParseFromArray(in_.data() + kControlFrameHeaderBytes, static_cast<int>(length));
      in_.erase(in_.begin(),
                in_.begin() + static_cast<std::ptrdiff_t>(kControlFrameHeaderBytes + length));
      if (!parsed) {
        fail("a console frame that is not a keel.api.v1.ConsoleInput");
        return;
      }
      if (input.data().size() > 4096) {
        fail("console input of " + std::to_string(input.data().size()) +
             " bytes in one frame (at most 4096)");
        return;
      }
      console_.accept_input(*this, input.data(), input.send_break());
      if (console_.input_.size() >= kInputQueue) {
        held_ = true;  // back-pressure: the client waits for the guest
        return;
      }
    }
    if (open_ && !reading_) read_more();
  }

  // The console's next frame for this client, if one is due and none is
  // being written.
  void send_due() {
    if (!open_ || writing_) return;
    pb::ConsoleOutput frame;
    uint64_t start = 0;
    {
      std::lock_guard guard(console_.mutex_);
      std::string data;
      start = console_.history_.read(next_, kOutputChunk, data);
      *frame.mutable_data() = std::move(data);
    }
    if (start > next_) {
      frame.set_missed(start - next_);
      console_.client_missed_ += start - next_;
    }
    if (frame.data().empty() && frame.missed() == 0 && notice_.empty()) return;
    frame.set_offset(start);
    frame.set_notice(std::move(notice_));
    notice_.clear();
    frame.set_writer(writer_);
    next_ = start + frame.data().size();
    out_ = encode_control_frame(frame);
    writing_ = true;
    boost::asio::async_write(socket_, boost::asio::buffer(out_),
                             [self = shared_from_this()](error_code ec, size_t) {
                               self->writing_ = false;
                               if (!self->open_) return;
                               if (ec) {
                                 self->console_.forget(*self);
                                 return;
                               }
                               self->send_due();
                             });
  }

  void tell(std::string notice) {
    if (!notice_.empty()) notice_ += "; ";
    notice_ += notice;
    send_due();
  }

  void demote(std::string why) {
    writer_ = false;
    told_read_only_ = false;
    tell(std::move(why));
    // A writer held back by its input is read again (its input now
    // refused), so that its end is seen and its slot freed.
    resume_reading();
  }

  // A read-only client's input: ignored, and it is told so once.
  void refuse_input() {
    if (told_read_only_) return;
    told_read_only_ = true;
    tell("this client is read-only: its input is ignored");
  }

  // A restored history: go on from its end if this client was past it.
  void clamp(uint64_t end) { next_ = std::min(next_, end); }

 private:
  void read_more() {
    reading_ = true;
    socket_.async_read_some(boost::asio::buffer(chunk_),
                            [self = shared_from_this()](error_code ec, size_t n) {
                              self->reading_ = false;
                              if (!self->open_) return;
                              if (ec) {
                                self->console_.forget(*self);
                                return;
                              }
                              self->in_.insert(self->in_.end(), self->chunk_.begin(),
                                               self->chunk_.begin() + static_cast<ptrdiff_t>(n));
                              if (!self->held_) self->parse();
                            });
  }

  // Bad input from the client: it is told why (best effort) and let go.
  void fail(const std::string& why) {
    log::warning("console client disconnected: " + why);
    pb::ConsoleOutput frame;
    frame.set_notice("disconnected: " + why);
    frame.set_writer(false);
    const std::string bytes = encode_control_frame(frame);
    error_code ignored;
    if (!writing_) {
      socket_.non_blocking(true, ignored);
      socket_.send(boost::asio::buffer(bytes), 0, ignored);
    }
    console_.forget(*this);
  }

  GuestConsole& console_;
  ControlStreamSocket socket_;
  uint64_t next_;  // the next history offset to send
  bool writer_;
  bool open_ = true;
  bool reading_ = false;
  bool writing_ = false;
  bool held_ = false;  // not read until the input queue has room
  bool told_read_only_ = false;
  std::string notice_;
  std::string out_;
  std::vector<uint8_t> in_;
  std::array<uint8_t, 8192> chunk_{};
};

GuestConsole::GuestConsole(boost::asio::io_context& events, const std::string& serial_path,
                           GuestConsoleLimits limits)
    : events_(events),
      limits_(limits),
      log_(serial_path, events),
      history_(limits.history_bytes),
      batch_timer_(events),
      idle_timer_(events) {}

GuestConsole::~GuestConsole() {
  for (auto& client : clients_) client->close();
}

void GuestConsole::put(uint8_t byte) {
  log_.put(byte);
  {
    std::lock_guard guard(mutex_);
    history_.append({&byte, 1});
  }
  if (!output_posted_.exchange(true)) boost::asio::post(events_, [this] { on_output(); });
}

// output_posted_ stays set until the batch timer fires, so put() posts
// nothing meanwhile; the timer sends what came in the batch's time.
void GuestConsole::on_output() {
  if (finished_) return;
  {
    std::lock_guard guard(mutex_);
    batch_end_ = history_.end();
  }
  for (auto& client : clients_) client->send_due();
  arm_idle_flush();
  batch_timer_.expires_after(limits_.output_batch);
  batch_timer_.async_wait([this](error_code ec) {
    if (ec || finished_) return;
    output_posted_ = false;
    uint64_t end = 0;
    {
      std::lock_guard guard(mutex_);
      end = history_.end();
    }
    // Printed before the flag was cleared (put() posted nothing for it).
    if (end != batch_end_ && !output_posted_.exchange(true)) on_output();
  });
}

// The log's partial line is written once the guest printed nothing more for
// limits_.idle_flush: a prompt shows, a line being printed is not cut.
void GuestConsole::arm_idle_flush() {
  if (idle_armed_) return;
  idle_armed_ = true;
  {
    std::lock_guard guard(mutex_);
    idle_mark_ = history_.end();
  }
  idle_timer_.expires_after(limits_.idle_flush);
  idle_timer_.async_wait([this](error_code ec) {
    idle_armed_ = false;
    if (ec || finished_) return;
    uint64_t end = 0;
    {
      std::lock_guard guard(mutex_);
      end = history_.end();
    }
    if (end == idle_mark_) {
      log_.flush_partial();
    } else {
      arm_idle_flush();
    }
  });
}

void GuestConsole::connect_input(IoBus& bus, Uart8250& uart) {
  bus_ = &bus;
  uart_ = &uart;
  uart.set_room_hook([this] { on_room(); });
}

void GuestConsole::on_room() {
  if (!feed_posted_.exchange(true)) {
    boost::asio::post(events_, [this] {
      feed_posted_ = false;
      feed();
    });
  }
}

void GuestConsole::accept_input(ConsoleClient& client, const std::string& data, bool send_break) {
  if (!client.writer()) {
    client.refuse_input();
    return;
  }
  for (char c : data) input_.push_back(static_cast<uint8_t>(c));
  if (send_break) input_.push_back(-1);
  feed();
}

// As much queued input as the FIFO has room for, under COM1's lock; the
// rest waits for the guest to empty the FIFO (on_room).
void GuestConsole::feed() {
  if (input_.empty() || uart_ == nullptr || finished_) return;
  size_t fed = 0;
  bus_->with_device_locked(*uart_, [&] {
    while (!input_.empty()) {
      if (input_.front() < 0) {
        if (!uart_->offer_break()) break;
        input_.pop_front();
        continue;
      }
      uint8_t run[Uart8250::kFifoSize];
      size_t n = 0;
      while (n < sizeof run && n < input_.size() && input_[n] >= 0)
        run[n] = static_cast<uint8_t>(input_[n]), ++n;
      const size_t taken = uart_->offer_input({run, n});
      input_.erase(input_.begin(), input_.begin() + static_cast<ptrdiff_t>(taken));
      fed += taken;
      if (taken < n) break;
    }
  });
  bytes_in_ += fed;
  if (input_.size() < kInputQueue && writer_) writer_->resume_reading();
}

void GuestConsole::attach(const pb::ConsoleAttach& request, ControlHandler::StreamReply reply) {
  std::erase_if(clients_, [](const auto& client) { return !client->open(); });
  if (finished_) {
    reply(error_response(pb::ERROR_CODE_INVALID_STATE, "the VM has stopped"), {});
    return;
  }
  if (clients_.size() >= limits_.max_clients) {
    reply(error_response(pb::ERROR_CODE_BUSY, "the console has " + std::to_string(clients_.size()) +
                                                  " clients attached, the most it takes"),
          {});
    return;
  }
  if (request.force() && !request.write()) {
    reply(error_response(pb::ERROR_CODE_INVALID_ARGUMENT, "force is for writers (write)"), {});
    return;
  }
  if (request.write() && writer_ && writer_->open() && !request.force()) {
    reply(error_response(pb::ERROR_CODE_BUSY,
                         "the console has a writer already: attach read-only, or force a "
                         "takeover (the other writer becomes read-only)"),
          {});
    return;
  }
  uint64_t start = 0, end = 0;
  {
    std::lock_guard guard(mutex_);
    start = history_.start();
    end = history_.end();
  }
  uint64_t from = end;
  switch (request.from_case()) {
    case pb::ConsoleAttach::kFromStart:
      from = start;
      break;
    case pb::ConsoleAttach::kBytesBack:
      from = end - std::min(request.bytes_back(), end - start);
      break;
    case pb::ConsoleAttach::kOffset:
      from = std::clamp(request.offset(), start, end);
      break;
    default:
      break;
  }
  pb::Response response;
  response.set_ok(true);
  auto* result = response.mutable_console_attach();
  result->set_offset(from);
  result->set_history_start(start);
  result->set_history_end(end);
  result->set_writer(request.write());
  result->set_took_over(request.write() && writer_ && writer_->open());
  const bool write = request.write();
  reply(std::move(response),
        [this, from, write](ControlStreamSocket socket, std::vector<uint8_t> unread) {
          auto client = std::make_shared<ConsoleClient>(*this, std::move(socket), from, write);
          // Others may have been answered meanwhile: the limit holds at
          // the handover too (the answer was ok, so the stream just ends).
          std::erase_if(clients_, [](const auto& c) { return !c->open(); });
          if (finished_ || clients_.size() >= limits_.max_clients) {
            client->close();
            return;
          }
          clients_.push_back(client);
          if (write) {
            // A writer that came between this answer and now is taken over too:
            // the newest writer wins, as with force.
            if (writer_ && writer_->open()) {
              writer_->demote("another client took the console over: this one is read-only now");
              ++takeovers_;
              if (on_takeover_) on_takeover_();
            }
            writer_ = client;
          }
          client->start(std::move(unread));
          client->send_due();
        });
}

void GuestConsole::forget(ConsoleClient& client) {
  client.close();
  if (writer_.get() == &client) writer_.reset();
  std::erase_if(clients_, [&](const auto& c) { return c.get() == &client; });
}

state::v1::ConsoleState GuestConsole::save() const {
  state::v1::ConsoleState state;
  std::lock_guard guard(mutex_);
  state.set_end_offset(history_.end());
  std::string tail;
  history_.read(history_.end() - std::min<uint64_t>(kStateHistoryBytes, history_.end()),
                kStateHistoryBytes, tail);
  state.set_history(std::move(tail));
  return state;
}

void GuestConsole::restore(const state::v1::ConsoleState& state) {
  // Far beyond what a guest prints, and no wrap when output follows.
  constexpr uint64_t kMaxEnd = uint64_t{1} << 62;
  if (state.end_offset() > kMaxEnd) {
    throw InputError("state: console history ends at offset " + std::to_string(state.end_offset()) +
                     ", past 2^62");
  }
  if (state.end_offset() < state.history().size()) {
    throw InputError("state: console history of " + std::to_string(state.history().size()) +
                     " bytes ends at offset " + std::to_string(state.end_offset()));
  }
  const auto* bytes = reinterpret_cast<const uint8_t*>(state.history().data());
  uint64_t end = 0;
  {
    std::lock_guard guard(mutex_);
    history_.assign(state.end_offset(), {bytes, state.history().size()});
    end = history_.end();
  }
  for (auto& client : clients_) client->clamp(end);
}

void GuestConsole::finish(std::chrono::milliseconds grace) {
  log_.finish(grace);
  // The guest's last words (a batch not yet sent when the event loop
  // stopped): a client's socket takes them at once if it has room.
  for (auto& client : clients_) client->send_due();
  finished_ = true;
  idle_timer_.cancel();
  batch_timer_.cancel();
  for (auto& client : clients_) client->close();
  clients_.clear();
  writer_.reset();
}

GuestConsole::Counters GuestConsole::counters() const {
  Counters c;
  {
    std::lock_guard guard(mutex_);
    c.bytes_out = history_.end();
  }
  c.bytes_in = bytes_in_;
  c.input_queued = input_.size();
  c.log_dropped = log_.dropped();
  c.client_missed = client_missed_;
  c.clients = clients_.size();
  c.takeovers = takeovers_;
  return c;
}

}  // namespace keel
