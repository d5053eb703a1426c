#include "cluster/agent.h"

#include <google/protobuf/util/json_util.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <future>
#include <optional>
#include <random>
#include <thread>

#include "cluster/cluster_keys.h"
#include "cluster/etcd_member.h"
#include "cluster/host_facts.h"
#include "cluster/host_lease.h"
#include "cluster/host_vms.h"
#include "common/error.h"
#include "common/log.h"
#include "storage/json_record.h"
#include "storage/pool.h"

namespace keel::cluster {

namespace api = keel::agent::v1;
namespace fs = std::filesystem;

namespace {

std::string state_path(const AgentSettings& s) {
  return (fs::path(s.state_dir) / "agent.json").string();
}

AgentError not_in_cluster() {
  return refused("this host is not in a cluster: keelctl cluster init, or cluster join");
}

std::string etcd_dir(const AgentSettings& s) {
  return (fs::path(s.state_dir) / "etcd").string();
}

}  // namespace

Agent::Agent(AgentSettings settings) : settings_(std::move(settings)) {
  if (auto problem = host_name_problem(settings_.name); !problem.empty()) {
    throw InputError("--name: " + problem);
  }
  fs::create_directories(settings_.state_dir);
  ::chmod(settings_.state_dir.c_str(), 0700);
  if (fs::exists(state_path(settings_))) {
    storage::read_json_record(state_path(settings_), &state_);
    if (state_.name() != settings_.name) {
      throw InputError("state directory " + settings_.state_dir + " belongs to host '" +
                       state_.name() + "', not '" + settings_.name + "'");
    }
  }
  state_.set_name(settings_.name);
  events_ = std::make_unique<ClusterEventTeller>(settings_.name, [this] { return etcd(); });
  HostVmsContext vms;
  vms.host = settings_.name;
  vms.fence_file = (fs::path(settings_.state_dir) / "fence").string();
  vms.vms_dir = (fs::path(settings_.state_dir) / "vms").string();
  vms.etcd = [this] { return etcd(); };
  vms.lease = [this]() -> int64_t {
    std::lock_guard lock(mutex_);
    return lease_ ? lease_->lease_id() : 0;
  };
  vms.fenced = [this] { return fenced(); };
  vms.peer_tls = [this] { return peer_tls(); };
  vms.pool_min_free = settings_.pool_min_free;
  vms.tell = [this](api::ClusterEvent event) { tell(std::move(event)); };
  vms.report_health = [this](const std::string& unhealthy) {
    {
      std::lock_guard lock(mutex_);
      unhealthy_ = unhealthy;
    }
    refresh_host_record();
  };
  std::optional<storage::VmStore> store;
  if (!settings_.pool.empty()) store.emplace(storage::Pool::open(settings_.pool));
  vms_ = std::make_unique<HostVms>(vms, std::move(store));
  if (!state_.joined()) {
    if (!state_.cluster_address().empty()) {
      log::warning("an init or join of this host did not finish (address " +
                   state_.cluster_address() + "); the host is in no cluster");
      fs::remove_all(fs::path(settings_.state_dir) / "tls");
      state_.Clear();
      state_.set_name(settings_.name);
    }
    return;
  }
  if (!is_local_address(state_.cluster_address())) {
    // A host's cluster address is fixed: the other members reach its etcd
    // there. Serving a cluster from elsewhere would split it.
    address_problem_ = "this host's cluster address " + state_.cluster_address() +
                       " is on none of its interfaces: put it back on one and restart the "
                       "agent (the address is how the other hosts reach this one)";
    log::error(address_problem_);
    return;
  }
  try {
    tls_ = ClusterTls::load(tls_dir());
  } catch (const InputError& e) {
    address_problem_ = std::string("this host's TLS material is damaged: ") + e.what();
  }
  if (!tls_ && address_problem_.empty()) {
    address_problem_ = tls_dir() +
                       " holds no certificate of the cluster (the host joined "
                       "with a keel-agent before TLS): remove it from the cluster (keelctl host "
                       "remove " +
                       settings_.name + " on another host), empty " + settings_.state_dir +
                       " and join again";
  }
  if (!address_problem_.empty()) {
    log::error(address_problem_);
    return;
  }
  if (settings_.etcd_endpoints.empty()) {
    start_member(peer_url_line(settings_.name, state_.cluster_address()), false,
                 state_.cluster_token(), state_.cluster_address());
  }
  set_etcd(new_etcd_client(endpoints(), settings_.etcd_timeout));
  registrar_ = std::thread([this] { register_until_done(); });
}

Agent::~Agent() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  stop_.notify_all();
  if (registrar_.joinable()) registrar_.join();
  // The lease first (its thread calls into vms_ at each renewal); the
  // keeper meanwhile sees no lease and does nothing.
  std::unique_ptr<HostLease> lease;
  {
    std::lock_guard lock(mutex_);
    lease = std::move(lease_);
  }
  lease.reset();
  vms_.reset();
  // The teller's last events go while etcd and its client still stand.
  events_.reset();
  member_.reset();
}

