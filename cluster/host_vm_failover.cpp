// HostVms, the failover (cluster/host_vms.h): the passive's watch takes an
// HA VM over from the last acknowledged epoch, and the active's agent
// settles a guest held after its stream failed.
//
// Why the two copies never run at once: the passive lets its copy run only
// after it took the owner record in a transaction, and only when the
// active's guest surely no longer runs: the record is gone (the active's
// lease expired, its VMMs paused at the fence before that,
// cluster/host_lease.h; or the active's agent saw its keel-vmm end), or
// the active's stream has been silent past its run permit and margin
// (migration/run_permit.h: its guest waits by then). A copy whose stream
// merely broke (FAILED) waits for one of those; one whose stream still
// looks healthy (PROTECTED: a host that died mid-stream sends nothing more)
// only once the active's lease is gone too. On the active, a guest held
// after its stream failed runs on only after a transaction that withdraws
// the replica record while the owner record is still this host's: the
// passive's transaction compares both, so exactly one of them wins.
#include <signal.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <stdexcept>
#include <thread>

#include "cluster/cluster_event_log.h"
#include "cluster/etcd_records.h"
#include "cluster/host_vms.h"
#include "common/log.h"
#include "control/control_client.h"
#include "storage/json_record.h"

namespace keel::cluster {

namespace api = keel::agent::v1;
namespace pb = keel::api::v1;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

// How often a passive looks at its active's owner record: the failover's
// detection once the record went.
constexpr auto kReplicaWatchEvery = std::chrono::milliseconds(20);
// Of those looks, one in this many at this host's own guests (100 ms).
constexpr unsigned kHeldLookEvery = 5;
constexpr auto kHeldLookAnswer = std::chrono::milliseconds(200);
// A takeover refused because this host is fenced is tried again this long
// (the lease renewed in time lifts the fence).
constexpr auto kFencedTakeoverWait = std::chrono::seconds(10);
// A copy that a switchover's Go set running while the active's owner
// record stayed: the active's agent hands the record over once its VMM
// heard the copy run (the VMM waits 10 s for that); after this long the
// copy's agent takes it itself.
constexpr uint32_t kUnconfirmedSwitchoverMs = 15000;

}  // namespace

void HostVms::watch_replicas() {
  std::unique_lock lock(mutex_);
  for (unsigned pass = 0; !stopping_; ++pass) {
    wake_.wait_for(lock, kReplicaWatchEvery, [this] { return stopping_; });
    if (stopping_) return;
    std::vector<std::string> names;
    for (const auto& [name, held] : replicas_) names.push_back(name);
    // Every fifth look, the guests this host runs: one whose stream
    // failed waits for etcd's word (the keeper's look comes once a second).
    std::map<std::string, uint64_t> owned;
    if (pass % kHeldLookEvery == 0) {
      for (const auto& [name, generation] : generations_) {
        if (!stopping_vms_.count(name) && !migrating_out_.count(name) && !starting_.count(name))
          owned[name] = generation;
      }
    }
    lock.unlock();
    if (!context_.fenced() && context_.lease() != 0) {
      for (const auto& name : names) {
        try {
          keep_replica(name);
          look_errors_.erase(name);
        } catch (const std::exception& e) {
          // Said once per new reason: a replica's keel-vmm that is still
          // starting fails every look (50 a second) until its socket is up.
          std::string& last = look_errors_[name];
          if (last != e.what())
            log::info("VM " + name + ": its replica not looked at: " + e.what());
          last = e.what();
        }
      }
      std::erase_if(look_errors_, [&](const auto& e) {
        return std::find(names.begin(), names.end(), e.first) == names.end();
      });
      for (const auto& [name, generation] : owned) {
        try {
          // Briefly: a VMM slow to answer must not hold up the failovers
          // above (the keeper looks again, with patience).
          pb::Request ask;
          ask.mutable_replica_status();
          const pb::Response answer = call_vmm(name, ask, kHeldLookAnswer);
          if (answer.ok() && answer.replica_status().role() == pb::REPLICA_ROLE_ACTIVE &&
              answer.replica_status().guest_held()) {
            run_held_guest_on(name, generation, answer.replica_status().error());
          }
        } catch (const std::exception& e) {
          log::debug("VM " + name + ": its held guest not looked at: " + e.what());
        }
      }
    }
    lock.lock();
  }
}

