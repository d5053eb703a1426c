#include "cluster/etcd_client.h"

#include <grpcpp/grpcpp.h>

#include <limits>

#include "cluster/kept_channel.h"
#include "proto/etcd_rpc.grpc.pb.h"

namespace keel::cluster {

namespace pb = etcdserverpb;

struct EtcdClient::Stubs {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<pb::KV::Stub> kv;
  std::unique_ptr<pb::Lease::Stub> lease;
  std::unique_ptr<pb::Watch::Stub> watch;
  std::unique_ptr<pb::Cluster::Stub> cluster;
  std::unique_ptr<pb::Maintenance::Stub> maintenance;
};

namespace {

bool means_unavailable(const grpc::Status& status) {
  switch (status.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:        // no leader, timed out, not connected
    case grpc::StatusCode::DEADLINE_EXCEEDED:  // ours
      return true;
    default:
      return false;
  }
}

void check(const grpc::Status& status, const char* what) {
  if (status.ok()) return;
  std::string message = status.error_message();
  if (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) message = "no answer in time";
  throw EtcdError(status.error_code(), std::string("etcd ") + what + ": " + message,
                  means_unavailable(status));
}

Member member_of(const pb::Member& m) {
  Member out;
  out.id = m.id();
  out.name = m.name();
  out.peer_urls.assign(m.peerurls().begin(), m.peerurls().end());
  out.client_urls.assign(m.clienturls().begin(), m.clienturls().end());
  out.learner = m.islearner();
  return out;
}

std::vector<Member> members_of(const google::protobuf::RepeatedPtrField<pb::Member>& list) {
  std::vector<Member> out;
  for (const auto& m : list) out.push_back(member_of(m));
  return out;
}

KeyValue key_value_of(const mvccpb::KeyValue& kv) {
  return KeyValue{kv.key(),          kv.value(),   kv.create_revision(),
                  kv.mod_revision(), kv.version(), kv.lease()};
}

}  // namespace

std::string endpoint_of_url(const std::string& url) {
  auto scheme = url.find("://");
  std::string rest = scheme == std::string::npos ? url : url.substr(scheme + 3);
  auto slash = rest.find('/');
  return slash == std::string::npos ? rest : rest.substr(0, slash);
}

std::string prefix_range_end(const std::string& prefix) {
  std::string end = prefix;
  while (!end.empty()) {
    if (static_cast<unsigned char>(end.back()) < 0xff) {
      end.back() = static_cast<char>(end.back() + 1);
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');  // every key
}

EtcdClient::EtcdClient(const std::vector<std::string>& endpoints, std::chrono::milliseconds timeout,
                       const ChannelTls& tls)
    : timeout_(timeout), stubs_(std::make_unique<Stubs>()) {
  // gRPC takes one address family per target: that of the first endpoint
  // (a cluster's addresses are all of one family).
  const bool v6 = !endpoints.empty() && endpoints[0].find('[') != std::string::npos;
  std::string target = v6 ? "ipv6:" : "ipv4:";
  bool first = true;
  for (const auto& endpoint : endpoints) {
    if ((endpoint.find('[') != std::string::npos) != v6) continue;
    target += (first ? "" : ",") + endpoint;
    first = false;
  }
  grpc::ChannelArguments args;
  // Reconnect fast after a member comes back: the default backoff grows to
  // 2 minutes, far beyond a lease.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  // gRPC takes this as the least time a connection attempt is given (TCP,
  // TLS handshake, HTTP/2 settings): 100 ms failed every TLS handshake on
  // a loaded host (the KVM test host's emulated CPUs take 100-300 ms); an
  // attempt to a member cut off still gives up within it.
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 2000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 2000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 1000);
  // A connection kept for when it is needed (HostLease's spare members)
  // stays up without calls.
  args.SetInt(GRPC_ARG_CLIENT_IDLE_TIMEOUT_MS, std::numeric_limits<int>::max());
  stubs_->channel = kept_channel("etcd", target, tls, args);
  stubs_->kv = pb::KV::NewStub(stubs_->channel);
  stubs_->lease = pb::Lease::NewStub(stubs_->channel);
  stubs_->watch = pb::Watch::NewStub(stubs_->channel);
  stubs_->cluster = pb::Cluster::NewStub(stubs_->channel);
  stubs_->maintenance = pb::Maintenance::NewStub(stubs_->channel);
}

EtcdClient::~EtcdClient() = default;

void EtcdClient::connect() {
  stubs_->channel->GetState(true);
}

namespace {
// Every call: a deadline, and "hasleader" so that a member without a leader
// refuses at once instead of letting the request wait for one.
// (A serializable read is what the member has: it needs no leader.)
void prepare(grpc::ClientContext& context, std::chrono::milliseconds timeout,
             bool need_leader = true) {
  context.set_deadline(std::chrono::system_clock::now() + timeout);
  if (need_leader) context.AddMetadata("hasleader", "true");
  context.set_wait_for_ready(false);
}
}  // namespace

std::optional<KeyValue> EtcdClient::get(const std::string& key, Read read) {
  grpc::ClientContext context;
  prepare(context, timeout_, read == Read::kLinearizable);
  pb::RangeRequest request;
  request.set_key(key);
  request.set_serializable(read == Read::kSerializable);
  pb::RangeResponse response;
  check(stubs_->kv->Range(&context, request, &response), "get");
  if (response.kvs_size() == 0) return std::nullopt;
  return key_value_of(response.kvs(0));
}

std::vector<KeyValue> EtcdClient::list(const std::string& prefix, Read read) {
  return range(prefix, prefix_range_end(prefix), read).kvs;
}

void EtcdClient::put(const std::string& key, const std::string& value, int64_t lease) {
  grpc::ClientContext context;
  prepare(context, timeout_);
  pb::PutRequest request;
  request.set_key(key);
  request.set_value(value);
  request.set_lease(lease);
  pb::PutResponse response;
  check(stubs_->kv->Put(&context, request, &response), "put");
}

int64_t EtcdClient::erase(const std::string& key) {
  grpc::ClientContext context;
  prepare(context, timeout_);
  pb::DeleteRangeRequest request;
  request.set_key(key);
  pb::DeleteRangeResponse response;
  check(stubs_->kv->DeleteRange(&context, request, &response), "delete");
  return response.deleted();
}

pb::TxnResponse EtcdClient::txn(const pb::TxnRequest& request) {
  grpc::ClientContext context;
  prepare(context, timeout_);
  pb::TxnResponse response;
  check(stubs_->kv->Txn(&context, request, &response), "transaction");
  return response;
}

int64_t EtcdClient::grant_lease(int64_t ttl_s) {
  grpc::ClientContext context;
  prepare(context, timeout_);
  pb::LeaseGrantRequest request;
  request.set_ttl(ttl_s);
  pb::LeaseGrantResponse response;
  check(stubs_->lease->LeaseGrant(&context, request, &response), "lease grant");
  if (!response.error().empty()) {
    throw EtcdError(grpc::StatusCode::UNKNOWN, "etcd lease grant: " + response.error(), false);
  }
  return response.id();
}

EtcdClient::Range EtcdClient::range(const std::string& from, const std::string& end, Read read) {
  grpc::ClientContext context;
  prepare(context, timeout_, read == Read::kLinearizable);
  pb::RangeRequest request;
  request.set_key(from);
  request.set_range_end(end);
  request.set_serializable(read == Read::kSerializable);
  pb::RangeResponse response;
  check(stubs_->kv->Range(&context, request, &response), "range");
  Range out;
  out.revision = response.header().revision();
  for (const auto& kv : response.kvs()) out.kvs.push_back(key_value_of(kv));
  return out;
}

void EtcdClient::watch(const std::string& from, const std::string& end, int64_t start_revision,
                       std::chrono::milliseconds limit,
                       const std::function<bool(const KeyValue&)>& each) {
  grpc::ClientContext context;
  prepare(context, limit);
  auto stream = stubs_->watch->Watch(&context);
  pb::WatchRequest request;
  auto* create = request.mutable_create_request();
  create->set_key(from);
  create->set_range_end(end);
  create->set_start_revision(start_revision);
  if (stream->Write(request)) {
    pb::WatchResponse response;
    while (stream->Read(&response)) {
      if (response.compact_revision() > 0) {
        context.TryCancel();
        stream->Finish();
        throw EtcdError(grpc::StatusCode::OUT_OF_RANGE,
                        "etcd watch: revision " + std::to_string(start_revision) +
                            " was compacted (the oldest kept is " +
                            std::to_string(response.compact_revision()) + ")",
                        false);
      }
      if (response.canceled()) {
        context.TryCancel();
        stream->Finish();
        throw EtcdError(grpc::StatusCode::UNKNOWN,
                        "etcd watch cancelled: " + response.cancel_reason(), false);
      }
      for (const auto& event : response.events()) {
        if (event.type() != mvccpb::Event::PUT) continue;
        if (!each(key_value_of(event.kv()))) {
          context.TryCancel();
          stream->Finish();
          return;
        }
      }
    }
  }
  grpc::Status status = stream->Finish();
  // The limit reached is the normal end of a watch that saw nothing more.
  if (!status.ok() && status.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED) {
    check(status, "watch");
  }
}

int64_t EtcdClient::keep_alive(int64_t lease) {
  grpc::ClientContext context;
  prepare(context, timeout_);
  auto stream = stubs_->lease->LeaseKeepAlive(&context);
  pb::LeaseKeepAliveRequest request;
  request.set_id(lease);
  pb::LeaseKeepAliveResponse response;
  bool answered = stream->Write(request) && stream->Read(&response);
  stream->WritesDone();
  grpc::Status status = stream->Finish();
  if (!answered) {
    check(status.ok() ? grpc::Status(grpc::StatusCode::UNAVAILABLE, "the stream ended") : status,
          "lease keep-alive");
  }
  return response.ttl();
}

void EtcdClient::revoke_lease(int64_t lease) {
  grpc::ClientContext context;
  prepare(context, timeout_);
  pb::LeaseRevokeRequest request;
  request.set_id(lease);
  pb::LeaseRevokeResponse response;
  check(stubs_->lease->LeaseRevoke(&context, request, &response), "lease revoke");
}

std::vector<Member> EtcdClient::members() {
  grpc::ClientContext context;
  // A member answers the list from what it knows, leader or not: the
  // agent needs it most when there is no majority.
  context.set_deadline(std::chrono::system_clock::now() + timeout_);
  pb::MemberListResponse response;
  check(stubs_->cluster->MemberList(&context, pb::MemberListRequest(), &response), "member list");
  return members_of(response.members());
}

std::pair<uint64_t, std::vector<Member>> EtcdClient::add_member(const std::string& peer_url,
                                                                bool learner) {
  grpc::ClientContext context;
  prepare(context, timeout_);
  pb::MemberAddRequest request;
  request.add_peerurls(peer_url);
  request.set_islearner(learner);
  pb::MemberAddResponse response;
  check(stubs_->cluster->MemberAdd(&context, request, &response), "member add");
  return {response.member().id(), members_of(response.members())};
}

void EtcdClient::remove_member(uint64_t id) {
  grpc::ClientContext context;
  prepare(context, timeout_);
  pb::MemberRemoveRequest request;
  request.set_id(id);
  pb::MemberRemoveResponse response;
  check(stubs_->cluster->MemberRemove(&context, request, &response), "member remove");
}

void EtcdClient::update_member(uint64_t id, const std::string& peer_url) {
  grpc::ClientContext context;
  prepare(context, timeout_);
  pb::MemberUpdateRequest request;
  request.set_id(id);
  request.add_peerurls(peer_url);
  pb::MemberUpdateResponse response;
  check(stubs_->cluster->MemberUpdate(&context, request, &response), "member update");
}

void EtcdClient::promote_member(uint64_t id) {
  grpc::ClientContext context;
  prepare(context, timeout_);
  pb::MemberPromoteRequest request;
  request.set_id(id);
  pb::MemberPromoteResponse response;
  check(stubs_->cluster->MemberPromote(&context, request, &response), "member promote");
}

pb::StatusResponse EtcdClient::status() {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + timeout_);
  pb::StatusResponse response;
  check(stubs_->maintenance->Status(&context, pb::StatusRequest(), &response), "status");
  return response;
}

pb::Compare EtcdClient::key_absent(const std::string& key) {
  return key_version(key, 0);
}

pb::Compare EtcdClient::key_version(const std::string& key, int64_t version) {
  pb::Compare compare;
  compare.set_key(key);
  compare.set_target(pb::Compare::VERSION);
  compare.set_result(pb::Compare::EQUAL);
  compare.set_version(version);
  return compare;
}

pb::Compare EtcdClient::key_mod_revision(const std::string& key, int64_t revision) {
  pb::Compare compare;
  compare.set_key(key);
  compare.set_target(pb::Compare::MOD);
  compare.set_result(pb::Compare::EQUAL);
  compare.set_mod_revision(revision);
  return compare;
}

pb::RequestOp EtcdClient::put_op(const std::string& key, const std::string& value, int64_t lease) {
  pb::RequestOp op;
  auto* put = op.mutable_request_put();
  put->set_key(key);
  put->set_value(value);
  put->set_lease(lease);
  return op;
}

pb::RequestOp EtcdClient::delete_op(const std::string& key) {
  pb::RequestOp op;
  op.mutable_request_delete_range()->set_key(key);
  return op;
}

}  // namespace keel::cluster
