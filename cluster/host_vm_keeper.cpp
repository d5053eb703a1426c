// HostVms' keeper: holds this host to what etcd says about the VMs it
// runs (cluster/host_vms.h), once a second and after each renewal of the
// lease.
#include <signal.h>

#include <fstream>

#include "cluster/cluster_event_log.h"
#include "cluster/etcd_records.h"
#include "cluster/host_vms.h"
#include "common/log.h"
#include "control/control_client.h"
#include "storage/vm_runtime.h"

namespace keel::cluster {

namespace api = keel::agent::v1;

namespace {

constexpr auto kKeepEvery = std::chrono::seconds(1);

}  // namespace

void HostVms::begin() {
  std::lock_guard lock(mutex_);
  if (keeper_.joinable()) return;
  keeper_ = std::thread([this] {
    try {
      for (const auto& vm : supervisor_->adopt_running()) {
        log::info("VM " + vm + ": its keel-vmm runs on; watched again");
      }
    } catch (const std::exception& e) {
      log::error(std::string("cannot adopt the VMMs left running: ") + e.what());
    }
    keep();
  });
  replica_watch_ = std::thread([this] { watch_replicas(); });
}

void HostVms::poke() {
  {
    std::lock_guard lock(mutex_);
    poked_ = true;
  }
  wake_.notify_all();
}

void HostVms::ended(const VmmSupervisor::Ended& end) {
  log::info("VM " + end.vm + ": keel-vmm " + std::to_string(end.pid) + " ended" +
            (end.last_words.empty() ? "" : ": " + end.last_words));
  uint64_t generation = 0;
  bool replica = false;
  bool stopped_on_purpose = false;
  {
    std::lock_guard lock(mutex_);
    // An earlier copy ended on purpose says nothing about what followed
    // it (a PID may come again: only a replica's end is skipped so).
    const bool retired = retired_pids_.erase(end.pid) > 0;
    auto it = replicas_.find(end.vm);
    replica =
        it != replicas_.end() && (it->second.pid == end.pid || (it->second.pid == 0 && !retired));
    if (retired && !replica && !generations_.count(end.vm)) return;
  }
  if (replica) {
    // Its stream ended (the active stopped it), or it was ended.
    drop_replica(end.vm, "its keel-vmm ended");
    return;
  }
  {
    std::lock_guard lock(mutex_);
    incoming_.erase(end.vm);
    // Migrated away: the migration hands the owner record over.
    if (migrating_out_.count(end.vm)) return;
    // Not known (adopted and ended before the keeper looked, or ended by
    // the keeper): the keeper's look for owner records without a VMM here
    // gives it up at the generation it has.
    auto it = generations_.find(end.vm);
    if (it == generations_.end()) return;
    generation = it->second;
    generations_.erase(it);
    to_release_[end.vm] = generation;
    // A stop through the agent tells its own event.
    stopped_on_purpose = stopping_vms_.count(end.vm) > 0;
  }
  if (!stopped_on_purpose) {
    context_.tell(cluster_event(api::CLUSTER_EVENT_VM_ENDED, end.vm,
                                "VM " + end.vm + "'s keel-vmm ended on host " + context_.host +
                                    (end.last_words.empty() ? "" : ": " + end.last_words)));
  }
  poke();
}

void HostVms::keep() {
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    wake_.wait_for(lock, kKeepEvery, [this] { return stopping_ || poked_; });
    if (stopping_) return;
    poked_ = false;
    for (const auto& name : finished_protections_) {
      if (auto it = protecting_.find(name); it != protecting_.end()) {
        it->second.join();
        protecting_.erase(it);
      }
    }
    finished_protections_.clear();
    auto releases = to_release_;
    auto catalog = catalog_;
    lock.unlock();
    // First: a VMM that ended gives its record up at once (an HA VM's
    // passive takes over as soon as it is gone).
    if (!context_.fenced() && context_.lease() != 0) {
      for (const auto& [name, generation] : releases) {
        try {
          if (release(name, generation)) {
            std::lock_guard relock(mutex_);
            if (to_release_[name] == generation) to_release_.erase(name);
          }
        } catch (const std::exception& e) {
          log::info("VM " + name + ": owner record not given up yet: " + e.what());
        }
      }
    }
    if (catalog) {
      try {
        catalog->update(owner_addresses());
      } catch (const std::exception& e) {
        log::info(std::string("nbd: the VMs' owners not read: ") + e.what());
      }
    }
    if (!context_.fenced() && context_.lease() != 0) {
      try {
        release_orphans();
      } catch (const std::exception& e) {
        log::info(std::string("owner records without a VMM not looked at: ") + e.what());
      }
      try {
        keep_health();
      } catch (const std::exception& e) {
        log::warning(std::string("the pool's health not looked at: ") + e.what());
      }
      for (const auto& [name, pid] : running()) {
        {
          std::lock_guard relock(mutex_);
          if (starting_.count(name) || replicas_.count(name)) continue;
        }
        try {
          if (recall_replica(name)) continue;
          relay_->relay(name);
          keep_one(name, pid);
          bool owned = false;
          {
            std::lock_guard relock(mutex_);
            owned = generations_.count(name) > 0;
          }
          if (owned) keep_protection(name);
        } catch (const std::exception& e) {
          log::info("VM " + name + ": " + e.what());
        }
      }
    }
    lock.lock();
  }
}

