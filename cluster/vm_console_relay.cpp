// keelctl vm console through the agents: the agent asked finds the VM's
// owner in etcd and relays to that host's agent (HostVmConsole), which
// attaches to the keel-vmm's control socket (control/console_connection.h).
// Input is paced end to end: the VM's host holds one request read ahead of
// the one the VMM's socket is taking, the VMM takes input as fast as the
// guest reads its UART, and gRPC's flow control carries that back to
// keelctl, which is told each request the VMM took (input_taken).
#include <poll.h>
#include <sys/eventfd.h>

#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>

#include "cluster/cluster_view.h"
#include "cluster/host_vms.h"
#include "common/unique_fd.h"
#include "control/console_connection.h"
#include "storage/vm_runtime.h"

namespace keel::cluster {

namespace {

using Clock = std::chrono::steady_clock;

// How long a caller told the console closed has to end its requests
// before its call is cancelled.
constexpr auto kClosingGrace = std::chrono::seconds(2);
// The VM's host answers an attach within this (its VMM's within 10 s).
constexpr auto kAttachLimit = std::chrono::seconds(15);

// The caller's requests, read on a thread of their own, handed over one at
// a time (one more is read meanwhile, held until the first is taken); the
// caller's call is cancelled when it did not end its requests by the time
// this goes.
class CallerInput {
 public:
  CallerInput(const Agent::ConsoleStream& stream, int wake)
      : stream_(stream), wake_(wake), thread_([this] { loop(); }) {}
  ~CallerInput() {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    changed_.notify_all();
    if (!ended()) stream_.cancel();
    thread_.join();
  }
  CallerInput(const CallerInput&) = delete;
  CallerInput& operator=(const CallerInput&) = delete;

  // The next input, once; the thread then reads the request after it.
  std::optional<keel::api::v1::ConsoleInput> take() {
    std::optional<keel::api::v1::ConsoleInput> input;
    {
      std::lock_guard lock(mutex_);
      input.swap(input_);
    }
    changed_.notify_all();
    return input;
  }
  bool ended() {
    std::lock_guard lock(mutex_);
    return ended_;
  }
  // Until the caller ended its requests, or `limit`.
  void await_end(std::chrono::milliseconds limit) {
    std::unique_lock lock(mutex_);
    changed_.wait_for(lock, limit, [&] { return ended_; });
  }

 private:
  void loop() {
    api::VmConsoleRequest request;
    while (stream_.read(request)) {
      std::unique_lock lock(mutex_);
      changed_.wait(lock, [&] { return !input_ || stop_; });
      if (stop_) break;
      input_ = request.input();
      lock.unlock();
      ::eventfd_write(wake_, 1);
    }
    {
      std::lock_guard lock(mutex_);
      ended_ = true;
    }
    changed_.notify_all();
    ::eventfd_write(wake_, 1);
  }

  const Agent::ConsoleStream& stream_;
  const int wake_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::optional<keel::api::v1::ConsoleInput> input_;
  bool ended_ = false, stop_ = false;
  std::thread thread_;
};

// Between the caller and the VMM's console until either ends; why the
// console closed, or "" when the caller went.
std::string relay_to_vmm(ConsoleConnection& console, const Agent::ConsoleStream& stream,
                         CallerInput& input, int wake, const std::string& vm) {
  api::VmConsoleResponse response;
  uint64_t taken = 0;    // input requests the VMM's socket took
  bool unacked = false;  // the caller was not told the last one yet
  for (;;) {
    if (stream.gone()) return "";
    pollfd fds[2] = {
        {console.fd(), static_cast<short>(POLLIN | (console.wants_write() ? POLLOUT : 0)), 0},
        {wake, POLLIN, 0}};
    if (::poll(fds, 2, 500) < 0 && errno != EINTR) {
      throw std::system_error(errno, std::generic_category(), "poll in the console relay");
    }
    if (fds[1].revents & POLLIN) {
      eventfd_t ignored;
      ::eventfd_read(wake, &ignored);
    }
    try {
      // What the VMM did not take yet first; then the next input, once it
      // took all (the caller's next request is read meanwhile).
      console.flush();
      if (!console.wants_write()) {
        if (auto typed = input.take()) {
          console.send(typed->data(), typed->send_break());
          ++taken;
          unacked = true;
          console.flush();
        }
      }
      if (unacked && !console.wants_write()) {
        api::VmConsoleResponse ack;
        ack.set_input_taken(taken);
        if (!stream.write(ack)) return "";
        unacked = false;
      }
      if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
        std::vector<keel::api::v1::ConsoleOutput> frames;
        const bool open = console.receive(frames);
        for (auto& frame : frames) {
          *response.mutable_output() = std::move(frame);
          if (!stream.write(response)) return "";
        }
        if (!open) return "VM " + vm + "'s keel-vmm closed its console (it stopped, or moved)";
      }
    } catch (const ControlClientError& e) {
      return "VM " + vm + "'s keel-vmm: " + e.what();
    }
  }
}

}  // namespace