void HostVms::own_copy(const std::string& name, uint64_t generation) {
  // Owned in the same step as it stops being a replica: the keeper must
  // never find the copy's keel-vmm as neither (it would compare the owner
  // record with the generation file this host last ran the VM at, take the
  // VM for moved, and end the copy that has just taken it over).
  remember_generation(name, generation);
  {
    std::lock_guard lock(mutex_);
    replicas_.erase(name);
    incoming_.erase(name);
    to_release_.erase(name);
    generations_[name] = generation;
  }
  std::error_code ignored;
  fs::remove(storage::vm_run_dir(name) / "replica", ignored);
}

void HostVms::keep_replica(const std::string& name) {
  HeldReplica held;
  {
    std::lock_guard lock(mutex_);
    auto it = replicas_.find(name);
    if (it == replicas_.end()) return;
    held = it->second;
  }
  auto etcd = context_.etcd();
  auto owner = read_record<api::Owner>(*etcd, kOwnersPrefix + name, nullptr);
  if (!owner) {
    fail_over(name, held.active, held.generation);
    return;
  }
  if (owner->host() == held.active) {
    if (!owner->migrating_to().empty()) return;
    if (owner->generation() == held.generation) {
      // The active's host holds the VM yet, but its stream went silent
      // past the active's run permit: its guest waits there (or its host
      // is gone), so the copy runs here; etcd decides against the active's
      // agent letting its guest run on.
      // Or a switchover's Go set the copy running, and the active's agent
      // never handed the record over (stopped, or its VMM never heard the
      // copy run and waits paused, uncertain): the record follows the
      // guest.
      const pb::ReplicaPhase phase = replica_info(name).phase();
      if (phase == pb::REPLICA_PHASE_FAILED || phase == pb::REPLICA_PHASE_TAKEN_OVER)
        fail_over(name, held.active, held.generation);
      return;
    }
    // The active took the VM again after its fence (the next generation):
    // the same guest while its stream still runs; else the copy is stale.
    if (replica_info(name).phase() != pb::REPLICA_PHASE_PROTECTED) {
      drop_replica(name, "its active took the VM again at generation " +
                             std::to_string(owner->generation()) + " without it");
      return;
    }
    std::lock_guard lock(mutex_);
    if (auto it = replicas_.find(name); it != replicas_.end()) {
      it->second.generation = owner->generation();
    }
    return;
  }
  if (owner->host() == context_.host) {
    // A switchover brought the guest here and the old active handed the
    // record over; or this agent took it over and ended before its copy
    // was told to run.
    const pb::ReplicaPhase phase = replica_info(name).phase();
    own_copy(name, owner->generation());
    if (phase == pb::REPLICA_PHASE_PROTECTED || phase == pb::REPLICA_PHASE_FAILED) {
      run_copy(name, held.active);
      return;
    }
    log::info("VM " + name + " is this host's after its switchover (generation " +
              std::to_string(owner->generation()) + ")");
    return;
  }
  drop_replica(name, "it runs on host " + owner->host() + " now");
}

