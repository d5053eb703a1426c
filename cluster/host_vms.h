// This host's part of the cluster's VMs: the VMs its pool stores (create,
// delete) and the ones it runs (start, stop), each run bound to an owner
// record in etcd (/keel/owners/NAME on the host's lease, with the VM's
// generation). A keeper thread holds the host to what etcd says, once a
// second and after each renewal of the lease:
//   - a VMM that ended gives its owner record up;
//   - a VM still this host's (its owner record, or none while it last ran
//     here at the same generation: the lease had expired meanwhile, and
//     nobody took the VM) is taken again and, when its VMM paused it at
//     the fence, resumed;
//   - a VM that moved (another host, or another generation) has its VMM
//     here killed: its guest was paused since the fence and its state is
//     stale.
// Nothing of this runs while the host is fenced.
#pragma once

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>

#include "cluster/cluster_nbd_catalog.h"
#include "cluster/etcd_client.h"
#include "cluster/vmm_event_relay.h"
#include "cluster/vmm_supervisor.h"
#include "proto/agent.pb.h"
#include "storage/nbd_server.h"
#include "storage/pool_health.h"
#include "storage/vm_runtime.h"
#include "storage/vm_store.h"

namespace keel::cluster {

inline constexpr int kNbdPort = 10809;

struct HostVmsContext {
  std::string host;
  std::string fence_file;  // --fence-file of the VMMs
  // VMs this host runs from another host's pool: their boot files,
  // console and memory snapshots, in NAME/ below.
  std::string vms_dir;
  std::function<std::shared_ptr<EtcdClient>()> etcd;
  std::function<int64_t()> lease;  // the host's lease; 0 while it has none
  std::function<bool()> fenced;
  std::function<ChannelTls()> peer_tls;  // how to reach the other agents
  uint64_t pool_min_free = 0;            // storage/pool_health.h
  // Puts why the pool cannot keep its VMs ("" once it can) into the host's
  // record; throws when etcd cannot be told.
  std::function<void(const std::string&)> report_health;
  // Into the cluster's event log (ClusterEventTeller: never waits).
  std::function<void(keel::agent::v1::ClusterEvent)> tell;
};

class HostVms {
 public:
  // `store`: the host's pool, when it has one.
  HostVms(HostVmsContext context, std::optional<storage::VmStore> store);
  // Stops the keeper; the VMMs run on (a restarted agent adopts them).
  ~HostVms();
  HostVms(const HostVms&) = delete;
  HostVms& operator=(const HostVms&) = delete;

  // Once the host has its lease: adopts the VMMs left running and starts
  // the keeper.
  void begin();

  // In this host's pool, then in etcd (refused when the name is taken
  // there; the pool's VM goes again).
  keel::agent::v1::ClusterVm create(const keel::agent::v1::VmCreateRequest& request);
  // Out of etcd while nobody owns it, then out of the pool.
  void remove(const std::string& name);
  // A VM of this host's pool: `each` gets its settings and boot files in
  // chunks (for the compute host that runs it), and its seed disk when
  // asked (for a replica's copy).
  void send_files(const keel::agent::v1::VmFilesRequest& request,
                  const std::function<bool(const keel::agent::v1::VmFileChunk&)>& each);
  // Exports this pool's VM disks over NBD at ADDR:kNbdPort to their
  // owners (cluster/cluster_nbd_catalog.h); again at a new address.
  void serve_nbd(const std::string& address);

  // Takes the VM (a transaction: no owner, the record as read) and starts
  // its keel-vmm; the owner record goes again when the start fails.
  keel::agent::v1::VmStartResponse start(const std::string& name);
  void stop(const keel::agent::v1::VmStopRequest& request);

  // Live migration (cluster/host_vm_migration.cpp). On the owner: the
  // owner record names the destination too (its disks opened from there as
  // well), the destination starts a keel-vmm --incoming, this host's
  // keel-vmm sends the guest, and the record becomes the destination's
  // (generation + 1, on its lease). On failure the record is this host's
  // alone again.
  keel::agent::v1::VmMigrateResponse migrate(const keel::agent::v1::VmMigrateRequest& request);
  // On the destination: the keel-vmm --incoming, for the VM at the
  // generation its owner has now.
  keel::agent::v1::VmIncomingResponse incoming(const keel::agent::v1::VmIncomingRequest& r);

  // What the VM's keel-vmm here says now.
  keel::agent::v1::VmStatus status(const std::string& name);

  // High availability (cluster/host_vm_replicas.cpp).
  // On the passive: a copy of the VM in this pool (its boot files and seed
  // from the active, an empty disk the stream fills), a keel-vmm
  // --replica-of on the cluster address, and the Replica record on this
  // host's lease.
  keel::agent::v1::VmReplicaResponse replica(const keel::agent::v1::VmReplicaRequest& request);
  // On the active: the replication as its keel-vmm reports it (STATUS), or
  // a switchover to the passive (SWITCHOVER).
  keel::agent::v1::VmHaResponse ha(const keel::agent::v1::VmHaRequest& request);

