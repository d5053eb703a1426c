// libFuzzer target: an events subscription as a client can ask for it
// (vmm/events/event_journal.h): a real EventJournal behind a real
// ControlServer on its own event loop, a few events published each run
// into a small ring. The fuzzer's bytes are what one client sends before
// it half-closes. Nothing may crash; what comes back is whole frames: a
// Response each for the requests, and after an ok subscription only Events,
// numbered upwards from where it asked, the first after a gap saying so.
//
// Input: the bytes one client sends (framed Requests, or anything).
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
#include "vmm/events/event_journal.h"

using namespace keel;
namespace pb = ::keel::api::v1;

namespace {

struct EventsOnly : ControlHandler {
  EventJournal* journal = nullptr;
  void handle(const pb::Request&, Reply reply) override {
    reply(error_response(pb::ERROR_CODE_UNIMPLEMENTED, "events only"));
  }
  void handle_stream(const pb::Request& request, StreamReply reply) override {
    if (request.operation_case() != pb::Request::kEventsSubscribe) {
      return ControlHandler::handle_stream(request, std::move(reply));
    }
    journal->subscribe(request.events_subscribe(), std::move(reply));
  }
};

struct Vmm {
  Vmm() : path("/tmp/keel-events-fuzz-" + std::to_string(::getpid()) + ".sock") {
    journal = std::make_unique<EventJournal>(events, "", EventJournal::Limits{8, 4});
    handler.journal = journal.get();
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
  std::string path;
  std::unique_ptr<EventJournal> journal;
  EventsOnly handler;
  std::unique_ptr<ControlServer> server;
  std::thread loop;
};

Vmm& vmm() {
  static Vmm* v = [] {
    auto* created = new Vmm();
    std::atexit([] { ::unlink(vmm().path.c_str()); });
    return created;
  }();
  return *v;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Vmm& v = vmm();
  for (int i = 0; i < 3; ++i) v.journal->publish(pb::EVENT_TYPE_PAUSED, "fuzz");
  const std::string got = fuzz::exchange(v.path, data, size, 500);
  size_t at = 0;
  bool streaming = false;
  uint64_t last = 0;
  while (got.size() - at >= kControlFrameHeaderBytes) {
    const uint32_t length = decode_control_frame_length(std::span<const uint8_t>(
        reinterpret_cast<const uint8_t*>(got.data() + at), kControlFrameHeaderBytes));
    FUZZ_CHECK(length <= kControlMaxFrameBytes);
    FUZZ_CHECK(got.size() - at - kControlFrameHeaderBytes >= length);
    const char* body = got.data() + at + kControlFrameHeaderBytes;
    if (!streaming) {
      pb::Response response;
      FUZZ_CHECK(response.ParseFromArray(body, static_cast<int>(length)));
      if (response.ok() && response.has_events_subscribe()) {
        streaming = true;
        const auto& r = response.events_subscribe();
        FUZZ_CHECK(r.oldest_seq() <= r.next_seq());
        last = 0;
      }
    } else {
      pb::Event event;
      FUZZ_CHECK(event.ParseFromArray(body, static_cast<int>(length)));
      FUZZ_CHECK(event.seq() > last);
      FUZZ_CHECK(event.type() == pb::EVENT_TYPE_PAUSED);
      last = event.seq();
    }
    at += kControlFrameHeaderBytes + length;
  }
  FUZZ_CHECK(at == got.size());
  return 0;
}
