// High availability as an operator asks for it on any host (`keelctl vm ha
// enable|disable|status|switchover`): the VM's record in etcd says whether
// it is protected and by which passive host; the active's agent does the
// rest (cluster/host_vm_replicas.cpp, host_vm_ha.cpp).
#include "cluster/cluster_view.h"
#include "cluster/etcd_records.h"
#include "cluster/host_vms.h"
#include "common/size_parse.h"
#include "storage/pool.h"

namespace keel::cluster {

namespace {

constexpr auto kHaForwardTimeout = std::chrono::seconds(90);
// HA needs a majority of hosts after the active's loss, and a third host
// to protect the VM again on.
constexpr size_t kMinHaHosts = 3;

}  // namespace

api::VmHaResponse Agent::vm_ha(const api::VmHaRequest& request) {
  require_member();
  storage::check_pool_name("VM name", request.name());
  const std::string& name = request.name();
  if (request.action() == api::HA_ACTION_UNSPECIFIED) throw invalid("action: missing");
  if (request.action() == api::HA_ACTION_ENABLE) {
    if (auto problem = host_name_problem(request.passive()); !problem.empty()) {
      throw invalid("passive: " + problem);
    }
  }
  return with_quorum([&] {
    auto view = cluster_view(Read::kLinearizable);
    if (request.action() == api::HA_ACTION_ENABLE && view.hosts.size() < kMinHaHosts) {
      throw refused("high availability needs at least 3 hosts in the cluster (it has " +
                    std::to_string(view.hosts.size()) +
                    "): a majority must outlive the active host");
    }
    const api::ClusterVm vm = view.vm(name);
    auto owner = view.owners.find(name);
    const bool running = owner != view.owners.end();
    if (request.action() == api::HA_ACTION_ENABLE || request.action() == api::HA_ACTION_DISABLE) {
      const bool enable = request.action() == api::HA_ACTION_ENABLE;
      if (enable) {
        const std::string& passive = request.passive();
        auto host = view.hosts.find(passive);
        if (host == view.hosts.end())
          throw refused("no host named '" + passive + "' in the cluster");
        const std::string active = running ? owner->second.host() : vm.storage_host();
        if (passive == active) {
          throw refused("host " + passive + (running ? " runs" : " stores") + " VM " + name +
                        ": the passive must be another host");
        }
        if (running && owner->second.host() != vm.storage_host()) {
          throw refused("VM " + name + " runs on host " + owner->second.host() +
                        " with its disk on host " + vm.storage_host() +
                        " (over NBD): its replica copies the disk of a VM that runs where it is "
                        "stored; migrate it to " +
                        vm.storage_host() + " first");
        }
        if (!view.alive.count(passive)) throw refused("host " + passive + "'s agent is not alive");
        if (auto why = keeps_no_replica(host->second); !why.empty()) throw refused(why);
        if (!has_role(host->second, api::ROLE_COMPUTE)) {
          throw refused("host " + passive + " is not a compute host");
        }
        if (host->second.pool().empty()) {
          throw refused("host " + passive + " has no pool for the copy of VM " + name + "'s disk");
        }
        uint64_t used = 0;
        for (const auto& [other, o] : view.owners) {
          if (o.host() == passive && view.vms.count(other))
            used += view.vms.at(other).memory_bytes();
        }
        for (const auto& [other, r] : view.replicas) {
          if (r.host() == passive && other != name && view.vms.count(other)) {
            used += view.vms.at(other).memory_bytes();
          }
        }
        const uint64_t memory = host->second.memory_bytes();
        if (used + vm.memory_bytes() > memory) {
          throw refused("host " + passive + " lacks the memory for VM " + name + "'s replica (" +
                        human_bytes(vm.memory_bytes()) + " needed, " +
                        human_bytes(memory > used ? memory - used : 0) + " free of " +
                        human_bytes(memory) + ")");
        }
      }
      // Written over the record as it is now (a failover may have moved it
      // since the view was read): only the HA fields change.
      int64_t revision = 0;
      auto fresh = read_record<api::ClusterVm>(*etcd(), kVmsPrefix + name, &revision);
      if (!fresh) throw refused("no VM named '" + name + "' in the cluster");
      fresh->set_ha(enable);
      fresh->set_ha_passive(enable ? request.passive() : "");
      etcdserverpb::TxnRequest txn;
      *txn.add_compare() = EtcdClient::key_mod_revision(kVmsPrefix + name, revision);
      *txn.add_success() = EtcdClient::put_op(kVmsPrefix + name, to_json(*fresh));
      if (!etcd()->txn(txn).succeeded()) throw refused("VM " + name + " changed meanwhile: again");
      view.vms[name] = *fresh;
    }
    if (running) {
      api::VmHaRequest ask = request;
      if (ask.action() != api::HA_ACTION_SWITCHOVER) ask.set_action(api::HA_ACTION_STATUS);
      const std::string host = owner->second.host();
      return on_host(
          view, host, [&] { return host_vm_ha(ask); },
          [&](AgentClient& c) { return c.host_vm_ha(ask); }, kHaForwardTimeout);
    }
    if (request.action() == api::HA_ACTION_SWITCHOVER) {
      throw refused("VM " + name + " is not running");
    }
    const api::ClusterVm& now = view.vms[name];
    api::VmHaResponse out;
    auto& status = *out.mutable_status();
    status.set_name(name);
    status.set_enabled(now.ha());
    status.set_passive(now.ha_passive());
    status.set_last_event(now.ha_last_event());
    if (auto replica = view.replicas.find(name); replica != view.replicas.end()) {
      status.set_state("failing over");
      status.set_detail("host " + replica->second.host() + " takes it over from host " +
                        replica->second.active());
    } else {
      status.set_state(now.ha() ? "stopped" : "disabled");
    }
    return out;
  });
}

api::VmHaResponse Agent::host_vm_ha(const api::VmHaRequest& request) {
  require_member();
  storage::check_pool_name("VM name", request.name());
  return with_quorum([&] { return vms_->ha(request); });
}

api::VmReplicaResponse Agent::host_vm_replica(const api::VmReplicaRequest& request) {
  require_member();
  storage::check_pool_name("VM name", request.name());
  if (auto problem = host_name_problem(request.active()); !problem.empty()) {
    throw invalid("active: " + problem);
  }
  return with_quorum([&] { return vms_->replica(request); });
}

}  // namespace keel::cluster
