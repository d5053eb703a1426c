// keel-agent's gRPC service (proto/agent.proto) over an Agent, and the
// servers it listens with: a Unix socket for the host's operators (keelctl;
// the socket's directory admits root alone), the cluster address with TLS
// for the other agents.
#pragma once

#include <memory>
#include <string>

#include "cluster/agent.h"

namespace keel::cluster {

class AgentServer {
 public:
  // kEverything: on "unix:PATH", plaintext. kPeersOnly: on ADDR:PORT with
  // the cluster's TLS; Hello and AdmitHost (a joining host has no
  // certificate yet) to anyone, the Host* calls and ClusterStatus to a
  // client with a certificate of the cluster's CA (else UNAUTHENTICATED),
  // the operators' calls to nobody (PERMISSION_DENIED).
  enum Serves { kEverything, kPeersOnly };
  // Listens on `address` at once; InputError when it cannot.
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