void HostVms::release_orphans() {
  for (const auto& kv : context_.etcd()->list(kOwnersPrefix)) {
    api::Owner owner;
    if (!from_json(kv.value, &owner) || owner.host() != context_.host) continue;
    const std::string name = kv.key.substr(kOwnersPrefix.size());
    // Looked at after the record was read: a start that made it is still
    // starting, or its VMM is watched by now.
    {
      std::lock_guard lock(mutex_);
      if (starting_.count(name) || incoming_.count(name) || migrating_out_.count(name)) continue;
    }
    if (running().count(name)) continue;
    // release() reads the record again and takes only this generation: a
    // start meanwhile makes the next one.
    if (release(name, owner.generation())) {
      log::info("VM " + name + ": owner record (generation " + std::to_string(owner.generation()) +
                ") given up: no keel-vmm runs it here");
    }
  }
  // Arrival marks of migrations here whose keel-vmm ended.
  for (const auto& kv : context_.etcd()->list(kIncomingPrefix)) {
    api::Owner mark;
    if (!from_json(kv.value, &mark) || mark.host() != context_.host) continue;
    const std::string name = kv.key.substr(kIncomingPrefix.size());
    {
      std::lock_guard lock(mutex_);
      if (incoming_.count(name)) continue;
    }
    if (running().count(name)) continue;
    drop_incoming(name);
    log::info("VM " + name + ": its arrival mark given up: no keel-vmm receives it here");
  }
}

bool HostVms::recall_replica(const std::string& name) {
  std::ifstream in(storage::vm_run_dir(name) / "replica");
  HeldReplica held;
  if (!(in >> held.active >> held.generation)) return false;
  // Only while its keel-vmm is a replica's (the file may be older).
  if (replica_info(name).role() != keel::api::v1::REPLICA_ROLE_PASSIVE) return false;
  if (auto pid = supervisor_->running(); pid.count(name)) held.pid = pid.at(name);
  {
    std::lock_guard lock(mutex_);
    if (generations_.count(name)) return false;
    replicas_[name] = held;
  }
  // Its record, on this agent's lease now (the last one may have lapsed).
  auto etcd = context_.etcd();
  if (auto kv = etcd->get(kReplicasPrefix + name); kv && kv->lease != context_.lease()) {
    api::Replica mark;
    if (from_json(kv->value, &mark) && mark.host() == context_.host) {
      etcdserverpb::TxnRequest txn;
      *txn.add_compare() = EtcdClient::key_mod_revision(kv->key, kv->mod_revision);
      *txn.add_success() = EtcdClient::put_op(kv->key, kv->value, context_.lease());
      etcd->txn(txn);
    }
  }
  log::info("VM " + name + ": the replica its keel-vmm keeps for host " + held.active +
            " is watched again");
  return true;
}