void Agent::on_cluster_address(std::function<void(const std::string&)> listen) {
  std::string address;
  {
    std::lock_guard lock(mutex_);
    listen_ = std::move(listen);
    if (state_.joined() && address_problem_.empty()) address = state_.cluster_address();
  }
  if (!address.empty()) serve_address(address);
}

void Agent::serve_address(const std::string& address) {
  if (listen_) listen_(address);
  try {
    vms_->serve_nbd(address);
  } catch (const std::exception& e) {
    log::error("cannot serve the pool's disks over NBD: " + std::string(e.what()));
  }
}

std::string Agent::tls_dir() const {
  return (fs::path(settings_.state_dir) / "tls").string();
}

std::optional<ClusterTls> Agent::tls() const {
  std::lock_guard lock(mutex_);
  return tls_;
}

void Agent::set_tls(std::optional<ClusterTls> tls) {
  std::lock_guard lock(mutex_);
  tls_ = std::move(tls);
}

ChannelTls Agent::peer_tls() const {
  std::lock_guard lock(mutex_);
  if (!tls_) throw not_in_cluster();
  return peer_channel(*tls_);
}

ChannelTls Agent::etcd_tls() const {
  // An etcd the operator runs is reached as they set it up: plaintext.
  if (!settings_.etcd_endpoints.empty()) return {};
  std::lock_guard lock(mutex_);
  if (!tls_) throw not_in_cluster();
  return etcd_channel(*tls_);
}

std::shared_ptr<EtcdClient> Agent::new_etcd_client(const std::vector<std::string>& endpoints,
                                                   std::chrono::milliseconds timeout) const {
  return std::make_shared<EtcdClient>(endpoints, timeout, etcd_tls());
}

std::vector<std::string> Agent::endpoints() const {
  if (!settings_.etcd_endpoints.empty()) return settings_.etcd_endpoints;
  return {"127.0.0.1:" + std::to_string(kEtcdClientPort)};
}

std::vector<std::string> Agent::lease_endpoints() {
  auto out = endpoints();
  if (!settings_.etcd_endpoints.empty()) return out;
  // This host's member first, then the other voting members: the lease
  // lives in the cluster, and any member renews it, so the death of the
  // local member alone (the agent starts it again) pauses no VM.
  try {
    for (const auto& member : etcd()->members()) {
      if (member.learner || member.name == settings_.name) continue;
      for (const auto& url : member.client_urls) out.push_back(endpoint_of_url(url));
    }
  } catch (const EtcdError& e) {
    log::info(std::string("the lease is renewed through this host's etcd member only: ") +
              e.what());
  }
  return out;
}

api::LocalState Agent::state() const {
  std::lock_guard lock(mutex_);
  return state_;
}