  // VM name to PID of the keel-vmm processes running here.
  std::map<std::string, pid_t> running() const;

  // Wakes the keeper now (the lease was renewed).
  void poke();

 private:
  void require_store() const;
  struct Prepared {
    keel::pool::v1::Vm vm;
    storage::VmFiles files;
    std::filesystem::path log;
  };
  // What keel-vmm needs to run the VM here: from this host's pool, or
  // fetched from its storage host.
  Prepared prepare(const keel::agent::v1::ClusterVm& record);
  // The owner record for this host with the next generation, in one
  // transaction with the VM's record; the new generation.
  uint64_t claim(const std::string& name);
  // Gives up the owner record if it is still this host's at `generation`.
  bool release(const std::string& name, uint64_t generation);
  void ended(const VmmSupervisor::Ended& end);
  void keep();
  void keep_one(const std::string& name, pid_t pid);
  // Owner records naming this host for VMs no keel-vmm here runs (it ended
  // while nobody watched, or the agent died between claim and start):
  // given up at the generation they have.
  void release_orphans();
  // This host runs the VM at `generation` now (taken again, or after a
  // migration): remembered, and no longer incoming or to be given up.
  void own(const std::string& name, uint64_t generation);
  // The generation a VMM was started at, in its run directory, for the
  // agent that adopts it after a restart.
  static void remember_generation(const std::string& name, uint64_t generation);
  static std::optional<uint64_t> remembered_generation(const std::string& name);
  // A VM migrating here: taken over once its guest runs here, ended when
  // the migration was given up. False: no longer incoming (keep_one goes
  // on as for any VM).
  bool keep_incoming(const std::string& name, pid_t pid,
                     const std::optional<keel::agent::v1::Owner>& owner, int64_t owner_revision,
                     const std::optional<keel::agent::v1::ClusterVm>& vm);
  // Whether no migration of the VM is under way from here and no host
  // holds it as arriving (kIncomingPrefix): a migration that failed, or
  // whose destination went, leaves nothing that may run the guest there.
  bool migration_over(const std::string& name);
  // On the source, for a record still naming a destination once the
  // migration is over (its outcome was unknown): the record becomes this
  // host's alone again; the paused guest waits for the operator.
  void settle_migration(const std::string& name, const keel::agent::v1::Owner& owner,
                        int64_t revision);
  // On the destination: marks the VM as arriving here (kIncomingPrefix, on
  // this host's lease) while its owner record is as read at `revision`;
  // false when it changed.
  bool mark_incoming(const std::string& name, uint64_t generation, int64_t revision);
  // Takes the mark away when it is this host's.
  void drop_incoming(const std::string& name);
  // A VMM adopted after this agent's restart whose VM this host marked as
  // arriving: incoming again, the mark on the current lease.
  bool recall_incoming(const std::string& name);
  // The owner record (as read at `revision`) becomes this host's at the
  // next generation; the new generation, 0 when the record changed.
  uint64_t take_over(const std::string& name, const keel::agent::v1::Owner& owner, int64_t revision,
                     int64_t lease);
  // High availability, by the keeper. On the active, for each VM it owns
  // with HA on: a passive picked when none is set, and the replication
  // started (again) when it does not run.
  void keep_protection(const std::string& name);
  std::string pick_passive(const keel::agent::v1::ClusterVm& vm);
  void protect(const std::string& name, const std::string& passive, uint64_t generation);
  // On the passive, every kReplicaWatchEvery: when the owner record went
  // with the active (its lease expired, or its agent saw its keel-vmm
  // end), the VM is taken over from the last epoch; when another host
  // owns it, the replica goes.
  void watch_replicas();
  void keep_replica(const std::string& name);
  // The replica's copy becomes this host's VM at `generation` (its record
  // taken): owned and no longer a replica in one step.
  void own_copy(const std::string& name, uint64_t generation);
  bool fail_over(const std::string& name, const std::string& active, uint64_t generation);
  void drop_replica(const std::string& name, const std::string& why);
  // Tells the copy to run the guest from its last epoch; false (and the
  // copy ended, so that the keeper gives the record up) when it cannot.
  bool run_copy(const std::string& name, const std::string& active);
  // On the active: the Replica record goes, so that its copy never runs.
  void withdraw_replica_mark(const std::string& name);
  // The active's guest waits after its stream failed (guest_held): while
  // this host still owns the VM at `generation`, the replica's mark goes in
  // one transaction (the passive can no longer take over) and the guest
  // runs on unprotected. False when the passive took the VM first. `why`:
  // the VMM's replica error (replica-status), for the log.
  bool run_held_guest_on(const std::string& name, uint64_t generation, const std::string& why);
  // ha() for a switchover this host asks of itself: `why` goes into the
  // VM's last event.
  keel::agent::v1::VmHaResponse ha_switchover(const keel::agent::v1::VmHaRequest& request,
                                              const std::string& why);
  // The pool's health, by the keeper (cluster/host_vm_health.cpp): said in
  // the host's record; while it is unhealthy, the highly available VMs
  // this host runs are switched over to their passives.
  void keep_health();
  void hand_over(const std::vector<std::string>& names, const std::string& why);
  // Ends the VM's replication from here (the passive is told).
  // `run_held`: a guest held after its replication failed runs on (only
  // once etcd said the VM is still this host's); else such a stop is
  // refused, so that one meant for a replication that failed meanwhile
  // never runs a guest its passive may run.
  static void stop_replication(const std::string& name, bool run_held = false);
  // Ends the VM's replication (if any) and waits until it has; the caller
  // holds the name in stopping_vms_, so no protection starts another.
  void end_replication(const std::string& name);
  // Holds a VM's name in one of the sets below (migrating_out_,
  // stopping_vms_, replica_work_) while it lives: one such operation per VM at a time;
  // held() false when another holds it.
  class NameHold {
   public:
    NameHold(HostVms& vms, std::set<std::string>& names, const std::string& name);
    ~NameHold();
    NameHold(const NameHold&) = delete;
    NameHold& operator=(const NameHold&) = delete;
    bool held() const { return held_; }

