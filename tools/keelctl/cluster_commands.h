// keelctl's cluster and host commands: the cluster through this host's
// keel-agent (proto/agent.proto).
#pragma once

namespace keel {

// Whether argv's first command word is cluster or host.
bool is_cluster_command(int argc, char** argv);
// Runs it; the exit code (0 done, 1 refused or failed, 2 bad command line,
// 3 the agent cannot be reached, 4 no answer in time).
int run_cluster_command(int argc, char** argv);

extern const char* const kClusterUsage;

}  // namespace keel
