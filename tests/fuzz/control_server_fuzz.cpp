// libFuzzer target: keel-vmm's control socket as a client can feed it
// (control/control_server.h): any bytes, framed or not, on a real Unix
// socket to a real ControlServer on its own event loop. Whatever arrives,
// the server answers with well-formed frames holding Responses, or closes
// the connection; it never crashes, and keeps serving the next client.
//
// Input: the bytes one client sends before it half-closes the connection.
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>

#include "common/unique_fd.h"
#include "control/control_frame.h"
#include "control/control_server.h"
#include "tests/fuzz/fuzz_client.h"
#include "tests/fuzz/fuzz_memory.h"

using namespace keel;
namespace pb = ::keel::api::v1;

namespace {

// Answers every request at once, as the VMM answers status.
struct Echo : ControlHandler {
  void handle(const pb::Request& request, Reply reply) override {
    pb::Response response;
    response.set_ok(request.operation_case() != pb::Request::OPERATION_NOT_SET);
    reply(response);
  }
};

struct Server {
  Server() : path("/tmp/keel-control-fuzz-" + std::to_string(::getpid()) + ".sock") {
    ControlServerLimits limits;
    limits.max_connections = 4;
    limits.frame_timeout = std::chrono::milliseconds(200);
    limits.write_timeout = std::chrono::milliseconds(200);
    server = std::make_unique<ControlServer>(events, path, handler, limits);
    loop = std::thread([this] { events.run(); });
  }
  boost::asio::io_context events;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work{
      events.get_executor()};
  Echo handler;
  std::string path;
  std::unique_ptr<ControlServer> server;
  std::thread loop;
};

Server& server() {
  // Lives as long as the fuzzer process; its socket file goes at exit.
  static Server* s = [] {
    auto* created = new Server();
    std::atexit([] { ::unlink(server().path.c_str()); });
    return created;
  }();
  return *s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Server& s = server();
  const std::string got = fuzz::exchange(s.path, data, size, 2000);
  size_t at = 0;
  while (got.size() - at >= kControlFrameHeaderBytes) {
    const uint32_t length = decode_control_frame_length(std::span<const uint8_t>(
        reinterpret_cast<const uint8_t*>(got.data() + at), kControlFrameHeaderBytes));
    FUZZ_CHECK(length <= kControlMaxFrameBytes);
    FUZZ_CHECK(got.size() - at - kControlFrameHeaderBytes >= length);
    pb::Response response;
    FUZZ_CHECK(response.ParseFromArray(got.data() + at + kControlFrameHeaderBytes,
                                       static_cast<int>(length)));
    at += kControlFrameHeaderBytes + length;
  }
  FUZZ_CHECK(at == got.size());
  return 0;
}
