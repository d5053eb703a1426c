// HostVms, high availability (cluster/host_vms.h): the active's keeper
// keeps each of its HA VMs replicated to its passive (keel-vmm's replica
// stream, migration/replica_sender.h); the passive's side, the failover,
// is cluster/host_vm_failover.cpp.
//
// A VM stopped on purpose is not taken over: its keel-vmm ends the
// replication first, and the passive's copy hears so (phase STOPPED).
//
// Disks: a replica's copy of the VM lives in the passive's pool as a VM of
// that name (storage::VmStore::receive_copy); after a failover or a
// switchover the VM is stored there (its record's storage_host), and the
// old active's pool holds a stale copy, replaced when it becomes a passive
// again.
#include <signal.h>
#include <sys/stat.h>

#include <fstream>

#include "cluster/agent_client.h"
#include "cluster/cluster_view.h"
#include "cluster/etcd_records.h"
#include "cluster/host_vms.h"
#include "cluster/vm_placement.h"
#include "common/log.h"
#include "control/control_client.h"
#include "storage/json_record.h"

namespace keel::cluster {

namespace api = keel::agent::v1;
namespace pb = keel::api::v1;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

// Setting up a passive: its copy's files fetched, its keel-vmm listening.
constexpr auto kReplicaSetupTimeout = std::chrono::seconds(120);
// `replicate` answers after the first epoch: all of memory and the disks.
constexpr auto kFirstSyncTimeout = std::chrono::minutes(30);
constexpr auto kProtectRetry = std::chrono::seconds(3);
// A passive's agent must say hello this soon before it is asked to set up
// a copy: a host just gone keeps its alive record for its lease's TTL, and
// a call on the connection to it would wait out kReplicaSetupTimeout.
constexpr auto kPassiveHello = std::chrono::seconds(5);
constexpr auto kVmmAnswer = std::chrono::seconds(2);

bool replicating(pb::ReplicaPhase phase) {
  return phase == pb::REPLICA_PHASE_CONNECTING || phase == pb::REPLICA_PHASE_SYNCING ||
         phase == pb::REPLICA_PHASE_PROTECTED || phase == pb::REPLICA_PHASE_SWITCHING_OVER;
}

}  // namespace

pb::ReplicaInfo HostVms::replica_info(const std::string& name) {
  pb::Request ask;
  ask.mutable_replica_status();
  auto answer = call_vmm(name, ask, kVmmAnswer);
  if (!answer.ok()) throw std::runtime_error(answer.error().message());
  return answer.replica_status();
}

void HostVms::remember_replica(const std::string& name, const std::string& active,
                               uint64_t generation) {
  std::ofstream out(storage::vm_run_dir(name) / "replica", std::ios::trunc);
  out << active << " " << generation << "\n";
}

