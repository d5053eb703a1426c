#include "cluster/agent_service.h"

#include <grpcpp/grpcpp.h>

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

class Service final : public api::Agent::Service {
 public:
  explicit Service(Agent& agent) : agent_(agent) {}

  grpc::Status Hello(grpc::ServerContext*, const api::HelloRequest*,
                     api::HelloResponse* out) override {
    return answer("hello", [&] { *out = agent_.hello(); });
  }
  grpc::Status ClusterInit(grpc::ServerContext*, const api::ClusterInitRequest* in,
                           api::ClusterInitResponse* out) override {
    return answer("cluster init", [&] { *out = agent_.init(*in); });
  }
  grpc::Status ClusterJoin(grpc::ServerContext*, const api::ClusterJoinRequest* in,
                           api::ClusterJoinResponse* out) override {
    return answer("cluster join", [&] { *out = agent_.join(*in); });
  }
  grpc::Status AdmitHost(grpc::ServerContext*, const api::AdmitHostRequest* in,
                         api::AdmitHostResponse* out) override {
    return answer("admit host", [&] { *out = agent_.admit(*in); });
  }
  grpc::Status ClusterStatus(grpc::ServerContext*, const api::ClusterStatusRequest*,
                             api::ClusterStatusResponse* out) override {
    return answer("cluster status", [&] { *out = agent_.status(); });
  }
  grpc::Status HostRemove(grpc::ServerContext*, const api::HostRemoveRequest* in,
                          api::HostRemoveResponse* out) override {
    return answer("host remove", [&] { *out = agent_.remove_host(*in); });
  }
  grpc::Status HostSetAddress(grpc::ServerContext*, const api::HostSetAddressRequest* in,
                              api::HostSetAddressResponse* out) override {
    return answer("host set-address", [&] { *out = agent_.set_address(*in); });
  }

 private:
  Agent& agent_;
};

}  // namespace

struct AgentServer::Impl {
  explicit Impl(Agent& agent) : service(agent) {}
  Service service;
  std::unique_ptr<grpc::Server> server;
};

AgentServer::AgentServer(Agent& agent, const std::string& address)
    : address_(address), impl_(std::make_unique<Impl>(agent)) {
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(address, grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&impl_->service);
  // Requests are small; a peer or client sending more is refused early.
  builder.SetMaxReceiveMessageSize(1 << 20);
  impl_->server = builder.BuildAndStart();
  if (!impl_->server || port == 0) {
    throw InputError("cannot listen on " + address + " (in use, or not an address of this host)");
  }
}

AgentServer::~AgentServer() {
  impl_->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
}

}  // namespace keel::cluster
