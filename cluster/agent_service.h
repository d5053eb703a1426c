// keel-agent's gRPC service (proto/agent.proto) over an Agent, and the
// servers it listens with: the management address for operators, the
// cluster address for the other agents.
#pragma once

#include <memory>
#include <string>

#include "cluster/agent.h"

namespace keel::cluster {

class AgentServer {
 public:
  // kPeersOnly: Hello, AdmitHost and ClusterStatus (reads), what the other
  // agents call; whatever changes this host is refused (PERMISSION_DENIED)
  // there: it is for its operators, on the management address.
  enum Serves { kEverything, kPeersOnly };
  // Listens on `address` (ADDR:PORT) at once; InputError when it cannot.
  AgentServer(Agent& agent, const std::string& address, Serves serves);
  ~AgentServer();
  AgentServer(const AgentServer&) = delete;
  AgentServer& operator=(const AgentServer&) = delete;

  const std::string& address() const { return address_; }

  struct Impl;

 private:
  std::string address_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace keel::cluster
