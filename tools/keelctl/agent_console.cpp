#include "tools/keelctl/agent_console.h"

#include <poll.h>
#include <sys/eventfd.h>

#include <system_error>

namespace keel {

namespace pb = ::keel::api::v1;
namespace agent_api = ::keel::agent::v1;

namespace {

// Output frames read ahead of the terminal at most (then the agent's
// stream waits: flow control, not memory).
constexpr size_t kFramesAhead = 256;
constexpr size_t kInputFrame = 4096;  // proto/control.proto: ConsoleInput

}  // namespace

AgentConsole::AgentConsole(const std::string& agent, const std::string& vm,
                           const pb::ConsoleAttach& attach)
    : client_(agent, std::chrono::seconds(10)),
      call_(client_.vm_console()),
      wake_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  if (!wake_.valid()) throw std::system_error(errno, std::generic_category(), "eventfd");
  agent_api::VmConsoleRequest first;
  first.set_name(vm);
  *first.mutable_attach() = attach;
  call_->write(first);
  // The VM's host's agent answers within 15 s, or says it did not.
  const agent_api::VmConsoleResponse answer = call_->read_attached(std::chrono::seconds(20));
  if (!answer.closed().empty()) throw cluster::AgentCallError(9, answer.closed());
  attached_ = answer.attached();
  host_ = answer.host();
  reader_ = std::thread([this] { read_loop(); });
  writer_ = std::thread([this] { write_loop(); });
}

AgentConsole::~AgentConsole() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  changed_.notify_all();
  call_->cancel();
  reader_.join();
  writer_.join();
}

short AgentConsole::poll_events() const {
  return POLLIN;
}

void AgentConsole::wake() const {
  ::eventfd_write(wake_.get(), 1);
}

void AgentConsole::read_loop() {
  agent_api::VmConsoleResponse response;
  std::string closed = "the agent ended the console";
  while (call_->read(response)) {
    if (!response.closed().empty()) {
      closed = response.closed();
      break;
    }
    std::unique_lock lock(mutex_);
    if (response.input_taken() > taken_) {
      taken_ = response.input_taken();
      lock.unlock();
      changed_.notify_all();
      wake();  // the poll loop may offer input again, or end
      continue;
    }
    if (!response.has_output()) continue;
    changed_.wait(lock, [&] { return frames_.size() < kFramesAhead || stop_; });
    if (stop_) return;
    frames_.push_back(std::move(*response.mutable_output()));
    lock.unlock();
    changed_.notify_all();  // wait_for
    wake();
  }
  {
    std::lock_guard lock(mutex_);
    ended_ = true;
    closed_ = closed;
  }
  changed_.notify_all();
  wake();
}

void AgentConsole::write_loop() {
  for (;;) {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return !input_.empty() || ended_ || stop_; });
    if (stop_) return;
    if (input_.empty()) {
      // The agent closed the console: our end of the call, so that it
      // ends well.
      lock.unlock();
      call_->writes_done();
      return;
    }
    agent_api::VmConsoleRequest request;
    *request.mutable_input() = std::move(input_.front());
    input_.pop_front();
    writing_ = true;
    lock.unlock();
    const bool written = call_->write(request);
    lock.lock();
    writing_ = false;
    if (written) {
      ++written_;
    } else {
      input_.clear();
      taken_ = written_;  // nothing more will arrive: not waited for
    }
    const bool idle = input_.empty();
    lock.unlock();
    if (idle) wake();  // the poll loop looks at wants_write() again
  }
}

void AgentConsole::send(const std::string& data, bool send_break) {
  {
    std::lock_guard lock(mutex_);
    size_t at = 0;
    do {
      pb::ConsoleInput input;
      input.set_data(data.substr(at, kInputFrame));
      at += kInputFrame;
      input.set_send_break(send_break && at >= data.size());
      input_.push_back(std::move(input));
    } while (at < data.size());
  }
  changed_.notify_all();
}

bool AgentConsole::wants_write() const {
  std::lock_guard lock(mutex_);
  // Until the VMM took it: a client ending sooner would drop input the
  // agents still hold.
  return !input_.empty() || writing_ || (taken_ < written_ && !ended_);
}

bool AgentConsole::receive(std::vector<pb::ConsoleOutput>& frames) {
  eventfd_t ignored;
  ::eventfd_read(wake_.get(), &ignored);
  std::lock_guard lock(mutex_);
  for (auto& frame : frames_) frames.push_back(std::move(frame));
  frames_.clear();
  changed_.notify_all();
  return !ended_;
}

bool AgentConsole::wait_for(pb::ConsoleOutput& frame, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  changed_.wait_for(lock, timeout, [&] { return !frames_.empty() || ended_; });
  if (frames_.empty()) return false;
  frame = std::move(frames_.front());
  frames_.pop_front();
  changed_.notify_all();
  return true;
}

std::string AgentConsole::closed_because() const {
  std::lock_guard lock(mutex_);
  return closed_;
}

}  // namespace keel