void HostVms::own(const std::string& name, uint64_t generation) {
  remember_generation(name, generation);
  std::lock_guard lock(mutex_);
  incoming_.erase(name);
  to_release_.erase(name);
  generations_[name] = generation;
}

void HostVms::remember_generation(const std::string& name, uint64_t generation) {
  std::ofstream out(storage::vm_run_dir(name) / "generation", std::ios::trunc);
  out << generation << "\n";
}

std::optional<uint64_t> HostVms::remembered_generation(const std::string& name) {
  std::ifstream in(storage::vm_run_dir(name) / "generation");
  uint64_t generation = 0;
  if (in >> generation && generation != 0) return generation;
  return std::nullopt;
}

void HostVms::keep_one(const std::string& name, pid_t pid) {
  auto etcd = context_.etcd();
  std::optional<uint64_t> mine;
  {
    std::lock_guard lock(mutex_);
    if (auto it = generations_.find(name); it != generations_.end()) mine = it->second;
  }
  // Adopted after this agent's restart: the generation it was started at.
  if (!mine) mine = remembered_generation(name);
  int64_t owner_revision = 0;
  auto owner = read_record<api::Owner>(*etcd, kOwnersPrefix + name, &owner_revision);
  auto vm = read_record<api::ClusterVm>(*etcd, kVmsPrefix + name, nullptr);
  bool incoming = false;
  bool known = false;
  {
    std::lock_guard lock(mutex_);
    incoming = incoming_.count(name) > 0;
    known = generations_.count(name) > 0;
  }
  // Adopted after this agent's restart, in the middle of a migration here.
  if (!incoming && !known) incoming = recall_incoming(name);
  if (incoming || (owner && owner->migrating_to() == context_.host)) {
    if (keep_incoming(name, pid, owner, owner_revision, vm)) return;
  }
  std::string moved;
  if (owner) {
    if (owner->host() == context_.host && (!mine || *mine == owner->generation())) {
      if (!mine) remember_generation(name, owner->generation());
      {
        std::lock_guard lock(mutex_);
        generations_[name] = owner->generation();
      }
      if (!owner->migrating_to().empty()) settle_migration(name, *owner, owner_revision);
    } else {
      moved = "it runs on host " + owner->host() + " (generation " +
              std::to_string(owner->generation()) + ")";
    }
  } else if (!vm) {
    moved = "it is no longer in the cluster";
  } else if (vm->last_host() == context_.host && (!mine || *mine == vm->generation())) {
    // The lease had expired and nobody took the VM: this host takes it again.
    const uint64_t generation = claim(name);
    own(name, generation);
    log::info("VM " + name + " is this host's again (generation " + std::to_string(generation) +
              ")");
  } else {
    moved = "it moved to host " + vm->last_host() + " (generation " +
            std::to_string(vm->generation()) + ")";
  }
  if (!moved.empty()) {
    {
      std::lock_guard lock(mutex_);
      generations_.erase(name);
    }
    log::warning("VM " + name + ": " + moved + ": its paused keel-vmm " + std::to_string(pid) +
                 " here is ended, its state discarded");
    ::kill(pid, SIGKILL);
    return;
  }
  keel::api::v1::Request status;
  status.mutable_status();
  auto answer = call_vmm(name, status, std::chrono::seconds(2));
  if (answer.ok() && answer.status().paused_by_fence() && !answer.status().fenced()) {
    keel::api::v1::Request resume;
    resume.mutable_resume();
    auto resumed = call_vmm(name, resume, std::chrono::seconds(5));
    if (resumed.ok()) {
      log::info("VM " + name + " resumed: still this host's after the fence");
    } else {
      log::warning("VM " + name + ": not resumed: " + resumed.error().message());
    }
  }
}

}  // namespace keel::cluster
