// The guest's serial console (COM1) as keel-vmm serves it: every byte the
// guest prints goes to the console log (--serial: stdout or a file) and to
// a bounded history addressed by offset since boot (kept in the VM's state,
// so it moves with snapshots and migrations), from which any number of
// attached clients (proto/control.proto, ConsoleAttach) are sent what they
// have not seen. One of them may write: its input reaches the UART as fast
// as the guest empties the receive FIFO, and the client's connection is not
// read while input waits, so nothing is dropped and memory stays bounded.
//
// The guest never waits for a client: each client has at most one write in
// flight and reads from the history; one that falls behind by more than the
// history skips ahead and is told how many bytes it missed. Output not yet
// ending in a newline reaches the log after a short idle time.
//
// Threads: put() on vCPU threads (under COM1's lock); everything else on
// the event loop, except save/restore, which the machine calls with the
// vCPUs parked.
#pragma once

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "control/control_server.h"
#include "devices/pc/io_bus.h"
#include "devices/pc/uart8250.h"
#include "proto/control.pb.h"
#include "proto/vm_state.pb.h"
#include "vmm/console/console_history.h"
#include "vmm/console/serial_output.h"

namespace keel {

class ConsoleClient;

struct GuestConsoleLimits {
  size_t history_bytes = size_t{2} << 20;
  size_t max_clients = 16;
  // Output without its newline reaches the log once the guest printed
  // nothing for this long.
  std::chrono::milliseconds idle_flush{100};
  // Output printed within this long of the last batch waits for the next:
  // a guest printing a byte per exit wakes the event loop about once per
  // batch, not once per byte, and each viewer gets a frame or two per
  // batch; the first byte after a quiet spell goes out at once.
  std::chrono::microseconds output_batch{2000};
};

class GuestConsole {
 public:
  // `serial_path`: the log (empty: stdout); see SerialOutput.
  GuestConsole(boost::asio::io_context& events, const std::string& serial_path,
               GuestConsoleLimits limits = {});
  ~GuestConsole();
  GuestConsole(const GuestConsole&) = delete;
  GuestConsole& operator=(const GuestConsole&) = delete;

  // COM1's transmit sink (any vCPU thread).
  void put(uint8_t byte);
  // See SerialOutput::stop_rotating (jailed mode).
  void stop_rotating_log() { log_.stop_rotating(); }
  // Once COM1 exists: input reaches `uart` holding the bus's lock for it.
  void connect_input(IoBus& bus, Uart8250& uart);

  // Runs (on the event loop) when a writer takes the console over.
  void on_takeover(std::function<void()> hook) { on_takeover_ = std::move(hook); }
  // The control socket's ConsoleAttach, on the event loop.
  void attach(const keel::api::v1::ConsoleAttach& request, ControlHandler::StreamReply reply);

  // The history's newest kStateHistoryBytes for the VM's state, and back
  // (input validated; clients attached go on from the restored end). Not
  // all of it: every migration's pause and every replica epoch carries it,
  // and a screenful or a thousand lines is what a console attached after
  // the move needs (the log file has the rest).
  static constexpr size_t kStateHistoryBytes = 64 * 1024;
  state::v1::ConsoleState save() const;
  void restore(const state::v1::ConsoleState& state);

  // At exit: the log written (waiting at most `grace` for a slow reader),
  // the clients disconnected.
  void finish(std::chrono::milliseconds grace);

  struct Counters {
    uint64_t bytes_out = 0;      // printed by the guest
    uint64_t bytes_in = 0;       // fed to the guest
    uint64_t input_queued = 0;   // accepted from a writer, waiting for the guest
    uint64_t log_dropped = 0;    // the log's reader too slow or gone, or the file full
    uint64_t client_missed = 0;  // skipped by clients that read too slowly
    uint64_t clients = 0;        // attached now
    uint64_t takeovers = 0;
  };
  Counters counters() const;  // on the event loop

 private:
  friend class ConsoleClient;
  void on_output();  // event loop: something was printed
  void send_to(ConsoleClient& client);
  void feed();     // event loop: queued input to the UART
  void on_room();  // any thread: the guest emptied the FIFO
  void accept_input(ConsoleClient& client, const std::string& data, bool send_break);
  void forget(ConsoleClient& client);
  void arm_idle_flush();

  boost::asio::io_context& events_;
  const GuestConsoleLimits limits_;
  SerialOutput log_;
  mutable std::mutex mutex_;  // history_, bytes_out_
  ConsoleHistory history_;
  std::atomic<bool> output_posted_{false};
  std::atomic<bool> feed_posted_{false};

  // Event loop only.
  IoBus* bus_ = nullptr;
  Uart8250* uart_ = nullptr;
  std::vector<std::shared_ptr<ConsoleClient>> clients_;
  std::shared_ptr<ConsoleClient> writer_;
  // Input accepted from writers, not yet in the FIFO: bytes, and -1 for a
  // BREAK. At most kInputQueue entries past which the writer is not read.
  std::deque<int16_t> input_;
  boost::asio::steady_timer batch_timer_;
  uint64_t batch_end_ = 0;  // history end when the last batch went out
  boost::asio::steady_timer idle_timer_;
  bool idle_armed_ = false;
  uint64_t idle_mark_ = 0;  // history end when the idle timer was armed
  uint64_t bytes_in_ = 0;
  uint64_t client_missed_ = 0;
  uint64_t takeovers_ = 0;
  std::function<void()> on_takeover_;
  bool finished_ = false;
};

}  // namespace keel
