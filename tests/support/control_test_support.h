// Pieces for testing the control socket: a scratch directory, the event loop
// in a thread, a scriptable ControlHandler, and a raw client that sends any
// bytes it is given.
#pragma once

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <future>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "common/unique_fd.h"
#include "control/control_frame.h"
#include "control/control_server.h"
#include "control/metric_set.h"

namespace keel::testing {

namespace control = keel::api::v1;

// Removed with everything in it, also when the test fails.
class TempDir {
 public:
  TempDir() {
    std::string pattern = "/tmp/keel-control-XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp");
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// The io_context run by one thread, as keel-vmm's event loop is.
class EventLoopThread {
 public:
  EventLoopThread() = default;
  ~EventLoopThread() { stop(); }
  EventLoopThread(const EventLoopThread&) = delete;
  EventLoopThread& operator=(const EventLoopThread&) = delete;

  boost::asio::io_context& events() { return events_; }
  void start() {
    thread_ = std::thread([this] { events_.run(); });
  }
  void stop() {
    work_.reset();
    events_.stop();
    if (thread_.joinable()) thread_.join();
  }
  // Runs `function` on the loop and waits for its result.
  template <typename Function>
  auto run_on(Function function) {
    std::packaged_task<decltype(function())()> task(std::move(function));
    auto result = task.get_future();
    boost::asio::post(events_, [&task] { task(); });
    return result.get();
  }

 private:
  boost::asio::io_context events_;
  std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> work_{
      events_.get_executor()};
  std::thread thread_;
};

// A VMM stand-in: answers each operation with fixed results and keeps a
// little state (running or paused), or holds, drops, throws, or answers from
// another thread, as the test asks.
class FakeHandler : public ControlHandler {
 public:
  enum class Mode { kAnswer, kHold, kDrop, kThrow, kAnswerFromThread };

  ~FakeHandler() override {
    for (auto& thread : threads_) thread.join();
  }

  void set_mode(Mode mode) {
    std::lock_guard guard(mutex_);
    mode_ = mode;
  }
  // Padding in each status answer, to make answers large.
  void set_status_padding(size_t bytes) {
    std::lock_guard guard(mutex_);
    status_padding_ = bytes;
  }

  void handle(const control::Request& request, Reply reply) override {
    std::unique_lock guard(mutex_);
    requests_.push_back(request);
    changed_.notify_all();
    switch (mode_) {
      case Mode::kAnswer:
        reply(answer(request));
        return;
      case Mode::kHold:
        held_.push_back(std::move(reply));
        changed_.notify_all();
        return;
      case Mode::kDrop:
        return;
      case Mode::kThrow:
        throw std::runtime_error("handler exploded");
      case Mode::kAnswerFromThread:
        threads_.emplace_back([reply, response = answer(request)] { reply(response); });
        return;
    }
  }

  // Waits until `count` requests are held; returns them (a copy of each reply).
  std::vector<Reply> wait_for_held(size_t count) {
    std::unique_lock guard(mutex_);
    if (!changed_.wait_for(guard, std::chrono::seconds(10),
                           [&] { return held_.size() >= count; })) {
      throw std::runtime_error("requests did not arrive");
    }
    return held_;
  }
  void clear_held() {
    std::lock_guard guard(mutex_);
    held_.clear();
  }
  size_t wait_for_requests(size_t count) {
    std::unique_lock guard(mutex_);
    changed_.wait_for(guard, std::chrono::seconds(10), [&] { return requests_.size() >= count; });
    return requests_.size();
  }
  std::vector<control::Request> requests() {
    std::lock_guard guard(mutex_);
    return requests_;
  }

