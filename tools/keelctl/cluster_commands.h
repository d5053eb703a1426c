// keelctl's cluster and host commands: the cluster through this host's
// keel-agent (proto/agent.proto).
#pragma once

#include <optional>
#include <string>

#include "storage/vm_store.h"

namespace keel {

// Whether argv's first command word is cluster or host.
bool is_cluster_command(int argc, char** argv);
// Runs it; the exit code (0 done, 1 refused or failed, 2 bad command line,
// 3 the agent cannot be reached, 4 no answer in time).
int run_cluster_command(int argc, char** argv);

extern const char* const kClusterUsage;

namespace cluster {
class AgentCallError;
}
// The agent's socket as a gRPC target ("unix:PATH").
std::string agent_target(const std::string& socket);
// $KEEL_AGENT, else /var/lib/keel/agent/agent.sock.
std::string default_agent();
// Says the agent's refusal on stderr; keelctl's exit code for it.
int exit_of(const std::string& what, const cluster::AgentCallError& e);

// `keelctl vm create|start|stop|list|show|delete` without a pool: the
// cluster's VMs, through the agent (pool_commands parses the line).
struct ClusterVmCommand {
  std::string verb;
  std::string name;
  std::optional<storage::VmSpec> spec;  // create
  std::string storage_host;             // create --storage-host
  std::string host;                     // start --host
  std::string to;                       // migrate --to
  uint32_t downtime_ms = 0;             // migrate --downtime-ms
  uint64_t bandwidth_mbps = 0;          // migrate --bandwidth (0: no cap)
  double timeout_s = 0;                 // stop --timeout (0: the agent's default)
  bool force = false;                   // stop --force
  std::string ha_action;                // ha enable|disable|status|switchover
  std::string passive;                  // ha enable --passive
  bool json = false;
  std::optional<std::string> agent;  // --agent, else $KEEL_AGENT, else the default socket
  double wait_s = 0;                 // --wait (0: 60 s, for a stop the guest's time more)
};
// The exit codes of run_cluster_command.
int run_cluster_vm(const ClusterVmCommand& command);

}  // namespace keel
