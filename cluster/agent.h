// keel-agent's state and operations (one per host): membership of the
// cluster through etcd, the host's lease, quorum. The gRPC service
// (cluster/agent_service.h) calls these; each throws AgentError.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "cluster/agent_error.h"
#include "cluster/cluster_event_log.h"
#include "cluster/cluster_keys.h"
#include "cluster/cluster_tls.h"
#include "cluster/etcd_client.h"
#include "cluster/vm_placement.h"
#include "proto/agent.pb.h"
#include "proto/control.pb.h"

namespace keel::cluster {

class AgentClient;
class EtcdMember;
class HostLease;
class HostVms;

inline constexpr unsigned kMaxHosts = 7;
// A migration's bandwidth cap at most (keel-vmm's Migrate refuses more).
inline constexpr uint64_t kMaxBandwidthMbps = 1000000;

struct AgentSettings {
  std::string name;
  std::string state_dir;           // agent.json and etcd's data
  std::string management_address;  // "unix:PATH": the operators' API (keelctl)
  std::vector<keel::agent::v1::Role> roles;
  std::string pool;  // the storage host's pool (storage/pool.h); empty: none
  // Free space below which the pool is unhealthy (storage/pool_health.h);
  // 0: the default floor.
  uint64_t pool_min_free = 0;
  // Empty: the agent runs its own etcd member. Otherwise "ADDR:PORT" of an
  // etcd the operator runs.
  std::vector<std::string> etcd_endpoints;
  std::string etcd_binary = "etcd";
  int64_t lease_ttl_s = 4;
  // Each etcd call's deadline: an operation without a majority is refused
  // after about this long.
  std::chrono::milliseconds etcd_timeout{2000};
  // "ADDR:PORT" where keel-agent serves Prometheus's /metrics; empty: none.
  std::string metrics_address;
};

// Notes on a cluster of `hosts`: no fault tolerance, an even count.
std::vector<std::string> cluster_notes(size_t hosts);

class Agent {
 public:
  // Loads STATE_DIR/agent.json when there is one and, for a host in a
  // cluster, starts its etcd member and takes its lease.
  explicit Agent(AgentSettings settings);
  ~Agent();
  Agent(const Agent&) = delete;
  Agent& operator=(const Agent&) = delete;

  // Called with the cluster address once the host has one (at start, or by
  // init and join): the API is then served there too, for the other agents.
  void on_cluster_address(std::function<void(const std::string&)> listen);

  keel::agent::v1::HelloResponse hello() const;
  keel::agent::v1::ClusterInitResponse init(const keel::agent::v1::ClusterInitRequest& request);
  keel::agent::v1::ClusterJoinResponse join(const keel::agent::v1::ClusterJoinRequest& request);
  keel::agent::v1::AdmitHostResponse admit(const keel::agent::v1::AdmitHostRequest& request);
  keel::agent::v1::ClusterStatusResponse status();
  keel::agent::v1::ClusterTokenResponse token() const;
  keel::agent::v1::HostRemoveResponse remove_host(const keel::agent::v1::HostRemoveRequest& r);
  keel::agent::v1::HostSetAddressResponse set_address(
      const keel::agent::v1::HostSetAddressRequest& request);
  // keelctl host drain|undrain (cluster/host_drain.cpp).
  keel::agent::v1::HostDrainResponse drain_host(const keel::agent::v1::HostDrainRequest& request);

