// libFuzzer target: the guest console's stream as an attached writer can
// feed it (vmm/console/guest_console.h): a real GuestConsole with COM1 on an
// I/O bus, behind a real ControlServer on its own event loop. A client
// attaches as the writer, sends the fuzzer's bytes and half-closes; the
// test thread plays the guest, reading COM1's receive FIFO meanwhile.
// Nothing may crash; the VMM sends only whole ConsoleOutput frames; and the
// guest receives nothing but a prefix of what the client's well-formed
// input frames carried, in order (a BREAK as a NUL), up to the first bad one.
//
// Input: the bytes the client sends after its attach.
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <memory>
#include <string>
#include <thread>

#include "control/console_connection.h"
#include "control/control_frame.h"
#include "control/control_server.h"
#include "tests/fuzz/fuzz_memory.h"
#include "vmm/console/guest_console.h"

using namespace keel;
namespace pb = ::keel::api::v1;

namespace {

constexpr uint16_t kCom1 = 0x3f8;

struct ConsoleOnly : ControlHandler {
  GuestConsole* console = nullptr;
  void handle(const pb::Request&, Reply reply) override {
    reply(error_response(pb::ERROR_CODE_UNIMPLEMENTED, "console only"));
  }
  void handle_stream(const pb::Request& request, StreamReply reply) override {
    console->attach(request.console_attach(), std::move(reply));
  }
};

struct Machine {
  Machine() : path("/tmp/keel-console-fuzz-" + std::to_string(::getpid()) + ".sock") {
    console = std::make_unique<GuestConsole>(events, "/dev/null");
    uart = std::make_unique<Uart8250>([this](uint8_t b) { console->put(b); }, [] {});
    bus.add(kCom1, 8, *uart);
    console->connect_input(bus, *uart);
    const uint8_t mcr = 0x0b;  // DTR, RTS, OUT2: the guest takes input
    bus.write(kCom1 + 4, {&mcr, 1});
    handler.console = console.get();
    server = std::make_unique<ControlServer>(events, path, handler);
    loop = std::thread([this] { events.run(); });
  }
  boost::asio::io_context events;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work{
      events.get_executor()};
  std::string path;
  std::unique_ptr<GuestConsole> console;
  std::unique_ptr<Uart8250> uart;
  IoBus bus;
  ConsoleOnly handler;
  std::unique_ptr<ControlServer> server;
  std::thread loop;

  uint8_t port(uint16_t offset) {
    uint8_t v = 0;
    bus.read(static_cast<uint16_t>(kCom1 + offset), {&v, 1});
    return v;
  }
  // What the guest finds in its FIFO now.
  void drain(std::string& into) {
    while (port(5) & 0x01) into.push_back(static_cast<char>(port(0)));
  }
  // The guest reads until the console holds no more input for it.
  void settle(std::string& into) {
    for (;;) {
      drain(into);
      std::promise<uint64_t> queued;
      boost::asio::post(events, [&] { queued.set_value(console->counters().input_queued); });
      if (queued.get_future().get() == 0 && !(port(5) & 0x01)) return;
    }
  }
};

Machine& machine() {
  static Machine* m = [] {
    auto* created = new Machine();
    std::atexit([] { ::unlink(machine().path.c_str()); });
    return created;
  }();
  return *m;
}

// What the console should feed for `data`: each well-formed input frame's
// bytes (and a NUL for its BREAK), up to the first frame it refuses.
std::string expected_input(const uint8_t* data, size_t size) {
  std::string out;
  size_t at = 0;
  while (size - at >= kControlFrameHeaderBytes) {
    const uint32_t length = decode_control_frame_length({data + at, kControlFrameHeaderBytes});
    if (length > 4096 + 64 || size - at - kControlFrameHeaderBytes < length) break;
    pb::ConsoleInput input;
    if (!input.ParseFromArray(data + at + kControlFrameHeaderBytes, static_cast<int>(length)) ||
        input.data().size() > 4096)
      break;
    out += input.data();
    if (input.send_break()) out.push_back('\0');
    at += kControlFrameHeaderBytes + length;
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Machine& m = machine();
  std::string got;
  m.settle(got);  // a former client's leftovers
  got.clear();
  pb::ConsoleAttach attach;
  attach.set_write(true);
  attach.set_force(true);  // the last input's client may not have been forgotten yet
  std::unique_ptr<ConsoleConnection> connection;
  try {
    connection = std::make_unique<ConsoleConnection>(m.path, attach, std::chrono::seconds(5));
  } catch (const std::exception& e) {
    __builtin_printf("attach failed: %s\n", e.what());
    FUZZ_CHECK(!"attach failed");
  }
  ConsoleConnection& client = *connection;
  size_t sent = 0;
  std::string frames;
  while (sent < size) {
    const ssize_t n = ::send(client.fd(), data + sent, size - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
    } else if (n < 0 && errno == EAGAIN) {
      m.drain(got);  // the console waits for the guest to read
      pollfd p{client.fd(), POLLOUT, 0};
      ::poll(&p, 1, 10);
    } else {
      break;  // the VMM closed on a bad frame: fine
    }
  }
  ::shutdown(client.fd(), SHUT_WR);
  // Until the VMM closes (a bad frame) or stays quiet: the guest reads on.
  std::vector<pb::ConsoleOutput> outputs;
  for (int quiet = 0; quiet < 5;) {
    pollfd p{client.fd(), POLLIN, 0};
    const bool ready = ::poll(&p, 1, 2) > 0;
    const size_t before = got.size();
    m.drain(got);
    if (ready && !client.receive(outputs)) break;  // throws on a frame not whole
    quiet = (got.size() == before && !ready) ? quiet + 1 : 0;
  }
  m.settle(got);
  const std::string expected = expected_input(data, size);
  if (got.size() > expected.size() || expected.compare(0, got.size(), got) != 0) {
    std::fprintf(
        stderr, "the guest got %zu bytes, not a prefix of the %zu sent: \"%s\" vs \"%s\"\n",
        got.size(), expected.size(), got.substr(0, 80).c_str(), expected.substr(0, 80).c_str());
  }
  FUZZ_CHECK(got.size() <= expected.size());
  FUZZ_CHECK(expected.compare(0, got.size(), got) == 0);
  return 0;
}
