// keelctl events without --socket: the cluster's event log (hosts joined,
// drained, removed; VMs started, stopped, migrated, failed over), from any
// host's agent, a line each for people or a JSON object per line.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace keel {

// The events after `since` (none: the oldest kept); with `follow`, then
// each new one as it is logged, until keelctl is interrupted or the agent
// ends the stream. `agent`: the agent's gRPC target.
int print_cluster_events(const std::string& agent, bool json, bool follow,
                         std::optional<uint64_t> since);

}  // namespace keel