  control::Response answer(const control::Request& request) {
    control::Response response;
    response.set_ok(true);
    switch (request.operation_case()) {
      case control::Request::kStatus: {
        auto* status = response.mutable_status();
        status->set_state(paused_ ? control::RUN_STATE_PAUSED : control::RUN_STATE_RUNNING);
        status->set_vcpus(2);
        status->set_memory_bytes(512ull << 20);
        status->set_uptime_ms(3723000);
        status->set_pid(4242);
        status->set_kernel("/boot/vmlinuz");
        status->set_serial("stdout");
        auto* disk = status->add_devices();
        disk->set_type("virtio-blk");
        disk->set_pci_address("00:01.0");
        disk->set_description("path=/var/lib/keel/disk.img" + std::string(status_padding_, 'x'));
        auto* uart = status->add_devices();
        uart->set_type("uart8250");
        uart->set_description("port=0x3f8");
        return response;
      }
      case control::Request::kPause:
        if (paused_)
          return refusal(control::ERROR_CODE_INVALID_STATE, "the guest is already paused");
        paused_ = true;
        response.mutable_pause()->set_state(control::RUN_STATE_PAUSED);
        response.mutable_pause()->set_duration_ms(7);
        return response;
      case control::Request::kResume:
        if (!paused_) return refusal(control::ERROR_CODE_INVALID_STATE, "the guest is not paused");
        paused_ = false;
        response.mutable_resume()->set_state(control::RUN_STATE_RUNNING);
        return response;
      case control::Request::kShutdown:
        response.mutable_shutdown()->set_forced(request.shutdown().timeout_ms() == 1);
        response.mutable_shutdown()->set_duration_ms(1234);
        response.mutable_shutdown()->set_state(control::RUN_STATE_STOPPED);
        return response;
      case control::Request::kKill:
        response.mutable_kill()->set_state(control::RUN_STATE_STOPPED);
        return response;
      case control::Request::kSnapshot:
        if (request.snapshot().dir().rfind("/nonexistent", 0) == 0) {
          return refusal(
              control::ERROR_CODE_INVALID_ARGUMENT,
              "cannot create " + request.snapshot().dir() + ": No such file or directory");
        }
        response.mutable_snapshot()->set_dir(request.snapshot().dir());
        response.mutable_snapshot()->set_bytes_written(300ull << 20);
        response.mutable_snapshot()->set_pause_ms(42);
        response.mutable_snapshot()->set_duration_ms(1500);
        return response;
      case control::Request::kMigrateStatus:
        response.mutable_migrate_status()->set_phase(control::MIGRATION_PHASE_NONE);
        return response;
      case control::Request::kMigrate:
      case control::Request::kMigrateCancel:
        return refusal(control::ERROR_CODE_UNIMPLEMENTED, "this fake VMM does not migrate");
      case control::Request::kReplicate:
      case control::Request::kReplicaStatus:
      case control::Request::kReplicaStop:
      case control::Request::kTakeover:
      case control::Request::kSwitchover:
        return refusal(control::ERROR_CODE_UNIMPLEMENTED, "this fake VMM does not replicate");
      case control::Request::kMetrics: {
        MetricSet set;
        set.counter("keel_disk_read_bytes_total", "Bytes read", 4096.0 * metrics_asked_,
                    {{"disk", "vda"}});
        set.gauge("keel_disk_requests_in_flight", "Requests \"in flight\"\nnow", 2,
                  {{"disk", "vda"}});
        LatencyHistogram latency;
        latency.record(std::chrono::microseconds(80));
        latency.record(std::chrono::milliseconds(3));
        set.histogram("keel_disk_request_duration_seconds", "Latency", latency, {{"disk", "vda"}});
        ++metrics_asked_;
        *response.mutable_metrics() = set.result();
        return response;
      }
      case control::Request::kConsoleAttach:  // the server hands these to handle_stream
      case control::Request::kEventsSubscribe:
        return refusal(control::ERROR_CODE_INTERNAL, "console attach reached handle()");
      case control::Request::OPERATION_NOT_SET:
        break;
    }
    return refusal(control::ERROR_CODE_INTERNAL, "the server passed on an empty request");
  }

 private:
  int metrics_asked_ = 0;
  static control::Response refusal(control::ErrorCode code, const std::string& message) {
    control::Response response;
    response.set_ok(false);
    response.mutable_error()->set_code(code);
    response.mutable_error()->set_message(message);
    return response;
  }

  std::mutex mutex_;
  std::condition_variable changed_;
  Mode mode_ = Mode::kAnswer;
  size_t status_padding_ = 0;
  bool paused_ = false;
  std::vector<control::Request> requests_;
  std::vector<Reply> held_;
  std::vector<std::thread> threads_;
};

// A blocking client that sends whatever bytes it is given; every read gives
// up after 10 s.
class RawClient {
 public:
  explicit RawClient(const std::string& path)
      : fd_(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::strncpy(address.sun_path, path.c_str(), sizeof(address.sun_path) - 1);
    if (::connect(fd_.get(), reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
      throw std::runtime_error("connect " + path + ": " + std::strerror(errno));
    }
    timeval timeout{10, 0};
    ::setsockopt(fd_.get(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    ::setsockopt(fd_.get(), SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
  }

  int fd() const { return fd_.get(); }
  void close() { fd_.reset(); }

  void send_bytes(const std::string& bytes) {
    size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t n = ::send(fd_.get(), bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
      if (n <= 0) throw std::runtime_error(std::string("send: ") + std::strerror(errno));
      done += static_cast<size_t>(n);
    }
  }
  void send_request(const control::Request& request) { send_bytes(encode_control_frame(request)); }

  // The next response; nullopt when the server closed the connection.
  std::optional<control::Response> read_response() {
    uint8_t header[kControlFrameHeaderBytes];
    if (!read_exact(header, sizeof(header))) return std::nullopt;
    std::vector<uint8_t> body(decode_control_frame_length(header));
    if (body.size() > kControlMaxFrameBytes) throw std::runtime_error("oversized response");
    if (!read_exact(body.data(), body.size())) throw std::runtime_error("response cut short");
    control::Response response;
    if (!response.ParseFromArray(body.data(), static_cast<int>(body.size()))) {
      throw std::runtime_error("malformed response");
    }
    return response;
  }

  control::Response call(const control::Request& request) {
    send_request(request);
    auto response = read_response();
    if (!response) throw std::runtime_error("connection closed instead of an answer");
    return *response;
  }

  // True when the server closed the connection (EOF or reset) before sending
  // anything more.
  bool closed_by_server() {
    uint8_t byte;
    const ssize_t n = ::recv(fd_.get(), &byte, 1, 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      throw std::runtime_error("still open after 10 s");
    return n == 0 || (n < 0 && errno == ECONNRESET);
  }

 private:
  bool read_exact(uint8_t* data, size_t size) {
    size_t done = 0;
    while (done < size) {
      const ssize_t n = ::recv(fd_.get(), data + done, size - done, 0);
      if (n == 0 || (n < 0 && errno == ECONNRESET)) {
        if (done == 0) return false;
        throw std::runtime_error("connection closed halfway through a frame");
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw std::runtime_error(std::string("recv: ") + std::strerror(errno));
      done += static_cast<size_t>(n);
    }
    return true;
  }

  UniqueFd fd_;
};

inline control::Request status_request(uint64_t id = 0) {
  control::Request request;
  request.set_id(id);
  request.mutable_status();
  return request;
}

}  // namespace keel::testing
