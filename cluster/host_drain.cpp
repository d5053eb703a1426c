// keelctl host drain|undrain: an operator empties a host before working on
// it. The host's record is marked drained first (in one transaction on the
// record as read), so that nothing is started, migrated or replicated onto
// it meanwhile; then each VM it runs is moved, one at a time: a highly
// available VM switches over to its passive (its disk goes with it), any
// other live-migrates to the host placement picks. A VM that cannot be moved
// runs on where it is, and the answer says why; the mark stays until
// `host undrain`. Replicas the host keeps for VMs running elsewhere move:
// their actives' keepers pick another passive (host_vm_replicas.cpp).
#include "cluster/cluster_event_log.h"
#include "cluster/cluster_view.h"
#include "cluster/etcd_records.h"
#include "common/log.h"

namespace keel::cluster {

namespace {

std::string drain_word(bool undrain) {
  return undrain ? "host undrain" : "host drain";
}

}  // namespace

api::HostDrainResponse Agent::drain_host(const api::HostDrainRequest& request) {
  require_member();
  if (auto problem = host_name_problem(request.name()); !problem.empty()) throw invalid(problem);
  const std::string& name = request.name();
  const bool drain = !request.undrain();
  if (request.bandwidth_mbps() > kMaxBandwidthMbps) {
    throw invalid("bandwidth_mbps: at most " + std::to_string(kMaxBandwidthMbps) + " MB/s");
  }
  // Marked, and what runs there read, with the majority.
  std::vector<std::pair<std::string, bool>> running;  // VM, highly available
  with_quorum([&] {
    int64_t revision = 0;
    auto host = read_record<api::Host>(*etcd(), kHostsPrefix + name, &revision);
    if (!host) throw refused("no host named '" + name + "' in the cluster");
    if (host->drained() != drain) {
      host->set_drained(drain);
      etcdserverpb::TxnRequest txn;
      *txn.add_compare() = EtcdClient::key_mod_revision(kHostsPrefix + name, revision);
      *txn.add_success() = EtcdClient::put_op(kHostsPrefix + name, to_json(*host));
      if (!etcd()->txn(txn).succeeded()) {
        throw refused("host " + name + "'s record changed meanwhile: " + drain_word(!drain) +
                      " again");
      }
      log::info(drain_word(!drain) + " " + name);
      auto told = cluster_event(
          drain ? api::CLUSTER_EVENT_HOST_DRAINED : api::CLUSTER_EVENT_HOST_UNDRAINED, "",
          "host " + name + (drain ? " drained: its VMs move away" : " undrained"));
      told.set_host(name);
      tell(std::move(told));
    }
    if (drain) {
      const ClusterView view = cluster_view(Read::kLinearizable);
      for (const auto& [vm, owner] : view.owners) {
        if (owner.host() != name) continue;
        auto record = view.vms.find(vm);
        running.emplace_back(vm, record != view.vms.end() && record->second.ha());
      }
    }
    return 0;
  });
  api::HostDrainResponse out;
  for (const auto& [vm, ha] : running) {
    api::DrainedVm& moved = *out.add_vms();
    moved.set_name(vm);
    try {
      if (ha) {
        api::VmHaRequest ask;
        ask.set_name(vm);
        ask.set_action(api::HA_ACTION_SWITCHOVER);
        const api::VmHaResponse done = vm_ha(ask);
        moved.set_action("switched over");
        moved.set_to(done.status().active());
        moved.set_pause_us(done.switchover_pause_us());
        continue;
      }
      // Each placed against the cluster as it is after the moves before.
      std::string to;
      with_quorum([&] {
        const ClusterView view = cluster_view(Read::kLinearizable);
        const api::ClusterVm& record = view.vm(vm);
        const Placement placed =
            place_vm(record.memory_bytes(), record.cpus(), run_candidates(view, record));
        if (placed.host.empty()) throw refused(placed.reason);
        to = placed.host;
        return 0;
      });
      api::VmMigrateRequest migrate;
      migrate.set_name(vm);
      migrate.set_to(to);
      migrate.set_bandwidth_mbps(request.bandwidth_mbps());
      const api::VmMigrateResponse done = vm_migrate(migrate);
      moved.set_action("migrated");
      moved.set_to(done.to());
      moved.set_pause_us(done.downtime_us());
    } catch (const std::exception& e) {
      moved.set_error(e.what());
      log::warning("host drain " + name + ": VM " + vm + " not moved: " + e.what());
    }
  }
  return out;
}

}  // namespace keel::cluster