   private:
    HostVms& vms_;
    std::set<std::string>& names_;
    std::string name_;
    bool held_ = false;
  };
  // What the VM's keel-vmm here says of its replication.
  static keel::api::v1::ReplicaInfo replica_info(const std::string& name);
  // A keel-vmm adopted after this agent's restart that keeps a replica (its
  // run directory says for whom): watched as one again.
  bool recall_replica(const std::string& name);
  static void remember_replica(const std::string& name, const std::string& active,
                               uint64_t generation);
  // The VM's settings and boot files (and its seed disk when `seed`) from
  // its storage host into `into` (made anew); the files that came whole.
  std::set<std::string> download_files(const std::string& name, const std::string& storage_address,
                                       const std::filesystem::path& into, bool seed,
                                       keel::pool::v1::Vm* vm);
  // VM name to its owner's cluster address, from etcd.
  ClusterNbdCatalog::Holders owner_addresses();
  std::string address_of(const std::string& host);
  // The VM's files fetched from its storage host into vms_dir/NAME; where
  // keel-vmm finds them.
  storage::VmFiles fetch_files(const std::string& name, const std::string& storage_address,
                               keel::pool::v1::Vm* vm);

  HostVmsContext context_;
  std::optional<storage::VmStore> store_;
  mutable std::mutex mutex_;
  std::map<std::string, uint64_t> generations_;  // of the VMs this host runs
  std::map<std::string, uint64_t> to_release_;   // ended, owner record not yet given up
  std::set<std::string> starting_;
  std::map<std::string, uint64_t> incoming_;  // migrating here, from that generation
  std::set<std::string> migrating_out_;
  // VMs `vm stop` is stopping: no protection starts for them meanwhile
  // (apart from migrating_out_, which a VMM's end reads as "moved away").
  std::set<std::string> stopping_vms_;
  // Replicas this host keeps: VM name to its active and the owner
  // generation it was started for.
  struct HeldReplica {
    std::string active;
    uint64_t generation = 0;
    pid_t pid = 0;  // 0 while its keel-vmm starts
  };
  std::map<std::string, HeldReplica> replicas_;
  // The replica watch's last failed look at each replica (its thread's
  // alone): said once per new reason.
  std::map<std::string, std::string> look_errors_;
  // keel-vmm processes ended on purpose (an earlier copy replaced): their
  // end says nothing about the replica that followed.
  std::set<pid_t> retired_pids_;
  // VMs whose replica is being made or taken over here (one at a time).
  std::set<std::string> replica_work_;
  // Protections being started from here (a `replicate` waits for the
  // first epoch), and why the last one failed, with when to try again.
  std::map<std::string, std::thread> protecting_;
  std::set<std::string> finished_protections_;
  struct ProtectionProblem {
    std::string why;
    std::chrono::steady_clock::time_point retry_at;
  };
  std::map<std::string, ProtectionProblem> protection_problems_;
  std::optional<storage::PoolHealth> health_;
  std::string reported_unhealthy_;  // the kind of problem the host's record says
  bool unhealthy_now_ = false;      // as the keeper last found

  // Switchovers away from an unhealthy pool, one VM after another; why the
  // last one of a VM failed, and when to try it again.
  std::thread handover_;
  bool handover_done_ = false;
  std::map<std::string, ProtectionProblem> handover_problems_;
  bool stopping_ = false;
  bool poked_ = false;
  std::condition_variable wake_;
  std::unique_ptr<VmmSupervisor> supervisor_;
  // The VMMs' own events into the cluster's log, started by the keeper.
  std::unique_ptr<VmmEventRelay> relay_;
  std::shared_ptr<ClusterNbdCatalog> catalog_;
  std::unique_ptr<storage::NbdServer> nbd_;
  std::thread nbd_thread_;
  std::thread keeper_;
  std::thread replica_watch_;
};

}  // namespace keel::cluster
