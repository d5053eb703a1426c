// keel-migbench --ha: the replica's figures beside a live migration's in
// the same run. A switchover run replicates the warmed-up guest to a
// passive keel-vmm, lets it run protected, then switches over: the pause
// seen from outside (beats across both consoles, as for a migration) and
// the one the VMM counts. A failover run replicates the same way, then
// kills the active keel-vmm (SIGKILL) and at once tells the passive to take
// over (detection is the cluster's part, not measured here): the time from
// the kill to the first beat on the passive (total), the longest stretch
// without a beat (outside), the takeover's answer (vmm), and how far the
// guest went back (the beats the passive printed again: rolled back).
// With --net, an echo run measures the guest's network round trip without
// and with the replication (the latency output commit adds).
#pragma once

#include "tools/migbench/migration_peers.h"

namespace keel::migbench {

RunFigures run_keel_switchover(const Workload& workload, int run);
// `frozen`: the active is stopped (SIGSTOP) instead of killed, and the
// passive told to take over once its stream ended by the silence.
RunFigures run_keel_failover(const Workload& workload, int run, bool frozen);
RunFigures run_keel_overhead(const Workload& workload, int run);
// --ha --net: UDP echo round trips one at a time, unprotected, then while
// protected (output commit holds every answer until its epoch's ack).
RunFigures run_keel_echo(const Workload& workload, int run);

}  // namespace keel::migbench
