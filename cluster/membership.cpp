// Joining and leaving: cluster init, cluster join (and the peer's side of
// it, admit), host remove, host set-address.
#include <filesystem>
#include <random>
#include <thread>

#include "cluster/agent.h"
#include "cluster/agent_client.h"
#include "cluster/cluster_event_log.h"
#include "cluster/cluster_keys.h"
#include "cluster/etcd_member.h"
#include "cluster/host_facts.h"
#include "cluster/host_lease.h"
#include "common/error.h"
#include "common/log.h"
#include "storage/json_record.h"

namespace keel::cluster {

namespace api = keel::agent::v1;
namespace fs = std::filesystem;

namespace {

std::string hex(uint64_t value) {
  char text[17];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(value));
  return text;
}

void check_own_address(const std::string& address) {
  if (auto problem = cluster_address_problem(address); !problem.empty()) throw invalid(problem);
  if (!is_local_address(address)) {
    throw invalid("address " + address + " is not configured on any interface of this host");
  }
}

std::string agent_address(const std::string& address) {
  return host_port(address, kAgentPort);
}

std::string random_token() {
  std::random_device random;
  return "keel-" + hex((uint64_t{random()} << 32) | random());
}

}  // namespace

void Agent::refuse_if_in_cluster() const {
  auto s = state();
  if (s.joined()) {
    throw refused("this host is already in cluster " + s.cluster_id() + " as '" + s.name() +
                  "' with cluster address " + s.cluster_address());
  }
  if (!s.cluster_address().empty()) {
    throw refused("an init or join of this host is under way");
  }
}

api::ClusterInitResponse Agent::init(const api::ClusterInitRequest& request) {
  std::lock_guard membership(membership_);
  refuse_if_in_cluster();
  check_own_address(request.address());
  api::LocalState s = state();
  s.set_cluster_address(request.address());
  s.set_cluster_token(random_token());
  save_state(s);
  try {
    auto tls =
        ClusterTls::create(s.cluster_token(), settings_.name, host_cert_ips(request.address()));
    tls.save(tls_dir());
    set_tls(std::move(tls));
    if (settings_.etcd_endpoints.empty()) {
      fs::remove_all(fs::path(settings_.state_dir) / "etcd");
      start_member(peer_url_line(settings_.name, request.address()), true, s.cluster_token(),
                   request.address());
    }
    set_etcd(new_etcd_client(endpoints(), settings_.etcd_timeout));
    wait_for_member(std::chrono::seconds(20));
    auto status = etcd()->status();
    api::Cluster cluster;
    cluster.set_id(hex(status.header().cluster_id()));
    cluster.set_created_at(storage::utc_now());
    cluster.set_created_by(settings_.name);
    etcdserverpb::TxnRequest txn;
    *txn.add_compare() = EtcdClient::key_absent(kClusterKey);
    *txn.add_success() = EtcdClient::put_op(kClusterKey, to_json(cluster));
    *txn.add_success() =
        EtcdClient::put_op(kHostsPrefix + settings_.name, to_json(this_host(request.address())));
    if (!etcd()->txn(txn).succeeded()) {
      throw refused("the etcd at " + endpoints()[0] + " holds a Keel cluster already: join it");
    }
    s.set_cluster_id(cluster.id());
    s.set_member_id(status.header().member_id());
    s.set_joined(true);
    save_state(s);
    take_lease();
  } catch (...) {
    undo_start();
    throw;
  }
  log::info("cluster " + s.cluster_id() + " formed with this host (" + request.address() + ")");
  tell(cluster_event(api::CLUSTER_EVENT_HOST_JOINED, "",
                     "host " + settings_.name + " formed the cluster (" + request.address() + ")"));
  serve_address(request.address());
  api::ClusterInitResponse out;
  out.set_cluster_id(s.cluster_id());
  for (auto& note : cluster_notes(1)) out.add_notes(note);
  out.set_join_token(tls()->join_token());
  return out;
}