void Agent::save_state(api::LocalState state) {
  std::lock_guard file(state_file_);
  {
    std::lock_guard lock(mutex_);
    state.set_lease_id(state_.lease_id());
  }
  storage::write_json_record(state_path(settings_), state);
  std::lock_guard lock(mutex_);
  state_ = state;
}

std::shared_ptr<EtcdClient> Agent::etcd() const {
  std::lock_guard lock(mutex_);
  if (!etcd_) throw not_in_cluster();
  return etcd_;
}

void Agent::set_etcd(std::shared_ptr<EtcdClient> client) {
  std::lock_guard lock(mutex_);
  etcd_ = std::move(client);
}

bool Agent::fenced() const {
  std::lock_guard lock(mutex_);
  return lease_ && lease_->fenced();
}

api::Host Agent::this_host(const std::string& cluster_address) const {
  api::Host host;
  host.set_name(settings_.name);
  host.set_cluster_address(cluster_address);
  host.set_management_address(settings_.management_address);
  for (auto role : settings_.roles) host.add_roles(role);
  host.set_cpus(online_cpus());
  host.set_memory_bytes(memory_bytes());
  host.set_pool(settings_.pool);
  host.set_joined_at(storage::utc_now());
  std::lock_guard lock(mutex_);
  host.set_unhealthy(unhealthy_);
  return host;
}

void Agent::start_member(const std::string& initial_cluster, bool new_cluster,
                         const std::string& token, const std::string& address) {
  EtcdMemberSettings member;
  member.name = settings_.name;
  member.address = address;
  member.data_dir = etcd_dir(settings_);
  member.initial_cluster = initial_cluster;
  member.new_cluster = new_cluster;
  member.cluster_token = token;
  member.log_file = (fs::path(settings_.state_dir) / "etcd.log").string();
  member.etcd_binary = settings_.etcd_binary;
  member.tls_dir = tls_dir();
  auto started = std::make_unique<EtcdMember>(member);
  std::lock_guard lock(mutex_);
  member_ = std::move(started);
}

