// keelctl vm console's link: a VM's console through this host's keel-agent
// (proto/agent.proto, VmConsole), which relays to the host that runs it. A
// thread reads the agent's responses and one writes the input, so the poll
// loop sees an eventfd.
#pragma once

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "cluster/agent_client.h"
#include "common/unique_fd.h"
#include "control/console_link.h"

namespace keel {

class AgentConsole final : public ConsoleLink {
 public:
  // Attaches to VM `vm`'s console through the agent at `agent` (a gRPC
  // target). Throws cluster::AgentCallError when refused or unreachable.
  AgentConsole(const std::string& agent, const std::string& vm,
               const keel::api::v1::ConsoleAttach& attach);
  ~AgentConsole() override;
  AgentConsole(const AgentConsole&) = delete;
  AgentConsole& operator=(const AgentConsole&) = delete;

  // The host that runs the VM.
  const std::string& host() const { return host_; }

  const keel::api::v1::ConsoleAttachResult& attached() const override { return attached_; }
  int fd() const override { return wake_.get(); }
  short poll_events() const override;
  void send(const std::string& data, bool send_break = false) override;
  bool wants_write() const override;
  void flush() override {}
  bool receive(std::vector<keel::api::v1::ConsoleOutput>& frames) override;
  bool wait_for(keel::api::v1::ConsoleOutput& frame, std::chrono::milliseconds timeout) override;
  std::string closed_because() const override;

 private:
  void read_loop();
  void write_loop();
  void wake() const;

  cluster::AgentClient client_;
  std::unique_ptr<cluster::AgentConsoleCall> call_;
  keel::api::v1::ConsoleAttachResult attached_;
  std::string host_;
  UniqueFd wake_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<keel::api::v1::ConsoleOutput> frames_;  // read, not yet received
  std::deque<keel::api::v1::ConsoleInput> input_;    // sent, not yet written
  bool writing_ = false, ended_ = false, stop_ = false;
  uint64_t written_ = 0;  // input requests written to the agent
  uint64_t taken_ = 0;    // of them, taken by the VMM (input_taken)
  std::string closed_;
  std::thread reader_, writer_;
};

}  // namespace keel