void Agent::host_vm_console(const ConsoleStream& stream) {
  require_member();
  api::VmConsoleRequest first;
  if (!stream.read(first)) return;
  host_vm_console(first, stream);
}

void Agent::host_vm_console(const api::VmConsoleRequest& first, const ConsoleStream& stream) {
  const std::string& name = first.name();
  storage::check_pool_name("VM name", name);
  if (!vms_->running().count(name)) {
    throw refused("VM " + name + " does not run on host " + settings_.name);
  }
  std::optional<ConsoleConnection> console;
  try {
    console.emplace(storage::vm_api_socket(name).string(), first.attach(),
                    std::chrono::seconds(10));
  } catch (const ConsoleRefused& e) {
    throw refused("VM " + name + "'s console: " + e.what());
  } catch (const ControlClientError& e) {
    throw AgentError(AgentError::Code::kUnavailable,
                     "VM " + name + "'s keel-vmm on host " + settings_.name + ": " + e.what());
  }
  api::VmConsoleResponse hello;
  hello.set_host(settings_.name);
  *hello.mutable_attached() = console->attached();
  if (!stream.write(hello)) return;
  UniqueFd wake(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake.valid()) throw std::system_error(errno, std::generic_category(), "eventfd");
  CallerInput input(stream, wake.get());
  const std::string closed = relay_to_vmm(*console, stream, input, wake.get(), name);
  if (closed.empty()) return;
  api::VmConsoleResponse last;
  last.set_closed(closed);
  if (stream.write(last)) input.await_end(kClosingGrace);
}

void Agent::vm_console(const ConsoleStream& stream) {
  require_member();
  api::VmConsoleRequest first;
  if (!stream.read(first)) return;
  storage::check_pool_name("VM name", first.name());
  if (!first.has_attach()) throw invalid("the first console request attaches (attach unset)");
  // A console works while the cluster has no majority (that is when an
  // operator may need it most): where the VM ran at the last read.
  bool current = true;
  const ClusterView view = cluster_view_or_last(current);
  const std::string host = view.owner(first.name()).host();
  on_host(
      view, host,
      [&] {
        host_vm_console(first, stream);
        return 0;
      },
      [&](AgentClient& peer) {
        relay_to_host(peer, host, first, stream);
        return 0;
      },
      std::chrono::seconds(10));
}

void Agent::relay_to_host(AgentClient& peer, const std::string& host,
                          const api::VmConsoleRequest& first, const ConsoleStream& stream) {
  auto call = peer.host_vm_console();
  call->write(first);
  api::VmConsoleResponse response = call->read_attached(kAttachLimit);
  if (!stream.write(response)) return;
  // The caller's requests to the VM's host; the host's responses back,
  // until one side ends.
  std::mutex mutex;
  std::condition_variable changed;
  bool caller_done = false;
  std::thread input([&] {
    api::VmConsoleRequest request;
    while (stream.read(request)) {
      if (!call->write(request)) break;
    }
    if (stream.gone()) {
      call->cancel();
    } else {
      call->writes_done();
    }
    std::lock_guard lock(mutex);
    caller_done = true;
    changed.notify_all();
  });
  bool closed = false, caller_there = true;
  while (call->read(response)) {
    closed = closed || !response.closed().empty();
    caller_there = stream.write(response);
    if (!caller_there) break;
  }
  if (!closed && caller_there) {
    // The VM's host went (its agent, or the way to it): said as the end.
    api::VmConsoleResponse last;
    last.set_closed("the console's relay through host " + host + " ended");
    closed = stream.write(last);
  }
  if (closed) {
    std::unique_lock lock(mutex);
    changed.wait_for(lock, kClosingGrace, [&] { return caller_done; });
  }
  {
    std::lock_guard lock(mutex);
    if (!caller_done) stream.cancel();
  }
  call->cancel();
  input.join();
}

}  // namespace keel::cluster
