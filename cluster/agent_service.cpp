#include "cluster/agent_service.h"

#include <grpcpp/grpcpp.h>

#include <filesystem>

#include "cluster/agent_client.h"
#include "cluster/cluster_tls.h"
#include "common/error.h"
#include "common/log.h"
#include "proto/agent.grpc.pb.h"

namespace keel::cluster {

namespace api = keel::agent::v1;

namespace {

grpc::Status status_of(const AgentError& e) {
  switch (e.code()) {
    case AgentError::Code::kInvalidArgument:
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, e.what());
    case AgentError::Code::kFailedPrecondition:
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, e.what());
    case AgentError::Code::kUnavailable:
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, e.what());
    case AgentError::Code::kInternal:
      break;
  }
  return grpc::Status(grpc::StatusCode::INTERNAL, e.what());
}

// Every operation: its answer, or the refusal as a status with one line.
template <class F>
grpc::Status answer(const char* what, F f) {
  try {
    f();
    return grpc::Status::OK;
  } catch (const AgentError& e) {
    log::info(std::string(what) + " refused: " + e.what());
    return status_of(e);
  } catch (const InputError& e) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, e.what());
  } catch (const std::exception& e) {
    log::error(std::string(what) + " failed: " + e.what());
    return grpc::Status(grpc::StatusCode::INTERNAL, std::string(what) + " failed: " + e.what());
  }
}

using ConsoleIo = grpc::ServerReaderWriter<api::VmConsoleResponse, api::VmConsoleRequest>;

Agent::ConsoleStream console_stream(grpc::ServerContext* context, ConsoleIo* io) {
  return {[io](api::VmConsoleRequest& r) { return io->Read(&r); },
          [io](const api::VmConsoleResponse& r) { return io->Write(r); },
          [context] { return context->IsCancelled(); }, [context] { context->TryCancel(); }};
}

class Service final : public api::Agent::Service {
 public:
  Service(Agent& agent, bool peers_only) : agent_(agent), peers_only_(peers_only) {}

  grpc::Status Hello(grpc::ServerContext*, const api::HelloRequest*,
                     api::HelloResponse* out) override {
    return answer("hello", [&] { *out = agent_.hello(); });
  }
  grpc::Status ClusterInit(grpc::ServerContext* context, const api::ClusterInitRequest* in,
                           api::ClusterInitResponse* out) override {
    if (auto refused = allow(context, kOperators); !refused.ok()) return refused;
    return answer("cluster init", [&] { *out = agent_.init(*in); });
  }
  grpc::Status ClusterJoin(grpc::ServerContext* context, const api::ClusterJoinRequest* in,
                           api::ClusterJoinResponse* out) override {
    if (auto refused = allow(context, kOperators); !refused.ok()) return refused;
    return answer("cluster join", [&] { *out = agent_.join(*in); });
  }
  // Open on the peer port: the joining host has no certificate yet; the
  // join secret it sends is checked instead.
  grpc::Status AdmitHost(grpc::ServerContext*, const api::AdmitHostRequest* in,
                         api::AdmitHostResponse* out) override {
    return answer("admit host", [&] { *out = agent_.admit(*in); });
  }
  grpc::Status ClusterToken(grpc::ServerContext* context, const api::ClusterTokenRequest*,
                            api::ClusterTokenResponse* out) override {
    if (auto refused = allow(context, kOperators); !refused.ok()) return refused;
    return answer("cluster token", [&] { *out = agent_.token(); });
  }
  grpc::Status ClusterStatus(grpc::ServerContext* context, const api::ClusterStatusRequest*,
                             api::ClusterStatusResponse* out) override {
    if (auto refused = allow(context, kHosts); !refused.ok()) return refused;
    return answer("cluster status", [&] { *out = agent_.status(); });
  }
  grpc::Status ClusterMetrics(grpc::ServerContext* context, const api::ClusterMetricsRequest*,
                              api::ClusterMetricsResponse* out) override {
    if (auto refused = allow(context, kOperators); !refused.ok()) return refused;
    return answer("cluster metrics", [&] { *out = agent_.cluster_metrics(); });
  }
  grpc::Status HostMetrics(grpc::ServerContext* context, const api::HostMetricsRequest*,
                           api::HostMetricsResponse* out) override {
    if (auto refused = allow(context, kHosts); !refused.ok()) return refused;
    return answer("host metrics", [&] { *out = agent_.host_metrics(); });
  }
  grpc::Status ClusterEvents(grpc::ServerContext* context, const api::ClusterEventsRequest* in,
                             grpc::ServerWriter<api::ClusterEventsResponse>* out) override {
    if (auto refused = allow(context, kOperators); !refused.ok()) return refused;
    return answer("cluster events", [&] {
      agent_.cluster_events(
          *in, [&](const api::ClusterEventsResponse& r) { return out->Write(r); },
          [&] { return context->IsCancelled(); });
    });
  }
  grpc::Status HostRemove(grpc::ServerContext* context, const api::HostRemoveRequest* in,
                          api::HostRemoveResponse* out) override {
    if (auto refused = allow(context, kOperators); !refused.ok()) return refused;
    return answer("host remove", [&] { *out = agent_.remove_host(*in); });
  }
  grpc::Status HostDrain(grpc::ServerContext* context, const api::HostDrainRequest* in,
                         api::HostDrainResponse* out) override {
    if (auto refused = allow(context, kOperators); !refused.ok()) return refused;
    return answer("host drain", [&] { *out = agent_.drain_host(*in); });
  }
  grpc::Status HostSetAddress(grpc::ServerContext* context, const api::HostSetAddressRequest* in,
                              api::HostSetAddressResponse* out) override {
    if (auto refused = allow(context, kOperators); !refused.ok()) return refused;
    return answer("host set-address", [&] { *out = agent_.set_address(*in); });
  }