void Agent::wait_for_member(std::chrono::milliseconds limit) {
  auto until = std::chrono::steady_clock::now() + limit;
  std::string last = "no answer";
  while (std::chrono::steady_clock::now() < until) {
    try {
      auto status = etcd()->status();
      if (status.leader() != 0) return;
      last = "no leader elected yet";
    } catch (const EtcdError& e) {
      last = e.what();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  throw AgentError(AgentError::Code::kUnavailable,
                   "this host's etcd member is not serving after " +
                       std::to_string(limit.count() / 1000) + " s (" + last +
                       "); its log: " + (fs::path(settings_.state_dir) / "etcd.log").string());
}

void Agent::take_lease() {
  HostLeaseSettings lease;
  lease.host = settings_.name;
  lease.ttl_s = settings_.lease_ttl_s;
  api::Alive alive;
  alive.set_agent_pid(static_cast<uint32_t>(::getpid()));
  alive.set_since(storage::utc_now());
  alive.set_lease_ttl_s(settings_.lease_ttl_s);
  lease.alive_record = to_json(alive);
  lease.fence_file = (fs::path(settings_.state_dir) / "fence").string();
  lease.resume_lease = state().lease_id();
  HostLease::Callbacks callbacks;
  callbacks.fenced = [this] {
    // The VMMs pause themselves at the deadline (--fence-file); HostLease
    // logs the fence. The cluster's log hears of it once it is over (a
    // fenced host cannot reach the majority).
    fenced_since_ns_ = std::chrono::steady_clock::now().time_since_epoch().count();
  };
  callbacks.renewed = [this](bool same_lease) {
    if (!same_lease) remember_lease();
    if (const int64_t since = fenced_since_ns_.exchange(0); since != 0) {
      const auto fenced_for = std::chrono::steady_clock::now().time_since_epoch() -
                              std::chrono::steady_clock::duration(since);
      auto told = cluster_event(api::CLUSTER_EVENT_HOST_FENCED, "",
                                "host " + settings_.name +
                                    " was fenced (its VMs paused) until its lease was renewed" +
                                    (same_lease ? "" : " (a new lease: the old one had expired)"));
      told.set_duration_us(static_cast<uint64_t>(
          std::chrono::duration_cast<std::chrono::microseconds>(fenced_for).count()));
      tell(std::move(told));
    }
    vms_->poke();
  };
  auto taken = std::make_unique<HostLease>(lease_endpoints(), etcd_tls(), lease, callbacks);
  {
    std::lock_guard lock(mutex_);
    std::swap(lease_, taken);
  }
  taken.reset();  // a former one, outside the lock: its thread may want it
  remember_lease();
  vms_->begin();
}

void Agent::remember_lease() {
  std::lock_guard file(state_file_);
  api::LocalState s;
  {
    std::lock_guard lock(mutex_);
    if (!lease_ || state_.lease_id() == lease_->lease_id()) return;
    s = state_;
    s.set_lease_id(lease_->lease_id());
  }
  storage::write_json_record(state_path(settings_), s);
  std::lock_guard lock(mutex_);
  state_ = s;
}

void Agent::register_until_done() {
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    lock.unlock();
    try {
      take_lease();
      refresh_host_record();
      log::info("host " + settings_.name + " is registered in cluster " + state().cluster_id());
      return;
    } catch (const EtcdError& e) {
      log::info(std::string("waiting for a majority to register this host: ") + e.what());
    } catch (const std::exception& e) {
      log::error(std::string("cannot register this host (trying again): ") + e.what());
    }
    lock.lock();
    stop_.wait_for(lock, std::chrono::seconds(1), [this] { return stopping_; });
  }
}

void Agent::refresh_host_record() {
  // On the record as read: an operator's `host drain` meanwhile is kept,
  // not written over (tried again on the new record).
  for (int attempt = 0; attempt < 10; ++attempt) {
    auto current = etcd()->get(kHostsPrefix + settings_.name);
    api::Host host = this_host(state().cluster_address());
    etcdserverpb::TxnRequest txn;
    if (current) {
      api::Host old;
      if (from_json(current->value, &old)) {
        host.set_joined_at(old.joined_at());
        host.set_drained(old.drained());  // the operator's, until host undrain
      }
      *txn.add_compare() =
          EtcdClient::key_mod_revision(kHostsPrefix + settings_.name, current->mod_revision);
    } else {
      *txn.add_compare() = EtcdClient::key_absent(kHostsPrefix + settings_.name);
    }
    *txn.add_success() = EtcdClient::put_op(kHostsPrefix + settings_.name, to_json(host));
    if (etcd()->txn(txn).succeeded()) return;
  }
  throw std::runtime_error("host " + settings_.name + "'s record kept changing while refreshed");
}

void Agent::require_member() const {
  std::lock_guard lock(mutex_);
  if (!address_problem_.empty()) throw refused(address_problem_);
  if (!state_.joined()) {
    throw not_in_cluster();
  }
}

api::HelloResponse Agent::hello() const {
  auto s = state();
  api::HelloResponse out;
  out.set_name(settings_.name);
  if (s.joined()) {
    out.set_cluster_id(s.cluster_id());
    out.set_cluster_address(s.cluster_address());
  }
  out.set_version("keel-agent 1");
  std::lock_guard lock(mutex_);
  if (tls_ && s.joined()) out.set_ca_cert(tls_->ca.cert_pem);
  if (lease_) {
    out.set_fenced(lease_->fenced());
    out.set_last_fenced_unix_ms(lease_->last_fenced_unix_ms());
    out.set_lease_renewed_ms_ago(lease_->since_renewal().count());
    out.set_lease_id(lease_->lease_id());
  }
  return out;
}

}  // namespace keel::cluster
