// The agent's view of who is reachable, quorum, and `cluster status`.
#include <algorithm>
#include <future>
#include <map>

#include "cluster/agent.h"
#include "cluster/cluster_keys.h"
#include "cluster/etcd_member.h"
#include "common/log.h"

namespace keel::cluster {

namespace api = keel::agent::v1;

namespace {
// A member that does not answer its status within this counts as
// unreachable.
constexpr std::chrono::milliseconds kProbeTimeout{500};
}  // namespace

Agent::Reachability Agent::probe() {
  Reachability out;
  std::vector<Member> members = etcd()->members();
  out.members = static_cast<unsigned>(members.size());
  std::vector<std::future<std::pair<bool, uint64_t>>> answers;
  for (const auto& m : members) {
    std::string endpoint = m.client_urls.empty() ? "" : endpoint_of_url(m.client_urls[0]);
    answers.push_back(
        std::async(std::launch::async, [endpoint, tls = etcd_tls()]() -> std::pair<bool, uint64_t> {
          if (endpoint.empty()) return {false, 0};  // added, never started
          try {
            EtcdClient client({endpoint}, kProbeTimeout, tls);
            return {true, client.status().leader()};
          } catch (const EtcdError& e) {
            log::debug("etcd member at " + endpoint + " counts as unreachable: " + e.what());
            return {false, 0};
          }
        }));
  }
  for (size_t i = 0; i < members.size(); ++i) {
    auto [answered, leader] = answers[i].get();
    if (answered) {
      ++out.reachable;
      if (out.leader == 0) out.leader = leader;
    }
    out.each.emplace_back(members[i], answered);
  }
  return out;
}

AgentError Agent::no_quorum(const std::string& cause) {
  try {
    auto r = probe();
    std::string counts =
        std::to_string(r.reachable) + " of " + std::to_string(r.members) + " hosts reachable";
    if (r.reachable * 2 > r.members && !cause.empty()) {
      // A majority answers, yet etcd could not serve: say what it said.
      return AgentError(AgentError::Code::kUnavailable, cause + " (" + counts + ")");
    }
    return AgentError(AgentError::Code::kUnavailable, "no quorum (" + counts + ")");
  } catch (const EtcdError& e) {
    return AgentError(
        AgentError::Code::kUnavailable,
        std::string("no quorum (this host's etcd member does not answer: ") + e.what() + ")");
  }
}

std::vector<std::string> cluster_notes(size_t hosts) {
  std::vector<std::string> notes;
  if (hosts == 1) {
    notes.push_back("1 host: no fault tolerance (add hosts with keelctl cluster join)");
  } else if (hosts % 2 == 0) {
    notes.push_back(std::to_string(hosts) +
                    " hosts: an even count tolerates no more failed "
                    "hosts than one host fewer; an odd count is recommended");
  }
  return notes;
}

api::ClusterStatusResponse Agent::status() {
  require_member();
  api::ClusterStatusResponse out;
  auto s = state();
  out.set_cluster_id(s.cluster_id());
  out.set_this_host(settings_.name);
  Reachability r;
  try {
    r = probe();
  } catch (const EtcdError& e) {
    throw AgentError(AgentError::Code::kUnavailable,
                     std::string("this host's etcd member does not answer: ") + e.what());
  }
  std::vector<KeyValue> hosts, alive, owners;
  bool current = true;
  try {
    hosts = etcd()->list(kHostsPrefix);
    alive = etcd()->list(kAlivePrefix);
    owners = etcd()->list(kOwnersPrefix);
  } catch (const EtcdError& e) {
    if (!e.unavailable()) throw AgentError(AgentError::Code::kInternal, e.what());
    current = false;  // what this host's member last knew
    try {
      hosts = etcd()->list(kHostsPrefix, Read::kSerializable);
      alive = etcd()->list(kAlivePrefix, Read::kSerializable);
      owners = etcd()->list(kOwnersPrefix, Read::kSerializable);
    } catch (const EtcdError&) {
    }
  }
  std::map<std::string, api::Host> records;
  for (const auto& kv : hosts) {
    api::Host host;
    if (from_json(kv.value, &host)) records[host.name()] = host;
  }
  std::map<std::string, bool> is_alive;
  for (const auto& kv : alive) is_alive[kv.key.substr(kAlivePrefix.size())] = true;
  std::map<std::string, unsigned> vms_on;
  for (const auto& kv : owners) {
    api::Owner owner;
    if (from_json(kv.value, &owner)) ++vms_on[owner.host()];
  }
  std::sort(r.each.begin(), r.each.end(),
            [](const auto& a, const auto& b) { return a.first.name < b.first.name; });
  for (const auto& [member, answered] : r.each) {
    auto* h = out.add_hosts();
    std::string name = member.name;
    if (name.empty()) {
      // Added, not started yet: find the host by its peer URL.
      for (const auto& [n, record] : records) {
        if (!member.peer_urls.empty() &&
            member.peer_urls[0] == peer_url(record.cluster_address())) {
          name = n;
        }
      }
    }
    auto found = records.find(name);
    if (found != records.end()) {
      *h->mutable_host() = found->second;
    } else {
      h->mutable_host()->set_name(name.empty() ? "(joining)" : name);
    }
    h->set_reachable(answered);
    h->set_alive(is_alive.count(name) > 0);
    h->set_leader(r.leader != 0 && member.id == r.leader);
    h->set_learner(member.learner);
    h->set_vms(vms_on[name]);
  }
  out.set_reachable(r.reachable);
  out.set_members(r.members);
  out.set_quorum(current);
  out.set_current(current);
  for (auto& note : cluster_notes(r.members)) out.add_notes(note);
  if (!current) {
    out.add_notes("no quorum (" + std::to_string(r.reachable) + " of " + std::to_string(r.members) +
                  " hosts reachable): every operation is refused; shown is what this host "
                  "last knew");
  }
  return out;
}

}  // namespace keel::cluster