  grpc::Status VmCreate(grpc::ServerContext* context, const api::VmCreateRequest* in,
                        api::VmCreateResponse* out) override {
    if (auto refused = allow(context, kOperators); !refused.ok()) return refused;
    return answer("vm create", [&] { *out = agent_.vm_create(*in); });
  }
  grpc::Status VmStart(grpc::ServerContext* context, const api::VmStartRequest* in,
                       api::VmStartResponse* out) override {
    if (auto refused = allow(context, kOperators); !refused.ok()) return refused;
    return answer("vm start", [&] { *out = agent_.vm_start(*in); });
  }
  grpc::Status VmStop(grpc::ServerContext* context, const api::VmStopRequest* in,
                      api::VmStopResponse* out) override {
    if (auto refused = allow(context, kOperators); !refused.ok()) return refused;
    return answer("vm stop", [&] { *out = agent_.vm_stop(*in); });
  }
  grpc::Status VmList(grpc::ServerContext* context, const api::VmListRequest* in,
                      api::VmListResponse* out) override {
    if (auto refused = allow(context, kOperators); !refused.ok()) return refused;
    return answer("vm list", [&] { *out = agent_.vm_list(*in); });
  }
  grpc::Status VmDelete(grpc::ServerContext* context, const api::VmDeleteRequest* in,
                        api::VmDeleteResponse* out) override {
    if (auto refused = allow(context, kOperators); !refused.ok()) return refused;
    return answer("vm delete", [&] { *out = agent_.vm_delete(*in); });
  }
  grpc::Status VmConsole(grpc::ServerContext* context, ConsoleIo* io) override {
    if (auto refused = allow(context, kOperators); !refused.ok()) return refused;
    return answer("vm console", [&] { agent_.vm_console(console_stream(context, io)); });
  }
  grpc::Status HostVmConsole(grpc::ServerContext* context, ConsoleIo* io) override {
    if (auto refused = allow(context, kHosts); !refused.ok()) return refused;
    return answer("host vm console", [&] { agent_.host_vm_console(console_stream(context, io)); });
  }
  grpc::Status HostVmCreate(grpc::ServerContext* context, const api::VmCreateRequest* in,
                            api::VmCreateResponse* out) override {
    if (auto refused = allow(context, kHosts); !refused.ok()) return refused;
    return answer("host vm create", [&] { *out = agent_.host_vm_create(*in); });
  }
  grpc::Status HostVmStart(grpc::ServerContext* context, const api::VmStartRequest* in,
                           api::VmStartResponse* out) override {
    if (auto refused = allow(context, kHosts); !refused.ok()) return refused;
    return answer("host vm start", [&] { *out = agent_.host_vm_start(*in); });
  }
  grpc::Status HostVmStop(grpc::ServerContext* context, const api::VmStopRequest* in,
                          api::VmStopResponse* out) override {
    if (auto refused = allow(context, kHosts); !refused.ok()) return refused;
    return answer("host vm stop", [&] { *out = agent_.host_vm_stop(*in); });
  }
  grpc::Status HostVmDelete(grpc::ServerContext* context, const api::VmDeleteRequest* in,
                            api::VmDeleteResponse* out) override {
    if (auto refused = allow(context, kHosts); !refused.ok()) return refused;
    return answer("host vm delete", [&] { *out = agent_.host_vm_delete(*in); });
  }