  // VMs (cluster/cluster_vms.cpp): from any host, forwarded to the one
  // that acts.
  keel::agent::v1::VmCreateResponse vm_create(const keel::agent::v1::VmCreateRequest& request);
  keel::agent::v1::VmStartResponse vm_start(const keel::agent::v1::VmStartRequest& request);
  keel::agent::v1::VmStopResponse vm_stop(const keel::agent::v1::VmStopRequest& request);
  keel::agent::v1::VmListResponse vm_list(const keel::agent::v1::VmListRequest& request);
  keel::agent::v1::VmDeleteResponse vm_delete(const keel::agent::v1::VmDeleteRequest& request);
  keel::agent::v1::VmMigrateResponse vm_migrate(const keel::agent::v1::VmMigrateRequest& request);
  // The forwarded calls: on this host.
  keel::agent::v1::VmCreateResponse host_vm_create(const keel::agent::v1::VmCreateRequest& r);
  keel::agent::v1::VmStartResponse host_vm_start(const keel::agent::v1::VmStartRequest& r);
  keel::agent::v1::VmStopResponse host_vm_stop(const keel::agent::v1::VmStopRequest& r);
  keel::agent::v1::VmDeleteResponse host_vm_delete(const keel::agent::v1::VmDeleteRequest& r);
  keel::agent::v1::VmMigrateResponse host_vm_migrate(const keel::agent::v1::VmMigrateRequest& r);
  keel::agent::v1::VmIncomingResponse host_vm_incoming(const keel::agent::v1::VmIncomingRequest& r);
  keel::agent::v1::VmStatus host_vm_status(const keel::agent::v1::VmStatusRequest& r);
  // High availability (cluster/cluster_ha.cpp): `vm ha enable|disable|
  // status|switchover` from any host; the Host* calls on the active and the
  // passive.
  keel::agent::v1::VmHaResponse vm_ha(const keel::agent::v1::VmHaRequest& request);
  keel::agent::v1::VmHaResponse host_vm_ha(const keel::agent::v1::VmHaRequest& r);
  keel::agent::v1::VmReplicaResponse host_vm_replica(const keel::agent::v1::VmReplicaRequest& r);
  // keelctl vm console (cluster/vm_console_relay.cpp): the caller's end of
  // the call, which returns once the console or the caller ended.
  struct ConsoleStream {
    std::function<bool(keel::agent::v1::VmConsoleRequest&)> read;  // blocks; false: ended
    std::function<bool(const keel::agent::v1::VmConsoleResponse&)> write;
    std::function<bool()> gone;    // the caller went away
    std::function<void()> cancel;  // ends the call: a read blocked returns false
  };
  void vm_console(const ConsoleStream& stream);
  void host_vm_console(const ConsoleStream& stream);
  // `each` is given every chunk; it returns false when the caller went away.
  void host_vm_files(const keel::agent::v1::VmFilesRequest& r,
                     const std::function<bool(const keel::agent::v1::VmFileChunk&)>& each);

  bool fenced() const;
  // keel-agent --metrics' /metrics (cluster/host_metrics.cpp); the same
  // for the other agents, and every host's at once (keelctl top).
  keel::api::v1::MetricsResult metrics();
  keel::agent::v1::HostMetricsResponse host_metrics();
  keel::agent::v1::ClusterMetricsResponse cluster_metrics();
  // keelctl events: the cluster's event log (cluster/cluster_event_log.h).
  void cluster_events(
      const keel::agent::v1::ClusterEventsRequest& request,
      const std::function<bool(const keel::agent::v1::ClusterEventsResponse&)>& each,
      const std::function<bool()>& stop);
  // Into the cluster's event log, from this host.
  void tell(keel::agent::v1::ClusterEvent event);
  // The host's TLS material once it is in a cluster (or joining one).
  std::optional<ClusterTls> tls() const;

 private:
  struct ClusterView;
  ClusterView cluster_view(Read read);
  // A linearizable read, else (no majority) this member's last; `current`
  // says which.
  ClusterView cluster_view_or_last(bool& current);
  void host_vm_console(const keel::agent::v1::VmConsoleRequest& first, const ConsoleStream& stream);
  void relay_to_host(AgentClient& peer, const std::string& host,
                     const keel::agent::v1::VmConsoleRequest& first, const ConsoleStream& stream);
  // The hosts that could run `vm` now, each with why not when it cannot.
  std::vector<PlacementCandidate> run_candidates(const ClusterView& view,
                                                 const keel::agent::v1::ClusterVm& vm) const;
  // `local()` when `host` is this one, else `remote(client of host's agent)`.
  template <class Local, class Remote>
  auto on_host(const ClusterView& view, const std::string& host, Local local, Remote remote,
               std::chrono::milliseconds timeout) -> decltype(local());