api::VmReplicaResponse HostVms::replica(const api::VmReplicaRequest& request) {
  const std::string& name = request.name();
  require_store();
  if (context_.fenced()) {
    throw refused("host " + context_.host + " is fenced (its lease is not being renewed)");
  }
  auto etcd = context_.etcd();
  auto vm = read_record<api::ClusterVm>(*etcd, kVmsPrefix + name, nullptr);
  auto owner = read_record<api::Owner>(*etcd, kOwnersPrefix + name, nullptr);
  if (!vm) throw refused("no VM named '" + name + "' in the cluster");
  if (!vm->ha() || vm->ha_passive() != context_.host) {
    throw refused("VM " + name + " does not have its replica on host " + context_.host);
  }
  if (!owner || owner->host() != request.active() || owner->generation() != request.generation()) {
    throw refused("VM " + name + " does not run on host " + request.active() + " at generation " +
                  std::to_string(request.generation()));
  }
  if (vm->storage_host() == context_.host) {
    throw refused("VM " + name + " is stored on host " + context_.host +
                  ": its replica keeps a copy of its disk elsewhere");
  }
  // One replica() or failover of a VM at a time on this host.
  NameHold work(*this, replica_work_, name);
  if (!work.held())
    throw refused("VM " + name + "'s replica on host " + context_.host + " is busy");
  // A copy from an earlier stream (the link broke; the active starts
  // again) goes first; a VM that runs here is never replaced.
  bool earlier = false;
  const auto vmms = running();
  {
    std::lock_guard lock(mutex_);
    earlier = replicas_.count(name) > 0;
    if (starting_.count(name) || incoming_.count(name) ||
        (generations_.count(name) && vmms.count(name) && !earlier)) {
      throw refused("VM " + name + " runs on host " + context_.host);
    }
    // Its keel-vmm here is gone (its end is being handled): not this host's.
    if (!vmms.count(name)) generations_.erase(name);
  }
  if (auto it = vmms.find(name); it != vmms.end()) {
    if (!earlier) throw refused("VM " + name + "'s keel-vmm still runs on host " + context_.host);
    // A copy that ran the guest (a switchover or takeover the records do
    // not show yet) holds the newest state: never replaced.
    const pb::ReplicaPhase phase = replica_info(name).phase();
    if (phase == pb::REPLICA_PHASE_SWITCHED_OVER || phase == pb::REPLICA_PHASE_TAKEN_OVER) {
      throw refused("VM " + name + "'s copy on host " + context_.host + " runs the guest");
    }
    {
      std::lock_guard lock(mutex_);
      replicas_.erase(name);
      retired_pids_.insert(it->second);
    }
    ::kill(it->second, SIGKILL);
    const auto until = Clock::now() + std::chrono::seconds(10);
    while (running().count(name) && Clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (running().count(name)) throw refused("VM " + name + ": its earlier replica does not end");
  }
  // A stale copy from when the VM was stored here, or from an earlier
  // replica: only while the records say the VM is stored and owned
  // elsewhere (read again: this pool's copy may be the only one).
  if (fs::exists(store_->path(name))) {
    auto now = read_record<api::ClusterVm>(*etcd, kVmsPrefix + name, nullptr);
    auto owner_now = read_record<api::Owner>(*etcd, kOwnersPrefix + name, nullptr);
    if (!now || now->storage_host() == context_.host ||
        (owner_now && owner_now->host() == context_.host)) {
      throw refused("VM " + name + " is stored or runs on host " + context_.host + " now");
    }
    store_->remove(name);
  }
  const fs::path scratch = fs::path(context_.vms_dir) / name / ".replica";
  struct Scratch {
    fs::path path;
    ~Scratch() {
      std::error_code ignored;
      fs::remove_all(path, ignored);
    }
  } cleanup{scratch};
  keel::pool::v1::Vm stored;
  download_files(name, address_of(vm->storage_host()), scratch, true, &stored);
  stored.clear_resume_from();  // the copy runs from the stream, never from a file
  store_->receive_copy(stored, scratch);
  storage::VmFiles files = storage::local_vm_files(*store_, stored);
  fs::create_directories(files.memory_root);
  ::chmod(files.memory_root.c_str(), 0700);
  const std::string address = address_of(context_.host);
  const uint16_t port = free_port(address);
  files.replica_of = "tcp:" + host_port(address, port);
  std::vector<std::string> argv{vmm_program()};
  for (auto& a : storage::vmm_arguments(stored, files)) argv.push_back(std::move(a));
  argv.push_back("--fence-file");
  argv.push_back(context_.fence_file);
  {
    std::lock_guard lock(mutex_);
    replicas_[name] = {request.active(), request.generation(), 0};
  }
  try {
    fs::create_directories(storage::vm_run_dir(name));
    remember_replica(name, request.active(), request.generation());
    VmmLaunch launch{name, argv, store_->path(name) / "keel-vmm.log",
                     [port] { return listening(port); }};
    const pid_t pid = supervisor_->start(launch);
    {
      std::lock_guard lock(mutex_);
      auto it = replicas_.find(name);
      if (it == replicas_.end()) throw refused("VM " + name + "'s replica ended at its start");
      it->second.pid = pid;
    }
    api::Replica mark;
    mark.set_host(context_.host);
    mark.set_active(request.active());
    mark.set_generation(request.generation());
    mark.set_since(storage::utc_now());
    etcd->put(kReplicasPrefix + name, to_json(mark), context_.lease());
    log::info("VM " + name + ": keel-vmm " + std::to_string(pid) + " keeps its replica for host " +
              request.active() + ", at " + files.replica_of);
    api::VmReplicaResponse out;
    out.set_address(files.replica_of);
    out.set_pid(static_cast<uint32_t>(pid));
    return out;
  } catch (...) {
    std::lock_guard lock(mutex_);
    replicas_.erase(name);
    throw;
  }
}

void HostVms::keep_protection(const std::string& name) {
  auto etcd = context_.etcd();
  int64_t revision = 0;
  auto vm = read_record<api::ClusterVm>(*etcd, kVmsPrefix + name, &revision);
  if (!vm) return;
  uint64_t generation = 0;
  {
    std::lock_guard lock(mutex_);
    if (protecting_.count(name) || migrating_out_.count(name) || stopping_vms_.count(name)) return;
    auto it = generations_.find(name);
    if (it == generations_.end()) return;
    generation = it->second;
  }
  const pb::ReplicaInfo info = replica_info(name);
  if (info.phase() == pb::REPLICA_PHASE_SWITCHING_OVER ||
      info.phase() == pb::REPLICA_PHASE_SWITCHED_OVER ||
      info.phase() == pb::REPLICA_PHASE_UNCERTAIN) {
    // The passive may run the guest: never a new replica over it.
    return;
  }
  const bool running = info.role() == pb::REPLICA_ROLE_ACTIVE && replicating(info.phase());
  if (info.role() == pb::REPLICA_ROLE_ACTIVE && info.guest_held()) {
    // The stream failed while the passive held a copy: one of the two
    // runs, as etcd decides.
    run_held_guest_on(name, generation, info.error());
    return;
  }
  if (info.role() == pb::REPLICA_ROLE_ACTIVE && !running) {
    // The stream failed and the guest ran on here, unprotected: the
    // passive's copy is stale from now on, and must never be run.
    withdraw_replica_mark(name);
  }
  auto problem = [&](const std::string& why) {
    std::lock_guard lock(mutex_);
    protection_problems_[name] = {why, Clock::now() + kProtectRetry};
  };
  if (!vm->ha()) {
    if (running) {
      stop_replication(name);
      log::info("VM " + name + ": high availability disabled: its replica ends");
    }
    std::lock_guard lock(mutex_);
    protection_problems_.erase(name);
    return;
  }
  if (vm->storage_host() != context_.host) {
    problem("its disk is on host " + vm->storage_host() +
            " (over NBD): a replica copies the disk of a VM that runs on its storage host");
    return;
  }
  // A drained or unhealthy passive keeps no replica, nor one whose agent
  // is gone (its lease expired: the host is dead or cut off, and nobody
  // there could run the copy): another is picked (the copy there ends once
  // the record names another host).
  auto passive_host = vm->ha_passive().empty()
                          ? std::nullopt
                          : read_record<api::Host>(*etcd, kHostsPrefix + vm->ha_passive(), nullptr);
  if (!passive_host || !keeps_no_replica(*passive_host).empty() ||
      !etcd->get(kAlivePrefix + vm->ha_passive())) {
    const std::string passive = pick_passive(*vm);
    if (passive.empty()) return;
    api::ClusterVm next = *vm;
    next.set_ha_passive(passive);
    etcdserverpb::TxnRequest txn;
    *txn.add_compare() = EtcdClient::key_mod_revision(kVmsPrefix + name, revision);
    *txn.add_success() = EtcdClient::put_op(kVmsPrefix + name, to_json(next));
    if (etcd->txn(txn).succeeded()) {
      log::info("VM " + name + ": host " + passive + " keeps its replica from now on");
    }
    return;
  }
  const std::string peer = "tcp:" + address_of(vm->ha_passive()) + ":";
  if (running) {
    // The passive's mark went with its agent's lease: a lease that expired
    // and was granted anew leaves a stream whose copy may never run.
    const auto mark = read_record<api::Replica>(*etcd, kReplicasPrefix + name, nullptr);
    const bool marked = mark && mark->host() == vm->ha_passive();
    if (info.peer().rfind(peer, 0) == 0 && marked) return;
    // The passive changed (the operator enabled HA anew with another), or
    // its mark is gone: a new replica.
    if (!marked) {
      log::warning("VM " + name + ": host " + vm->ha_passive() +
                   "'s replica mark is gone (its lease expired): a new replica is made");
    }
    stop_replication(name);
  }
  {
    std::lock_guard lock(mutex_);
    auto it = protection_problems_.find(name);
    if (it != protection_problems_.end() && it->second.retry_at > Clock::now()) return;
    // Looked at again: a migration, switchover or stop may have begun
    // since the top (protect() looks once more before replicating).
    if (stopping_ || migrating_out_.count(name) || stopping_vms_.count(name)) return;
    const std::string passive = vm->ha_passive();
    protecting_[name] =
        std::thread([this, name, passive, generation] { protect(name, passive, generation); });
  }
}

void HostVms::protect(const std::string& name, const std::string& passive, uint64_t generation) {
  std::string failure;
  try {
    const std::string agent = host_port(address_of(passive), kAgentPort);
    try {
      AgentClient(agent, kPassiveHello, context_.peer_tls()).hello();
    } catch (const std::exception& e) {
      throw std::runtime_error(std::string("no hello from its agent: ") + e.what());
    }
    AgentClient peer(agent, kReplicaSetupTimeout, context_.peer_tls());
    api::VmReplicaRequest request;
    request.set_name(name);
    request.set_active(context_.host);
    request.set_generation(generation);
    auto not_now = [&] {
      std::lock_guard lock(mutex_);
      if (migrating_out_.count(name) || stopping_vms_.count(name)) {
        throw std::runtime_error("the VM is migrating, switching over or stopping");
      }
    };
    not_now();
    const auto at = peer.host_vm_replica(request);
    not_now();
    pb::Request replicate;
    replicate.mutable_replicate()->set_to(at.address());
    auto answer = call_vmm(name, replicate, kFirstSyncTimeout);
    if (!answer.ok()) throw std::runtime_error(answer.error().message());
    log::info("VM " + name + " is protected: host " + passive + " keeps its replica (epoch " +
              std::to_string(answer.replicate().epoch()) + ")");
  } catch (const std::exception& e) {
    failure = "its replication to host " + passive + " failed: " + e.what();
  }
  std::lock_guard lock(mutex_);
  // Said once per new reason: it is tried again every few seconds.
  if (auto it = protection_problems_.find(name);
      !failure.empty() && (it == protection_problems_.end() || it->second.why != failure)) {
    log::warning("VM " + name + ": " + failure);
  }
  if (failure.empty()) {
    protection_problems_.erase(name);
  } else {
    protection_problems_[name] = {failure, Clock::now() + kProtectRetry};
  }
  // Joined by the keeper (or the destructor) once it is done.
  finished_protections_.insert(name);
}

std::string HostVms::pick_passive(const api::ClusterVm& vm) {
  auto etcd = context_.etcd();
  std::map<std::string, uint64_t> used;
  std::map<std::string, api::ClusterVm> vms;
  for (const auto& kv : etcd->list(kVmsPrefix)) {
    api::ClusterVm other;
    if (from_json(kv.value, &other)) vms[other.name()] = other;
  }
  auto count = [&](const std::string& prefix) {
    for (const auto& kv : etcd->list(prefix)) {
      api::Owner owner;  // Owner and Replica both start with the host
      api::Replica replica;
      const std::string vm_name = kv.key.substr(prefix.size());
      std::string host;
      if (prefix == kReplicasPrefix && from_json(kv.value, &replica)) host = replica.host();
      if (prefix == kOwnersPrefix && from_json(kv.value, &owner)) host = owner.host();
      if (auto it = vms.find(vm_name); it != vms.end() && !host.empty()) {
        used[host] += it->second.memory_bytes();
      }
    }
  };
  count(kOwnersPrefix);
  count(kReplicasPrefix);
  std::vector<PlacementCandidate> candidates;
  for (const auto& kv : etcd->list(kHostsPrefix)) {
    api::Host host;
    if (!from_json(kv.value, &host)) continue;
    PlacementCandidate c;
    c.host = host.name();
    c.memory_bytes = host.memory_bytes();
    c.cpus = host.cpus();
    c.memory_used = used[host.name()];
    if (host.name() == context_.host) {
      c.unfit = "it runs the VM";
    } else if (!etcd->get(kAlivePrefix + host.name())) {
      c.unfit = "its agent is not alive";
    } else if (!has_role(host, api::ROLE_COMPUTE)) {
      c.unfit = "not a compute host";
    } else if (host.drained()) {
      c.unfit = "it is drained";
    } else if (!host.unhealthy().empty()) {
      c.unfit = "it is unhealthy (" + host.unhealthy() + ")";
    } else if (host.pool().empty()) {
      c.unfit = "it has no pool for the copy of the disk";
    }
    candidates.push_back(c);
  }
  const Placement placed = place_vm(vm.memory_bytes(), 0, candidates);
  if (placed.host.empty()) {
    std::lock_guard lock(mutex_);
    protection_problems_[vm.name()] = {"no host can keep its replica: " + placed.reason,
                                       Clock::now() + kProtectRetry};
  }
  return placed.host;
}

void HostVms::end_replication(const std::string& name) {
  const auto until = Clock::now() + std::chrono::seconds(20);
  for (;;) {
    const pb::ReplicaInfo info = replica_info(name);
    if (info.role() == pb::REPLICA_ROLE_ACTIVE && info.guest_held()) {
      // Its stream failed (or the passive did not confirm the end): the
      // guest runs on here only if etcd says the passive did not take it.
      std::optional<uint64_t> generation;
      {
        std::lock_guard lock(mutex_);
        if (auto it = generations_.find(name); it != generations_.end()) generation = it->second;
      }
      if (generation && run_held_guest_on(name, *generation, info.error())) continue;
      throw AgentError(AgentError::Code::kFailedPrecondition,
                       "VM " + name +
                           ": its replica stream failed and its passive may have taken it over "
                           "(keelctl vm ha status)");
    }
    if (info.role() != pb::REPLICA_ROLE_ACTIVE || !replicating(info.phase())) return;
    if (Clock::now() > until) {
      throw AgentError(AgentError::Code::kUnavailable,
                       "VM " + name + ": its replication did not end within 20 s");
    }
    stop_replication(name);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

void HostVms::stop_replication(const std::string& name, bool run_held) {
  pb::Request stop;
  stop.mutable_replica_stop()->set_run_held(run_held);
  call_vmm(name, stop, std::chrono::seconds(15));
}

void HostVms::drop_replica(const std::string& name, const std::string& why) {
  std::optional<pid_t> pid;
  {
    std::lock_guard lock(mutex_);
    if (!replicas_.erase(name)) return;
  }
  const auto vmms = running();
  if (auto it = vmms.find(name); it != vmms.end()) {
    pid = it->second;
    std::lock_guard lock(mutex_);
    retired_pids_.insert(*pid);
  }
  std::error_code ignored;
  fs::remove(storage::vm_run_dir(name) / "replica", ignored);
  log::info("VM " + name + ": its replica here goes: " + why);
  if (pid) ::kill(*pid, SIGKILL);
  try {
    auto etcd = context_.etcd();
    auto kv = etcd->get(kReplicasPrefix + name);
    api::Replica mark;
    if (kv && from_json(kv->value, &mark) && mark.host() == context_.host) {
      etcdserverpb::TxnRequest txn;
      *txn.add_compare() = EtcdClient::key_mod_revision(kv->key, kv->mod_revision);
      *txn.add_success() = EtcdClient::delete_op(kv->key);
      etcd->txn(txn);
    }
  } catch (const std::exception& e) {
    log::info("VM " + name +
              ": its replica record stays until this host's lease ends: " + e.what());
  }
}

}  // namespace keel::cluster