  grpc::Status VmMigrate(grpc::ServerContext* context, const api::VmMigrateRequest* in,
                         api::VmMigrateResponse* out) override {
    if (auto refused = allow(context, kOperators); !refused.ok()) return refused;
    return answer("vm migrate", [&] { *out = agent_.vm_migrate(*in); });
  }
  grpc::Status HostVmMigrate(grpc::ServerContext* context, const api::VmMigrateRequest* in,
                             api::VmMigrateResponse* out) override {
    if (auto refused = allow(context, kHosts); !refused.ok()) return refused;
    return answer("host vm migrate", [&] { *out = agent_.host_vm_migrate(*in); });
  }
  grpc::Status HostVmIncoming(grpc::ServerContext* context, const api::VmIncomingRequest* in,
                              api::VmIncomingResponse* out) override {
    if (auto refused = allow(context, kHosts); !refused.ok()) return refused;
    return answer("host vm incoming", [&] { *out = agent_.host_vm_incoming(*in); });
  }
  grpc::Status HostVmStatus(grpc::ServerContext* context, const api::VmStatusRequest* in,
                            api::VmStatus* out) override {
    if (auto refused = allow(context, kHosts); !refused.ok()) return refused;
    return answer("host vm status", [&] { *out = agent_.host_vm_status(*in); });
  }
  grpc::Status VmHa(grpc::ServerContext* context, const api::VmHaRequest* in,
                    api::VmHaResponse* out) override {
    if (auto refused = allow(context, kOperators); !refused.ok()) return refused;
    return answer("vm ha", [&] { *out = agent_.vm_ha(*in); });
  }
  grpc::Status HostVmHa(grpc::ServerContext* context, const api::VmHaRequest* in,
                        api::VmHaResponse* out) override {
    if (auto refused = allow(context, kHosts); !refused.ok()) return refused;
    return answer("host vm ha", [&] { *out = agent_.host_vm_ha(*in); });
  }
  grpc::Status HostVmReplica(grpc::ServerContext* context, const api::VmReplicaRequest* in,
                             api::VmReplicaResponse* out) override {
    if (auto refused = allow(context, kHosts); !refused.ok()) return refused;
    return answer("host vm replica", [&] { *out = agent_.host_vm_replica(*in); });
  }
  grpc::Status HostVmFiles(grpc::ServerContext* context, const api::VmFilesRequest* in,
                           grpc::ServerWriter<api::VmFileChunk>* out) override {
    if (auto refused = allow(context, kHosts); !refused.ok()) return refused;
    return answer("host vm files", [&] {
      agent_.host_vm_files(*in, [&](const api::VmFileChunk& chunk) {
        return !context->IsCancelled() && out->Write(chunk);
      });
    });
  }

 private:
  enum Access { kHosts, kOperators };
  // On the peer port, operators' calls are refused, and the other hosts'
  // need a certificate of the cluster (the TLS handshake checked it was
  // the cluster CA's when one was presented).
  grpc::Status allow(grpc::ServerContext* context, Access access) const {
    if (!peers_only_) return grpc::Status::OK;
    if (access == kOperators) {
      return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                          "only on the agent's own socket (keelctl on that host)");
    }
    auto auth = context->auth_context();
    if (!auth || !auth->IsPeerAuthenticated()) {
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                          "only for the cluster's hosts: no certificate of the cluster's CA");
    }
    return grpc::Status::OK;
  }
  Agent& agent_;
  bool peers_only_;
};

}  // namespace

struct AgentServer::Impl {
  Impl(Agent& agent, bool peers_only) : service(agent, peers_only) {}
  Service service;
  std::unique_ptr<grpc::Server> server;
};

AgentServer::AgentServer(Agent& agent, const std::string& address, Serves serves)
    : address_(address), impl_(std::make_unique<Impl>(agent, serves == kPeersOnly)) {
  grpc::ServerBuilder builder;
  int port = 0;
  const bool unix_socket = address.rfind("unix:", 0) == 0;
  if (serves == kPeersOnly) {
    auto tls = agent.tls();
    if (!tls) throw std::logic_error("the peer API is served only with the cluster's TLS");
    builder.AddListeningPort(address, peer_server_credentials(*tls), &port);
  } else {
    if (!unix_socket) throw std::logic_error("the operators' API is served on a Unix socket");
    // A socket left by an agent that died: in the agent's own directory.
    std::error_code ignored;
    const std::filesystem::path path = address.substr(5);
    if (std::filesystem::is_socket(path, ignored)) std::filesystem::remove(path, ignored);
    builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &port);
  }
  builder.RegisterService(&impl_->service);
  // The clients' pings (cluster/agent_client.h), and the server's own on
  // a long call, so that a caller gone without a word ends its call.
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
                             kKeepaliveMs / 2);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, kKeepaliveMs);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, kKeepaliveTimeoutMs);
  // Requests are small; a peer or client sending more is refused early.
  builder.SetMaxReceiveMessageSize(1 << 20);
  impl_->server = builder.BuildAndStart();
  if (!impl_->server || (port == 0 && !unix_socket)) {
    throw InputError("cannot listen on " + address + " (in use, or not an address of this host)");
  }
}

AgentServer::~AgentServer() {
  impl_->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
}

}  // namespace keel::cluster
