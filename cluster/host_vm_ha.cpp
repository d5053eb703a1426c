// HostVms, high availability on the active (cluster/host_vms.h): what
// `vm ha status` shows, from the VM's keel-vmm and its records, and the
// planned switchover, which hands the owner record to the passive once its
// copy runs the guest (the old active becomes the passive: the stream turns
// around, with a full copy).
#include "cluster/cluster_event_log.h"
#include "cluster/etcd_records.h"
#include "cluster/host_vms.h"
#include "common/log.h"
#include "storage/json_record.h"

namespace keel::cluster {

namespace api = keel::agent::v1;
namespace pb = keel::api::v1;

api::VmHaResponse HostVms::ha(const api::VmHaRequest& request) {
  return ha_switchover(request, "");
}

api::VmHaResponse HostVms::ha_switchover(const api::VmHaRequest& request, const std::string& why) {
  const std::string& name = request.name();
  uint64_t generation = 0;
  {
    std::lock_guard lock(mutex_);
    auto it = generations_.find(name);
    if (it == generations_.end()) throw refused("VM " + name + " is not running on this host");
    generation = it->second;
  }
  auto etcd = context_.etcd();
  int64_t vm_revision = 0;
  auto vm = read_record<api::ClusterVm>(*etcd, kVmsPrefix + name, &vm_revision);
  if (!vm) throw refused("no VM named '" + name + "' in the cluster");
  api::VmHaResponse out;
  api::VmHaStatus& status = *out.mutable_status();
  status.set_name(name);
  status.set_enabled(vm->ha());
  status.set_active(context_.host);
  status.set_passive(vm->ha_passive());
  status.set_last_event(vm->ha_last_event());
  pb::ReplicaInfo info;
  try {
    info = replica_info(name);
  } catch (const std::exception& e) {
    if (request.action() == api::HA_ACTION_SWITCHOVER) {
      throw refused("VM " + name + ": its keel-vmm did not answer (" + e.what() +
                    "): a switchover needs a protected VM");
    }
    status.set_state("unprotected");
    status.set_detail(std::string("its keel-vmm did not answer: ") + e.what());
    return out;
  }
  status.set_epoch(info.epoch());
  status.set_epoch_target_ms(info.epoch_target_ms());
  status.set_last_epoch_us(info.last_epoch_us());
  status.set_last_ack_age_ms(info.last_ack_age_ms());
  status.set_bandwidth_bytes_per_s(info.bandwidth_bytes_per_s());
  status.set_paused_percent(info.paused_percent());
  status.set_last_pause_us(info.last_pause_us());
  const bool active = info.role() == pb::REPLICA_ROLE_ACTIVE;
  std::string problem;
  {
    std::lock_guard lock(mutex_);
    if (auto it = protection_problems_.find(name); it != protection_problems_.end()) {
      problem = it->second.why;
    }
  }
  if (!vm->ha()) {
    status.set_state("disabled");
  } else if (active && info.phase() == pb::REPLICA_PHASE_PROTECTED) {
    status.set_state("protected");
  } else if (active && (info.phase() == pb::REPLICA_PHASE_CONNECTING ||
                        info.phase() == pb::REPLICA_PHASE_SYNCING)) {
    status.set_state("syncing");
  } else if (active && info.phase() == pb::REPLICA_PHASE_SWITCHING_OVER) {
    status.set_state("switching over");
  } else {
    status.set_state("unprotected");
    status.set_detail(!problem.empty()        ? problem
                      : !info.error().empty() ? info.error()
                      : vm->ha_passive().empty()
                          ? "no passive host yet"
                          : "its replication to host " + vm->ha_passive() + " starts");
  }
  if (request.action() != api::HA_ACTION_SWITCHOVER) return out;

  // A planned handover: the passive runs the guest from the last epoch, the
  // record becomes the passive's, and this host keeps the next replica.
  if (status.state() != "protected") {
    throw refused("VM " + name + " is " + status.state() +
                  (status.detail().empty() ? "" : " (" + status.detail() + ")") +
                  ": a switchover needs a protected VM");
  }
  auto mark = etcd->get(kReplicasPrefix + name);
  api::Replica replica;
  if (!mark || !from_json(mark->value, &replica) || replica.host() != vm->ha_passive()) {
    throw refused("VM " + name + ": host " + vm->ha_passive() + " holds no replica record");
  }
  // Read before the handover (past it, nothing may fail): the stream
  // turns around unless this host is being drained or is unhealthy; then
  // the new active picks another passive. A drained or unhealthy passive
  // takes no VM.
  auto self = read_record<api::Host>(*etcd, kHostsPrefix + context_.host, nullptr);
  const bool drained = self && self->drained();
  const bool unhealthy = self && !self->unhealthy().empty();
  auto to = read_record<api::Host>(*etcd, kHostsPrefix + vm->ha_passive(), nullptr);
  if (const std::string why = to ? keeps_no_replica(*to) : ""; !why.empty()) {
    throw refused("VM " + name + ": its passive: " + why);
  }
  NameHold switching(*this, migrating_out_, name);
  if (!switching.held()) throw refused("VM " + name + " is migrating already");
  pb::Request switchover;
  switchover.mutable_switchover();
  auto answer = call_vmm(name, switchover, std::chrono::seconds(60));
  if (!answer.ok()) {
    throw refused("VM " + name + ": switchover to host " + vm->ha_passive() +
                  " failed: " + answer.error().message());
  }
  out.set_switchover_pause_us(answer.switchover().switchover_pause_us());
  {
    std::lock_guard lock(mutex_);
    generations_.erase(name);
  }
  const std::string passive = vm->ha_passive();
  api::Owner next;
  next.set_host(passive);
  next.set_generation(generation + 1);
  next.set_since(storage::utc_now());
  api::ClusterVm record = *vm;
  record.set_generation(next.generation());
  record.set_last_host(passive);
  record.set_storage_host(passive);
  record.set_ha_passive(drained || unhealthy ? "" : context_.host);
  record.set_ha_last_event("switched over from " + context_.host + " to " + passive + " at " +
                           next.since() + " (paused " +
                           std::to_string(out.switchover_pause_us() / 1000) + " ms)" +
                           (why.empty() ? "" : ": " + why));
  etcdserverpb::TxnRequest txn;
  *txn.add_compare() = EtcdClient::key_mod_revision(kVmsPrefix + name, vm_revision);
  *txn.add_compare() = EtcdClient::key_mod_revision(kReplicasPrefix + name, mark->mod_revision);
  *txn.add_success() = EtcdClient::put_op(kVmsPrefix + name, to_json(record));
  *txn.add_success() = EtcdClient::put_op(kOwnersPrefix + name, to_json(next), mark->lease);
  *txn.add_success() = EtcdClient::delete_op(kReplicasPrefix + name);
  if (!etcd->txn(txn).succeeded()) {
    // The passive's watch takes the record once this host's lapses.
    log::warning("VM " + name + ": switched over, but its records changed meanwhile");
  }
  log::info("VM " + name + " " + record.ha_last_event());
  auto told = cluster_event(api::CLUSTER_EVENT_VM_SWITCHED_OVER, name,
                            "VM " + name + " " + record.ha_last_event());
  told.set_host(passive);  // where it runs now, from this host
  told.set_peer(context_.host);
  told.set_duration_us(out.switchover_pause_us());
  context_.tell(std::move(told));
  status.set_active(passive);
  status.set_passive(record.ha_passive());
  status.set_state("syncing");
  status.set_detail(drained     ? "this host is drained: the replica starts on another host"
                    : unhealthy ? "this host is unhealthy: the replica starts on another host"
                                : "the replica starts on host " + context_.host);
  status.set_last_event(record.ha_last_event());
  return out;
}

}  // namespace keel::cluster