bool HostVms::fail_over(const std::string& name, const std::string& active, uint64_t generation) {
  NameHold work(*this, replica_work_, name);
  if (!work.held()) return false;  // a replica() under way: looked at again next time
  auto etcd = context_.etcd();
  const auto began = Clock::now();
  const pb::ReplicaInfo info = replica_info(name);
  int64_t owner_revision = 0;
  auto owner = read_record<api::Owner>(*etcd, kOwnersPrefix + name, &owner_revision);
  // The copy runs the guest already (a switchover's Go): the active's
  // guest stays paused after sending it, whatever becomes of its host.
  const bool copy_runs = info.phase() == pb::REPLICA_PHASE_TAKEN_OVER;
  if (owner) {
    // Its host holds the VM: only after a silence past the active's run
    // permit (a stream that merely broke may leave its guest running
    // until then), or one past the active's handover of a switchover, and
    // at the generation the replica was made for.
    const bool silent = info.phase() == pb::REPLICA_PHASE_FAILED && info.takeover_after_ms() != 0 &&
                        info.silent_ms() >= info.takeover_after_ms();
    const bool unconfirmed = copy_runs && info.silent_ms() >= kUnconfirmedSwitchoverMs;
    if (owner->host() != active || owner->generation() != generation ||
        !owner->migrating_to().empty() || !(silent || unconfirmed)) {
      return false;
    }
  }
  // Read only when the stream has not said already that the active is gone.
  const bool active_alive = info.phase() != pb::REPLICA_PHASE_FAILED &&
                            info.phase() != pb::REPLICA_PHASE_SWITCHED_OVER && !copy_runs &&
                            etcd->get(kAlivePrefix + active).has_value();
  switch (info.phase()) {
    case pb::REPLICA_PHASE_STOPPED:
      drop_replica(name, "its active ended the replication (the VM was stopped there)");
      return false;
    case pb::REPLICA_PHASE_PROTECTED:
      // The stream's verdict is not in yet; a dead host's never comes.
      if (active_alive) return false;
      break;
    case pb::REPLICA_PHASE_FAILED:
    case pb::REPLICA_PHASE_SWITCHED_OVER:
    case pb::REPLICA_PHASE_TAKEN_OVER:
      break;
    default:
      if (active_alive) return false;
      drop_replica(name, "its active went before the first epoch was copied: nothing to take over");
      return false;
  }
  // A copy that runs the guest is never dropped here: it may be the only
  // one (the operator settles what the records no longer allow). Thrown:
  // the watch says it once, not at every look.
  auto refuse_running = [](const std::string& why) {
    throw std::runtime_error("its copy here runs the guest since a switchover, but " + why +
                             ": the owner record is not taken (keelctl vm ha status)");
  };
  int64_t vm_revision = 0;
  auto vm = read_record<api::ClusterVm>(*etcd, kVmsPrefix + name, &vm_revision);
  if (!vm || vm->last_host() != active || vm->generation() != generation || !vm->ha() ||
      vm->ha_passive() != context_.host) {
    if (copy_runs) refuse_running("its records changed since");
    drop_replica(name, !vm                         ? "it was deleted"
                       : vm->last_host() != active ? "it ran on host " + vm->last_host() + " since"
                       : vm->generation() != generation
                           ? "it was started again since (generation " +
                                 std::to_string(vm->generation()) + ")"
                           : "it is no longer protected by this host");
    return false;
  }
  // This host's mark: the active withdraws it once its guest ran on
  // without the copy (the stream failed), so a stale copy never runs.
  auto mark = etcd->get(kReplicasPrefix + name);
  api::Replica replica;
  if (!mark || !from_json(mark->value, &replica) || replica.host() != context_.host) {
    if (copy_runs) refuse_running("its replica record is gone");
    drop_replica(name, "its replica record is gone: the copy is stale");
    return false;
  }
  const bool switched = info.phase() == pb::REPLICA_PHASE_SWITCHED_OVER || copy_runs;
  api::Owner next;
  next.set_host(context_.host);
  next.set_generation(vm->generation() + 1);
  next.set_since(storage::utc_now());
  api::ClusterVm record = *vm;
  record.set_generation(next.generation());
  record.set_last_host(context_.host);
  record.set_storage_host(context_.host);
  record.set_ha_passive("");
  record.set_ha_last_event((switched ? "switched over" : "failed over") + std::string(" from ") +
                           active + " to " + context_.host + " at " + next.since() + " (epoch " +
                           std::to_string(info.epoch()) + ")");
  etcdserverpb::TxnRequest txn;
  *txn.add_compare() = owner ? EtcdClient::key_mod_revision(kOwnersPrefix + name, owner_revision)
                             : EtcdClient::key_absent(kOwnersPrefix + name);
  *txn.add_compare() = EtcdClient::key_mod_revision(kVmsPrefix + name, vm_revision);
  *txn.add_compare() = EtcdClient::key_mod_revision(kReplicasPrefix + name, mark->mod_revision);
  // A live migration's destination holds the VM while the mark stands.
  *txn.add_compare() = EtcdClient::key_absent(kIncomingPrefix + name);
  *txn.add_success() = EtcdClient::put_op(kOwnersPrefix + name, to_json(next), context_.lease());
  *txn.add_success() = EtcdClient::put_op(kVmsPrefix + name, to_json(record));
  *txn.add_success() = EtcdClient::delete_op(kReplicasPrefix + name);
  if (!etcd->txn(txn).succeeded()) return false;
  own_copy(name, next.generation());
  const auto taken = Clock::now();
  if (!switched && !run_copy(name, active)) return false;
  // Where a failover's time goes: the stream's silence (the detection),
  // etcd (the record taken), the copy's takeover.
  auto ms = [](Clock::duration d) {
    return std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(d).count());
  };
  log::info("VM " + name + " " + record.ha_last_event() + "; generation " +
            std::to_string(next.generation()) + " (the replica was made at " +
            std::to_string(generation) + ")" +
            (info.phase() == pb::REPLICA_PHASE_PROTECTED ? "; its active host is gone"
             : owner ? "; its active was silent for " + std::to_string(info.silent_ms()) + " ms"
                     : "") +
            "; etcd took " + ms(taken - began) + " ms, the takeover " + ms(Clock::now() - taken) +
            " ms");
  auto told = cluster_event(
      switched ? api::CLUSTER_EVENT_VM_SWITCHED_OVER : api::CLUSTER_EVENT_VM_FAILED_OVER, name,
      "VM " + name + " " + record.ha_last_event() +
          (!switched && info.phase() == pb::REPLICA_PHASE_PROTECTED ? ": host " + active + " lost"
                                                                    : ""));
  told.set_peer(active);
  told.set_duration_us(static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - began).count()));
  context_.tell(std::move(told));
  return true;
}

