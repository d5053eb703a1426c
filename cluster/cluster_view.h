// What the cluster's VM operations (cluster_vms.cpp, cluster_ha.cpp) share
// inside keel-agent: the cluster as read from etcd at one moment, and
// forwarding a call to the host that acts.
#pragma once

#include <map>
#include <string>

#include "cluster/agent.h"
#include "cluster/agent_client.h"
#include "proto/agent.pb.h"

namespace keel::cluster {

namespace api = keel::agent::v1;

inline bool has_role(const api::Host& host, api::Role role) {
  for (int r : host.roles()) {
    if (r == role) return true;
  }
  return false;
}

// A refusal from another host's agent, passed on with the host named.
inline AgentError forwarded_error(const std::string& host, const AgentCallError& e) {
  const std::string message = "host " + host + ": " + e.what();
  switch (e.grpc_code()) {
    case 3:  // INVALID_ARGUMENT
      return invalid(message);
    case 9:  // FAILED_PRECONDITION
      return refused(message);
    case 4:   // DEADLINE_EXCEEDED
    case 14:  // UNAVAILABLE
      return AgentError(AgentError::Code::kUnavailable, message);
    default:
      return AgentError(AgentError::Code::kInternal, message);
  }
}

struct Agent::ClusterView {
  std::map<std::string, api::Host> hosts;
  std::map<std::string, bool> alive;
  std::map<std::string, api::ClusterVm> vms;
  std::map<std::string, api::Owner> owners;
  std::map<std::string, api::Replica> replicas;  // HA: kept by their passive

  // The VM's record; refused when the cluster has none.
  const api::ClusterVm& vm(const std::string& name) const {
    auto it = vms.find(name);
    if (it == vms.end()) throw refused("no VM named '" + name + "' in the cluster");
    return it->second;
  }
  // Its owner record; refused when it does not run.
  const api::Owner& owner(const std::string& name) const {
    vm(name);
    auto it = owners.find(name);
    if (it == owners.end()) throw refused("VM " + name + " is not running");
    return it->second;
  }
};

template <class Local, class Remote>
auto Agent::on_host(const ClusterView& view, const std::string& host, Local local, Remote remote,
                    std::chrono::milliseconds timeout) -> decltype(local()) {
  if (host == settings_.name) return local();
  auto found = view.hosts.find(host);
  if (found == view.hosts.end()) throw refused("no host named '" + host + "' in the cluster");
  try {
    AgentClient client(host_port(found->second.cluster_address(), kAgentPort), timeout, peer_tls());
    return remote(client);
  } catch (const AgentCallError& e) {
    throw forwarded_error(host, e);
  }
}

}  // namespace keel::cluster