// An init or join that failed halfway: this host is in no cluster again.
void Agent::undo_start() {
  std::unique_ptr<HostLease> lease;
  std::unique_ptr<EtcdMember> member;
  {
    std::lock_guard lock(mutex_);
    lease = std::move(lease_);
    member = std::move(member_);
  }
  lease.reset();
  member.reset();
  set_etcd(nullptr);
  set_tls(std::nullopt);
  fs::remove_all(tls_dir());
  api::LocalState s;
  s.set_name(settings_.name);
  save_state(s);
  if (settings_.etcd_endpoints.empty()) fs::remove_all(fs::path(settings_.state_dir) / "etcd");
}

api::ClusterJoinResponse Agent::join(const api::ClusterJoinRequest& request) {
  std::lock_guard membership(membership_);
  refuse_if_in_cluster();
  check_own_address(request.address());
  if (request.peer().empty()) throw invalid("peer: the cluster address of a host in the cluster");
  if (request.peer() == request.address()) {
    throw invalid("peer " + request.peer() +
                  " is this host's own address: name a host in the "
                  "cluster");
  }
  if (!settings_.etcd_endpoints.empty()) {
    throw refused("this agent uses the etcd at " + settings_.etcd_endpoints[0] +
                  ": its host joins by keelctl cluster init against that etcd");
  }
  if (request.token().empty()) {
    throw invalid("--token: the cluster's join token (keelctl cluster token on one of its hosts)");
  }
  const JoinToken token = parse_join_token(request.token());
  // First a look at the peer over TLS without checking it: its CA, which
  // must be the one the token names. Only then is anything sent.
  ChannelTls unchecked;
  unchecked.enabled = true;
  api::HelloResponse hello;
  try {
    hello = AgentClient(agent_address(request.peer()), std::chrono::seconds(5), unchecked).hello();
  } catch (const AgentCallError& e) {
    // An agent serves the other agents on its cluster address only once it
    // is in a cluster.
    throw AgentError(AgentError::Code::kUnavailable,
                     "no agent of a cluster's host answers at " + request.peer() + " (" + e.what() +
                         "): is " + request.peer() +
                         " a host in a cluster? (keelctl cluster init there first)");
  }
  if (hello.cluster_id().empty()) {
    throw refused("the host at " + request.peer() + " ('" + hello.name() +
                  "') is in no cluster: run keelctl cluster init there first");
  }
  std::string ca_cert;
  try {
    ca_cert = only_ca_cert(hello.ca_cert());
  } catch (const InputError& e) {
    throw refused("the host at " + request.peer() + " ('" + hello.name() +
                  "') showed no usable CA certificate: " + e.what());
  }
  if (cert_fingerprint(ca_cert) != token.ca_fingerprint) {
    throw refused("the host at " + request.peer() + " ('" + hello.name() +
                  "') is not of the cluster the token names (its CA's fingerprint differs): a "
                  "token of another cluster, or another host at that address");
  }
  if (hello.name() == settings_.name) {
    throw refused("the host at " + request.peer() + " is named '" + hello.name() +
                  "' too: every host needs its own name (keel-agent --name)");
  }
  // Long enough for the peer's admit at its slowest (it waits out etcd's
  // 5 s between member changes, its calls bounded by 2 s each). The peer
  // is checked against its CA from now on.
  ChannelTls checked;
  checked.enabled = true;
  checked.ca_cert = ca_cert;
  AgentClient peer(agent_address(request.peer()), std::chrono::seconds(40), checked);
  api::AdmitHostRequest admit_request;
  *admit_request.mutable_host() = this_host(request.address());
  admit_request.set_join_secret(token.secret);
  api::AdmitHostResponse admitted;
  try {
    admitted = peer.admit(admit_request);
  } catch (const AgentCallError& e) {
    throw AgentError(e.grpc_code() == 9 || e.grpc_code() == 7
                         ? AgentError::Code::kFailedPrecondition
                     : e.grpc_code() == 3 ? AgentError::Code::kInvalidArgument
                                          : AgentError::Code::kUnavailable,
                     std::string(e.what()));
  }
  api::LocalState s = state();
  s.set_cluster_address(request.address());
  s.set_cluster_id(admitted.cluster_id());
  s.set_member_id(admitted.member_id());
  save_state(s);
  try {
    if (admitted.ca_cert() != hello.ca_cert()) {
      throw refused("the host at " + request.peer() + " handed over another CA than it showed");
    }
    auto tls = ClusterTls::joined({admitted.ca_key(), ca_cert}, admitted.join_secret(),
                                  settings_.name, host_cert_ips(request.address()));
    tls.save(tls_dir());
    set_tls(std::move(tls));
    fs::remove_all(fs::path(settings_.state_dir) / "etcd");
    start_member(admitted.initial_cluster(), false, "", request.address());
    // A learner first (it votes on nothing while it catches up), then a
    // voting member once in sync: the cluster keeps its majority meanwhile.
    std::vector<std::string> peers;
    for (const auto& url : admitted.endpoints()) peers.push_back(url);
    EtcdClient existing(peers, std::chrono::seconds(2), etcd_tls());
    // A new member replays the cluster's log before it is in sync: 15 s for
    // the 7th member of a cluster in the KVM test host.
    constexpr auto kPromoteWithin = std::chrono::seconds(90);
    auto until = std::chrono::steady_clock::now() + kPromoteWithin;
    for (;;) {
      try {
        existing.promote_member(admitted.member_id());
        break;
      } catch (const EtcdError& e) {
        if (std::chrono::steady_clock::now() > until) {
          throw AgentError(AgentError::Code::kUnavailable,
                           "this host's etcd member did not become a voting member in " +
                               std::to_string(kPromoteWithin.count()) + " s: " + e.what());
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    set_etcd(new_etcd_client(endpoints(), settings_.etcd_timeout));
    wait_for_member(std::chrono::seconds(20));
    s.set_joined(true);
    save_state(s);
    take_lease();
  } catch (...) {
    try {
      std::vector<std::string> peers(admitted.endpoints().begin(), admitted.endpoints().end());
      // With this host's certificate, or, when it has none (what the peer
      // handed over was refused), one made for the clean-up.
      ChannelTls cleanup;
      if (tls()) {
        cleanup = etcd_tls();
      } else {
        ClusterTls made;
        made.ca = {admitted.ca_key(), ca_cert};
        made.host = issue_host_cert(made.ca, settings_.name, host_cert_ips(request.address()));
        cleanup = etcd_channel(made);
      }
      EtcdClient existing(peers, std::chrono::seconds(2), cleanup);
      existing.remove_member(admitted.member_id());
      existing.erase(kHostsPrefix + settings_.name);
    } catch (const std::exception& e) {
      log::warning(std::string("could not take this host out of the cluster again (remove it "
                               "with keelctl host remove there): ") +
                   e.what());
    }
    undo_start();
    throw;
  }
  log::info("joined cluster " + s.cluster_id() + " through " + request.peer());
  tell(cluster_event(api::CLUSTER_EVENT_HOST_JOINED, "",
                     "host " + settings_.name + " joined (" + request.address() + ")"));
  serve_address(request.address());
  api::ClusterJoinResponse out;
  out.set_cluster_id(s.cluster_id());
  out.set_hosts(admitted.hosts());
  for (const auto& note : admitted.notes()) out.add_notes(note);
  return out;
}

api::AdmitHostResponse Agent::admit(const api::AdmitHostRequest& request) {
  {
    // Before anything else: a caller without the secret learns nothing
    // and waits for no other join.
    auto own = tls();
    if (!own || !same_secret(request.join_secret(), own->join_secret)) {
      throw AgentError(AgentError::Code::kFailedPrecondition,
                       "refused: the join token's secret is not this cluster's (keelctl cluster "
                       "token on a host of the cluster prints the right one)");
    }
  }
  std::lock_guard membership(membership_);
  require_member();
  const api::Host& host = request.host();
  if (auto problem = host_name_problem(host.name()); !problem.empty()) throw invalid(problem);
  if (auto problem = cluster_address_problem(host.cluster_address()); !problem.empty()) {
    throw invalid(problem);
  }
  return with_quorum([&] {
    auto members = etcd()->members();
    if (members.size() >= kMaxHosts) {
      throw refused("the cluster has " + std::to_string(members.size()) + " hosts, the most it " +
                    "can have");
    }
    for (const auto& m : members) {
      if (m.name.empty()) {
        throw refused("another host's join is unfinished (member " +
                      (m.peer_urls.empty() ? std::string("?") : m.peer_urls[0]) +
                      " never started): wait, or remove it with keelctl host remove");
      }
    }
    for (const auto& kv : etcd()->list(kHostsPrefix)) {
      api::Host existing;
      if (!from_json(kv.value, &existing)) continue;
      if (existing.name() == host.name()) {
        throw refused("a host named '" + host.name() + "' is in the cluster already (address " +
                      existing.cluster_address() + ")");
      }
      if (existing.cluster_address() == host.cluster_address()) {
        throw refused("address " + host.cluster_address() + " is host '" + existing.name() +
                      "''s cluster address already");
      }
    }
    api::Host record = host;
    record.set_joined_at(storage::utc_now());
    etcdserverpb::TxnRequest txn;
    *txn.add_compare() = EtcdClient::key_absent(kHostsPrefix + host.name());
    *txn.add_success() = EtcdClient::put_op(kHostsPrefix + host.name(), to_json(record));
    if (!etcd()->txn(txn).succeeded()) {
      throw refused("a host named '" + host.name() + "' is in the cluster already");
    }
    std::pair<uint64_t, std::vector<Member>> added;
    try {
      // etcd refuses a member change ("unhealthy cluster") until this
      // member has been connected to every voting peer for 5 s: right after
      // the previous join, say. Wait that out.
      auto until = std::chrono::steady_clock::now() + std::chrono::seconds(12);
      for (;;) {
        try {
          added = etcd()->add_member(peer_url(host.cluster_address()), true);
          break;
        } catch (const EtcdError& e) {
          if (std::string(e.what()).find("unhealthy cluster") == std::string::npos ||
              std::chrono::steady_clock::now() > until) {
            throw;
          }
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(250));
      }
    } catch (...) {
      etcd()->erase(kHostsPrefix + host.name());
      throw;
    }
    api::AdmitHostResponse out;
    out.set_cluster_id(state().cluster_id());
    out.set_member_id(added.first);
    std::string initial;
    for (const auto& m : added.second) {
      std::string name = m.id == added.first ? host.name() : m.name;
      for (const auto& url : m.peer_urls) {
        initial += (initial.empty() ? "" : ",") + name + "=" + url;
      }
      if (m.id != added.first) {
        for (const auto& url : m.client_urls) out.add_endpoints(endpoint_of_url(url));
      }
    }
    out.set_initial_cluster(initial);
    auto own = tls();
    out.set_ca_cert(own->ca.cert_pem);
    out.set_ca_key(own->ca.key_pem);
    out.set_join_secret(own->join_secret);
    out.set_hosts(static_cast<uint32_t>(added.second.size()));
    for (auto& note : cluster_notes(added.second.size())) out.add_notes(note);
    log::info("admitted host " + host.name() + " (" + host.cluster_address() + ")");
    return out;
  });
}

api::ClusterTokenResponse Agent::token() const {
  require_member();
  api::ClusterTokenResponse out;
  out.set_join_token(tls()->join_token());
  return out;
}

api::HostRemoveResponse Agent::remove_host(const api::HostRemoveRequest& request) {
  std::lock_guard membership(membership_);
  require_member();
  if (auto problem = host_name_problem(request.name()); !problem.empty()) throw invalid(problem);
  if (request.name() == settings_.name) {
    throw refused("a host cannot remove itself: run keelctl host remove " + request.name() +
                  " on another host of the cluster");
  }
  return with_quorum([&] {
    auto members = etcd()->members();
    auto record = etcd()->get(kHostsPrefix + request.name());
    std::optional<Member> member;
    for (const auto& m : members) {
      if (m.name == request.name()) member = m;
      if (m.name.empty() && record) {
        api::Host host;
        if (from_json(record->value, &host) && !m.peer_urls.empty() &&
            m.peer_urls[0] == peer_url(host.cluster_address())) {
          member = m;
        }
      }
    }
    if (!member && !record) throw refused("no host named '" + request.name() + "' in the cluster");
    // Its pool holds VM disks the cluster still knows: they would be lost.
    std::string stored;
    for (const auto& kv : etcd()->list(kVmsPrefix)) {
      api::ClusterVm vm;
      if (from_json(kv.value, &vm) && vm.storage_host() == request.name()) {
        stored += (stored.empty() ? "" : ", ") + vm.name();
      }
    }
    if (!stored.empty()) {
      throw refused("host '" + request.name() + "' stores the disks of VM(s) " + stored +
                    ": delete them first");
    }
    // The record goes only while the host is not alive, in one
    // transaction: an agent registering meanwhile keeps its host.
    etcdserverpb::TxnRequest txn;
    *txn.add_compare() = EtcdClient::key_absent(kAlivePrefix + request.name());
    *txn.add_success() = EtcdClient::delete_op(kHostsPrefix + request.name());
    if (!etcd()->txn(txn).succeeded()) {
      throw refused("host '" + request.name() + "' is alive (its agent renews its lease): stop " +
                    "its agent first");
    }
    if (member) etcd()->remove_member(member->id);
    log::info("removed host " + request.name());
    auto removed = cluster_event(api::CLUSTER_EVENT_HOST_REMOVED, "",
                                 "host " + request.name() + " removed from the cluster");
    removed.set_peer(request.name());
    tell(std::move(removed));
    api::HostRemoveResponse out;
    size_t left = members.size() - (member ? 1 : 0);
    out.set_hosts(static_cast<uint32_t>(left));
    for (auto& note : cluster_notes(left)) out.add_notes(note);
    return out;
  });
}

api::HostSetAddressResponse Agent::set_address(const api::HostSetAddressRequest& request) {
  std::lock_guard membership(membership_);
  require_member();
  check_own_address(request.address());
  if (!settings_.etcd_endpoints.empty()) {
    throw refused("this agent uses an etcd the operator runs: its member's address is theirs");
  }
  return with_quorum([&] {
    auto members = etcd()->members();
    if (members.size() > 1) {
      throw refused(
          "the cluster address is fixed once a second host has joined (the cluster "
          "has " +
          std::to_string(members.size()) +
          " hosts, whose etcd members and "
          "storage paths reach this host there)");
    }
    api::LocalState s = state();
    if (s.cluster_address() == request.address()) return api::HostSetAddressResponse();
    etcd()->update_member(s.member_id(), peer_url(request.address()));
    // The certificate names the address: the member and the peers check it.
    auto tls = *this->tls();
    tls.reissue(settings_.name, host_cert_ips(request.address()));
    tls.save(tls_dir());
    set_tls(std::move(tls));
    s.set_cluster_address(request.address());
    save_state(s);
    {
      std::unique_ptr<EtcdMember> old;
      {
        std::lock_guard lock(mutex_);
        old = std::move(member_);
      }
    }
    start_member(peer_url_line(settings_.name, request.address()), false, s.cluster_token(),
                 request.address());
    wait_for_member(std::chrono::seconds(20));
    refresh_host_record();
    log::info("this host's cluster address is now " + request.address());
    serve_address(request.address());
    return api::HostSetAddressResponse();
  });
}

}  // namespace keel::cluster
