// The cluster's VM operations as an operator calls them on any host: the
// agent asked finds the host that must act (the VM's storage host for
// create and delete, its compute host for start and stop) and forwards the
// call to that host's agent (the Host* calls), or acts itself.
#include <algorithm>
#include <map>

#include "cluster/agent.h"
#include "cluster/agent_client.h"
#include "cluster/cluster_keys.h"
#include "cluster/cluster_view.h"
#include "cluster/host_vms.h"
#include "cluster/vm_placement.h"
#include "common/error.h"
#include "storage/pool.h"

namespace keel::cluster {

namespace api = keel::agent::v1;

namespace {

// A start waits for the VMM's socket (up to 30 s), a stop for the guest.
constexpr auto kForwardTimeout = std::chrono::seconds(60);
constexpr auto kStopExtra = std::chrono::seconds(30);
// A live migration's whole length, and then some.
constexpr auto kMigrationForwardTimeout = std::chrono::minutes(31);
// `vm show` asking the owner what its keel-vmm says.
constexpr auto kStatusTimeout = std::chrono::seconds(3);

}  // namespace

Agent::ClusterView Agent::cluster_view(Read read) {
  ClusterView view;
  auto etcd = this->etcd();
  for (const auto& kv : etcd->list(kHostsPrefix, read)) {
    api::Host host;
    if (from_json(kv.value, &host)) view.hosts[host.name()] = host;
  }
  for (const auto& kv : etcd->list(kAlivePrefix, read)) {
    view.alive[kv.key.substr(kAlivePrefix.size())] = true;
  }
  for (const auto& kv : etcd->list(kVmsPrefix, read)) {
    api::ClusterVm vm;
    if (from_json(kv.value, &vm)) view.vms[vm.name()] = vm;
  }
  for (const auto& kv : etcd->list(kOwnersPrefix, read)) {
    api::Owner owner;
    if (from_json(kv.value, &owner)) view.owners[kv.key.substr(kOwnersPrefix.size())] = owner;
  }
  for (const auto& kv : etcd->list(kReplicasPrefix, read)) {
    api::Replica replica;
    if (from_json(kv.value, &replica)) {
      view.replicas[kv.key.substr(kReplicasPrefix.size())] = replica;
    }
  }
  return view;
}

api::VmCreateResponse Agent::vm_create(const api::VmCreateRequest& request) {
  require_member();
  storage::check_pool_name("VM name", request.name());
  return with_quorum([&] {
    auto view = cluster_view(Read::kLinearizable);
    if (view.vms.count(request.name())) {
      throw refused("a VM named '" + request.name() + "' exists in the cluster");
    }
    auto stores = [&](const std::string& name) -> std::string {
      auto h = view.hosts.find(name);
      if (h == view.hosts.end()) return "no such host";
      if (!has_role(h->second, api::ROLE_STORAGE)) return "not a storage host";
      if (h->second.pool().empty()) return "it has no pool (keel-agent --pool)";
      if (!view.alive.count(name)) return "its agent is not alive";
      return "";
    };
    std::string storage_host = request.storage_host();
    if (!storage_host.empty()) {
      if (auto why = stores(storage_host); !why.empty()) {
        throw refused("cannot store VM " + request.name() + " on host " + storage_host + ": " +
                      why);
      }
    } else if (stores(settings_.name).empty()) {
      storage_host = settings_.name;
    } else {
      for (const auto& [name, host] : view.hosts) {
        if (stores(name).empty()) {
          storage_host = name;
          break;
        }
      }
      if (storage_host.empty()) throw refused("no storage host with a pool is alive");
    }
    api::VmCreateRequest forwarded = request;
    forwarded.set_storage_host(storage_host);
    return on_host(
        view, storage_host, [&] { return host_vm_create(forwarded); },
        [&](AgentClient& c) { return c.host_vm_create(forwarded); }, kForwardTimeout);
  });
}

std::vector<PlacementCandidate> Agent::run_candidates(const ClusterView& view,
                                                      const api::ClusterVm& vm) const {
  std::vector<PlacementCandidate> candidates;
  for (const auto& [name, host] : view.hosts) {
    PlacementCandidate c;
    c.host = name;
    c.memory_bytes = host.memory_bytes();
    c.cpus = host.cpus();
    for (const auto& [vm_name, owner] : view.owners) {
      auto running = view.vms.find(vm_name);
      if (owner.host() != name || running == view.vms.end()) continue;
      c.memory_used += running->second.memory_bytes();
      c.vcpus_used += running->second.cpus();
    }
    if (!view.alive.count(name)) {
      c.unfit = "its agent is not alive";
    } else if (!has_role(host, api::ROLE_COMPUTE)) {
      c.unfit = "not a compute host";
    } else if (host.drained()) {
      c.unfit = "it is drained (keelctl host undrain " + name + ")";
    } else if (!view.alive.count(vm.storage_host())) {
      c.unfit = "the VM's disk is on host " + vm.storage_host() + ", whose agent is not alive";
    }
    candidates.push_back(c);
  }
  return candidates;
}

api::VmStartResponse Agent::vm_start(const api::VmStartRequest& request) {
  require_member();
  storage::check_pool_name("VM name", request.name());
  return with_quorum([&] {
    auto view = cluster_view(Read::kLinearizable);
    const api::ClusterVm& vm = view.vm(request.name());
    if (auto owner = view.owners.find(request.name()); owner != view.owners.end()) {
      throw refused("VM " + request.name() + " runs on host " + owner->second.host());
    }
    const std::vector<PlacementCandidate> candidates = run_candidates(view, vm);
    std::string host = request.host();
    std::string reason = "chosen by the operator";
    if (host.empty() && vm.ha()) {
      // Its replica copies the disk of a VM that runs where it is stored.
      host = vm.storage_host();
      reason = "high availability: where its disk is";
    }
    if (host.empty()) {
      auto placed = place_vm(vm.memory_bytes(), vm.cpus(), candidates);
      if (placed.host.empty()) {
        throw refused("cannot start VM " + request.name() + ": " + placed.reason);
      }
      host = placed.host;
      reason = placed.reason;
    } else {
      auto c = std::find_if(candidates.begin(), candidates.end(),
                            [&](const PlacementCandidate& x) { return x.host == host; });
      if (c == candidates.end()) throw refused("no host named '" + host + "' in the cluster");
      if (!c->unfit.empty()) {
        throw refused("cannot start VM " + request.name() + " on host " + host + ": " + c->unfit);
      }
    }
    api::VmStartRequest forwarded = request;
    forwarded.set_host(host);
    auto out = on_host(
        view, host, [&] { return host_vm_start(forwarded); },
        [&](AgentClient& c) { return c.host_vm_start(forwarded); }, kForwardTimeout);
    out.set_reason(reason);
    return out;
  });
}

api::VmStopResponse Agent::vm_stop(const api::VmStopRequest& request) {
  require_member();
  storage::check_pool_name("VM name", request.name());
  return with_quorum([&] {
    auto view = cluster_view(Read::kLinearizable);
    const std::string host = view.owner(request.name()).host();
    const auto timeout =
        std::chrono::milliseconds(request.timeout_ms() ? request.timeout_ms() : 60000) + kStopExtra;
    on_host(
        view, host, [&] { return host_vm_stop(request); },
        [&](AgentClient& c) { return c.host_vm_stop(request); }, timeout);
    api::VmStopResponse out;
    out.set_host(host);
    return out;
  });
}

Agent::ClusterView Agent::cluster_view_or_last(bool& current) {
  try {
    current = true;
    return cluster_view(Read::kLinearizable);
  } catch (const EtcdError& e) {
    if (!e.unavailable()) throw AgentError(AgentError::Code::kInternal, e.what());
    current = false;
    try {
      return cluster_view(Read::kSerializable);
    } catch (const EtcdError&) {
      throw no_quorum(e.what());
    }
  }
}

api::VmListResponse Agent::vm_list(const api::VmListRequest& request) {
  require_member();
  api::VmListResponse out;
  bool current = false;
  ClusterView view = cluster_view_or_last(current);
  out.set_current(current);
  if (!request.name().empty()) view.vm(request.name());
  for (const auto& [name, vm] : view.vms) {
    if (!request.name().empty() && name != request.name()) continue;
    auto* row = out.add_vms();
    *row->mutable_vm() = vm;
    if (auto owner = view.owners.find(name); owner != view.owners.end()) {
      *row->mutable_owner() = owner->second;
      row->set_running(true);
      if (!request.name().empty()) {
        // One VM: what its keel-vmm says (paused by the fence, say).
        api::VmStatusRequest ask;
        ask.set_name(name);
        try {
          *row->mutable_vmm() = on_host(
              view, owner->second.host(), [&] { return host_vm_status(ask); },
              [&](AgentClient& c) { return c.host_vm_status(ask); }, kStatusTimeout);
        } catch (const std::exception& e) {
          row->mutable_vmm()->set_state(std::string("not known: ") + e.what());
        }
      }
    }
  }
  return out;
}

api::VmDeleteResponse Agent::vm_delete(const api::VmDeleteRequest& request) {
  require_member();
  storage::check_pool_name("VM name", request.name());
  return with_quorum([&] {
    auto view = cluster_view(Read::kLinearizable);
    const std::string storage_host = view.vm(request.name()).storage_host();
    if (auto owner = view.owners.find(request.name()); owner != view.owners.end()) {
      throw refused("VM " + request.name() + " runs on host " + owner->second.host() +
                    ": stop it first");
    }
    on_host(
        view, storage_host, [&] { return host_vm_delete(request); },
        [&](AgentClient& c) { return c.host_vm_delete(request); }, kForwardTimeout);
    api::VmDeleteResponse out;
    out.set_storage_host(storage_host);
    return out;
  });
}

api::VmMigrateResponse Agent::vm_migrate(const api::VmMigrateRequest& request) {
  require_member();
  storage::check_pool_name("VM name", request.name());
  if (auto problem = host_name_problem(request.to()); !problem.empty()) {
    throw invalid("to: " + problem);
  }
  if (request.bandwidth_mbps() > kMaxBandwidthMbps) {
    throw invalid("bandwidth_mbps: at most " + std::to_string(kMaxBandwidthMbps) + " MB/s");
  }
  return with_quorum([&] {
    auto view = cluster_view(Read::kLinearizable);
    const std::string from = view.owner(request.name()).host();
    auto to = view.hosts.find(request.to());
    if (to == view.hosts.end())
      throw refused("no host named '" + request.to() + "' in the cluster");
    if (!view.alive.count(request.to())) {
      throw refused("host " + request.to() + "'s agent is not alive");
    }
    if (!has_role(to->second, api::ROLE_COMPUTE)) {
      throw refused("host " + request.to() + " is not a compute host");
    }
    if (to->second.drained()) {
      throw refused(drained_host(request.to()));
    }
    if (from == request.to()) {
      throw refused("VM " + request.name() + " runs on host " + request.to() + " already");
    }
    if (const uint64_t mbps = request.bandwidth_mbps(); mbps != 0) {
      // The memory once over must fit well inside the agent's 30 minutes
      // for a whole migration.
      const uint64_t bytes = view.vm(request.name()).memory_bytes();
      const uint64_t seconds = bytes / (mbps * 1000000);
      if (seconds > 20 * 60) {
        throw refused("VM " + request.name() + "'s " + std::to_string(bytes >> 20) + " MiB at " +
                      std::to_string(mbps) + " MB/s take " + std::to_string(seconds / 60) +
                      " minutes once over, and a migration may last 30: a higher bandwidth");
      }
    }
    if (view.vm(request.name()).ha()) {
      // Its disk moves with a switchover; a migration would leave it behind.
      throw refused("VM " + request.name() +
                    " is highly available: `vm ha switchover` moves it to its passive (or "
                    "`vm ha disable` it first)");
    }
    return on_host(
        view, from, [&] { return host_vm_migrate(request); },
        [&](AgentClient& c) { return c.host_vm_migrate(request); }, kMigrationForwardTimeout);
  });
}

api::VmMigrateResponse Agent::host_vm_migrate(const api::VmMigrateRequest& request) {
  require_member();
  storage::check_pool_name("VM name", request.name());
  return with_quorum([&] { return vms_->migrate(request); });
}

api::VmIncomingResponse Agent::host_vm_incoming(const api::VmIncomingRequest& request) {
  require_member();
  storage::check_pool_name("VM name", request.name());
  return with_quorum([&] { return vms_->incoming(request); });
}

api::VmCreateResponse Agent::host_vm_create(const api::VmCreateRequest& request) {
  require_member();
  storage::check_pool_name("VM name", request.name());
  if (request.storage_host() != settings_.name) {
    throw invalid("storage_host: this is host " + settings_.name);
  }
  return with_quorum([&] {
    api::VmCreateResponse out;
    *out.mutable_vm() = vms_->create(request);
    return out;
  });
}

api::VmStartResponse Agent::host_vm_start(const api::VmStartRequest& request) {
  require_member();
  storage::check_pool_name("VM name", request.name());
  if (request.host() != settings_.name) throw invalid("host: this is host " + settings_.name);
  return with_quorum([&] { return vms_->start(request.name()); });
}

api::VmStopResponse Agent::host_vm_stop(const api::VmStopRequest& request) {
  require_member();
  storage::check_pool_name("VM name", request.name());
  return with_quorum([&] {
    // Only with a majority: a stop is an operation like any other.
    etcd()->get(kOwnersPrefix + request.name());
    vms_->stop(request);
    api::VmStopResponse out;
    out.set_host(settings_.name);
    return out;
  });
}

api::VmStatus Agent::host_vm_status(const api::VmStatusRequest& request) {
  require_member();
  storage::check_pool_name("VM name", request.name());
  return vms_->status(request.name());
}

void Agent::host_vm_files(const api::VmFilesRequest& request,
                          const std::function<bool(const api::VmFileChunk&)>& each) {
  require_member();
  storage::check_pool_name("VM name", request.name());
  vms_->send_files(request, each);
}

api::VmDeleteResponse Agent::host_vm_delete(const api::VmDeleteRequest& request) {
  require_member();
  storage::check_pool_name("VM name", request.name());
  return with_quorum([&] {
    vms_->remove(request.name());
    api::VmDeleteResponse out;
    out.set_storage_host(settings_.name);
    return out;
  });
}

}  // namespace keel::cluster
