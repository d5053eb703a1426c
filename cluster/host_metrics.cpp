// Agent, its host's metrics (keel-agent --metrics: /metrics): the cluster
// as this host sees it (quorum, members reachable, each host's lease),
// this host's lease and the time reading the cluster's state took, and
// every VM running here with its keel-vmm's own metrics, labelled with the
// VM's and this host's names. Scraping every host gives the whole cluster.
#include <chrono>
#include <future>

#include "cluster/agent.h"
#include "cluster/agent_client.h"
#include "cluster/cluster_view.h"
#include "cluster/host_lease.h"
#include "cluster/host_vms.h"
#include "common/log.h"
#include "control/control_client.h"
#include "control/metric_set.h"
#include "storage/vm_runtime.h"

namespace keel::cluster {

namespace api = ::keel::agent::v1;
namespace pb = ::keel::api::v1;

pb::MetricsResult Agent::metrics() {
  MetricSet set;
  const std::string& host = settings_.name;
  const auto asked = std::chrono::steady_clock::now();
  std::optional<api::ClusterStatusResponse> cluster;
  try {
    cluster = status();
  } catch (const std::exception& e) {
    log::debug(std::string("metrics: no cluster status: ") + e.what());
  }
  set.gauge("keel_agent_status_read_seconds",
            "How long reading the cluster's state from etcd took for this scrape",
            std::chrono::duration<double>(std::chrono::steady_clock::now() - asked).count(),
            {{"host", host}});
  set.gauge("keel_cluster_member", "1 while this host is in a cluster", cluster ? 1 : 0,
            {{"host", host}});
  if (cluster) {
    set.gauge("keel_cluster_quorum", "1 while this host reaches a majority of etcd's members",
              cluster->quorum() ? 1 : 0, {{"host", host}});
    set.gauge("keel_cluster_members", "etcd's members", cluster->members(), {{"host", host}});
    set.gauge("keel_cluster_members_reachable", "etcd's members that answered this host",
              cluster->reachable(), {{"host", host}});
    for (const auto& h : cluster->hosts()) {
      const MetricSet::Labels about{{"host", host}, {"peer", h.host().name()}};
      set.gauge("keel_cluster_host_alive", "1 while the host's agent holds its lease",
                h.alive() ? 1 : 0, about);
      set.gauge("keel_cluster_host_vms", "VMs the host runs", h.vms(), about);
    }
  }
  {
    std::lock_guard lock(mutex_);
    if (lease_) {
      set.gauge("keel_host_lease_age_seconds", "Since this host's lease was last renewed",
                std::chrono::duration<double>(lease_->since_renewal()).count(), {{"host", host}});
      set.gauge("keel_host_fenced", "1 while this host's lease deadline has passed",
                lease_->fenced() ? 1 : 0, {{"host", host}});
    }
  }
  // Each VM's own, from its keel-vmm; one that does not answer is counted.
  const auto running = vms_->running();
  set.gauge("keel_host_vms", "VMs by state on this host", double(running.size()),
            {{"host", host}, {"state", "running"}});
  uint64_t unanswered = 0;
  for (const auto& [name, pid] : running) {
    try {
      ControlClient client(storage::vm_api_socket(name).string(), std::chrono::seconds(1));
      pb::Request request;
      request.mutable_metrics();
      const pb::Response response = client.call(request, std::chrono::seconds(2));
      if (!response.ok()) throw std::runtime_error(response.error().message());
      set.add(response.metrics(), {{"vm", name}, {"host", host}});
    } catch (const std::exception& e) {
      ++unanswered;
      log::debug("metrics: VM " + name + ": " + e.what());
    }
  }
  set.gauge("keel_host_vm_metrics_unanswered",
            "Running VMs whose keel-vmm gave no metrics for this scrape", double(unanswered),
            {{"host", host}});
  return set.result();
}

api::HostMetricsResponse Agent::host_metrics() {
  api::HostMetricsResponse out;
  out.set_host(settings_.name);
  *out.mutable_metrics() = metrics();
  return out;
}

// Every host asked at once (each answers within a few seconds: its etcd
// read and its VMs'); what the local member knows of the hosts is enough.
api::ClusterMetricsResponse Agent::cluster_metrics() {
  require_member();
  const ClusterView view = cluster_view(Read::kSerializable);
  std::vector<std::pair<std::string, std::future<api::HostMetricsResponse>>> asked;
  for (const auto& [name, host] : view.hosts) {
    asked.emplace_back(name, std::async(std::launch::async, [this, &view, name = name] {
                         return on_host(
                             view, name, [this] { return host_metrics(); },
                             [](AgentClient& c) { return c.host_metrics(); },
                             std::chrono::seconds(8));
                       }));
  }
  api::ClusterMetricsResponse out;
  for (auto& [name, answer] : asked) {
    try {
      *out.add_hosts() = answer.get();
    } catch (const std::exception& e) {
      out.add_unanswered(name + ": " + e.what());
    }
  }
  return out;
}

}  // namespace keel::cluster