bool HostVms::run_copy(const std::string& name, const std::string& active) {
  pb::Request takeover;
  takeover.mutable_takeover();
  std::string failure;
  // Whether the owner record still names this host at the generation it
  // took (unknown, while etcd does not answer: looked at again).
  auto still_ours = [&] {
    uint64_t generation = 0;
    {
      std::lock_guard lock(mutex_);
      auto it = generations_.find(name);
      if (it == generations_.end()) return false;
      generation = it->second;
    }
    try {
      auto owner = read_record<api::Owner>(*context_.etcd(), kOwnersPrefix + name, nullptr);
      return owner && owner->host() == context_.host && owner->generation() == generation;
    } catch (const std::exception&) {
      return true;
    }
  };
  const auto until = Clock::now() + kFencedTakeoverWait;
  for (;;) {
    try {
      auto answer = call_vmm(name, takeover, std::chrono::seconds(30));
      if (answer.ok()) return true;
      failure = answer.error().message();
    } catch (const std::exception& e) {
      failure = e.what();
    }
    // This host fenced itself for a moment (an etcd election after the
    // active's host died can outlast the lease's margin in a slow host):
    // the copy runs once the lease is confirmed again, while the record
    // still names this host. Its keel-vmm refuses to run while the fence
    // deadline has passed, so the record stands whenever it does run.
    if (failure.rfind("fenced", 0) != 0 || Clock::now() > until || !still_ours()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  // Ended, so that the keeper gives the record up: the VM is stopped.
  log::error("VM " + name + ": taking it over from host " + active + " failed: " + failure +
             "; it is stopped");
  const auto vmms = running();
  if (auto it = vmms.find(name); it != vmms.end()) ::kill(it->second, SIGKILL);
  return false;
}

void HostVms::withdraw_replica_mark(const std::string& name) {
  auto etcd = context_.etcd();
  auto kv = etcd->get(kReplicasPrefix + name);
  if (!kv) return;
  etcdserverpb::TxnRequest txn;
  *txn.add_compare() = EtcdClient::key_mod_revision(kv->key, kv->mod_revision);
  *txn.add_success() = EtcdClient::delete_op(kv->key);
  if (etcd->txn(txn).succeeded()) {
    log::info("VM " + name + ": its replica is stale (the guest ran on without it): withdrawn");
  }
}

bool HostVms::run_held_guest_on(const std::string& name, uint64_t generation,
                                const std::string& why) {
  auto etcd = context_.etcd();
  int64_t owner_revision = 0;
  auto owner = read_record<api::Owner>(*etcd, kOwnersPrefix + name, &owner_revision);
  if (!owner || owner->host() != context_.host || owner->generation() != generation) return false;
  etcdserverpb::TxnRequest txn;
  *txn.add_compare() = EtcdClient::key_mod_revision(kOwnersPrefix + name, owner_revision);
  if (auto mark = etcd->get(kReplicasPrefix + name)) {
    *txn.add_compare() = EtcdClient::key_mod_revision(mark->key, mark->mod_revision);
    *txn.add_success() = EtcdClient::delete_op(mark->key);
  } else {
    *txn.add_compare() = EtcdClient::key_absent(kReplicasPrefix + name);
  }
  if (!etcd->txn(txn).succeeded()) return false;
  stop_replication(name, true);
  // The failure alone: the VMM's advice after it is the operator's.
  const std::string failure = why.substr(0, why.find("; the guest is paused here"));
  log::warning("VM " + name + ": its replica stream failed" +
               (failure.empty() ? "" : " (" + failure + ")") +
               "; the replica withdrawn, the guest runs on here unprotected");
  return true;
}

HostVms::NameHold::NameHold(HostVms& vms, std::set<std::string>& names, const std::string& name)
    : vms_(vms), names_(names), name_(name) {
  std::lock_guard lock(vms_.mutex_);
  held_ = names_.insert(name_).second;
}

HostVms::NameHold::~NameHold() {
  if (!held_) return;
  std::lock_guard lock(vms_.mutex_);
  names_.erase(name_);
}

}  // namespace keel::cluster