  struct Reachability {
    unsigned reachable = 0, members = 0;
    std::vector<std::pair<Member, bool>> each;  // member, answered
    uint64_t leader = 0;
  };

  std::vector<std::string> endpoints() const;
  // How this agent reaches the other agents, and etcd.
  ChannelTls peer_tls() const;
  ChannelTls etcd_tls() const;
  std::shared_ptr<EtcdClient> new_etcd_client(const std::vector<std::string>& endpoints,
                                              std::chrono::milliseconds timeout) const;
  std::string tls_dir() const;
  void set_tls(std::optional<ClusterTls> tls);
  // endpoints(), and the other members' when the agent runs this host's.
  std::vector<std::string> lease_endpoints();
  // The host has a cluster address: the peers' API and the pool's NBD
  // exports are served there.
  void serve_address(const std::string& address);
  // The client of the moment (a copy: it lives as long as the caller uses
  // it); AgentError when the host has none (in no cluster).
  std::shared_ptr<EtcdClient> etcd() const;
  void set_etcd(std::shared_ptr<EtcdClient> client);
  keel::agent::v1::LocalState state() const;
  // agent.json whole, one writer at a time; the lease's ID is kept as it is
  // (remember_lease alone changes it).
  void save_state(keel::agent::v1::LocalState state);
  keel::agent::v1::Host this_host(const std::string& cluster_address) const;
  void start_member(const std::string& initial_cluster, bool new_cluster, const std::string& token,
                    const std::string& address);
  void wait_for_member(std::chrono::milliseconds limit);
  void take_lease();
  // The lease's ID into agent.json, for the next process of this agent.
  void remember_lease();
  void register_until_done();
  void refresh_host_record();
  void require_member() const;
  void refuse_if_in_cluster() const;
  void undo_start();
  Reachability probe();
  // `cause`: what etcd answered; said when a majority seems reachable.
  AgentError no_quorum(const std::string& cause = "");
  // Runs `f`; an etcd that cannot answer becomes "no quorum (k of n ...)".
  template <class F>
  auto with_quorum(F f) -> decltype(f());

  AgentSettings settings_;
  mutable std::mutex mutex_;  // state_ and the members below
  std::mutex membership_;     // one init/join/admit/remove at a time
  std::mutex state_file_;     // agent.json: one writer at a time
  keel::agent::v1::LocalState state_;
  // Ended by ~Agent after vms_ (which tells events) and before the etcd
  // member and client it appends through.
  std::unique_ptr<ClusterEventTeller> events_;
  // When the host's lease fenced it (steady clock, ns; 0: not fenced), for
  // the event told once the lease is renewed.
  std::atomic<int64_t> fenced_since_ns_{0};
  std::unique_ptr<EtcdMember> member_;
  std::shared_ptr<EtcdClient> etcd_;  // etcd(): replaced by init, join, undo_start
  std::unique_ptr<HostLease> lease_;
  std::unique_ptr<HostVms> vms_;  // the VMs this host stores and runs
  std::optional<ClusterTls> tls_;
  std::function<void(const std::string&)> listen_;
  // Set when the host cannot serve its cluster (its address is gone).
  std::string address_problem_;
  // Why the host's pool cannot keep its VMs, as HostVms last found it
  // (the host record's `unhealthy`).
  std::string unhealthy_;
  bool stopping_ = false;
  std::condition_variable stop_;
  std::thread registrar_;
};

template <class F>
auto Agent::with_quorum(F f) -> decltype(f()) {
  try {
    return f();
  } catch (const EtcdError& e) {
    if (e.unavailable()) throw no_quorum(e.what());
    throw AgentError(AgentError::Code::kInternal, e.what());
  }
}

}  // namespace keel::cluster
