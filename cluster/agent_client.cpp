#include "cluster/agent_client.h"

#include <grpcpp/grpcpp.h>

#include "proto/agent.grpc.pb.h"

namespace keel::cluster {

namespace api = keel::agent::v1;

struct AgentClient::Stub {
  std::unique_ptr<api::Agent::Stub> stub;
};

bool AgentCallError::unreachable() const {
  return grpc_code_ == grpc::StatusCode::UNAVAILABLE && std::string(what()).find("agent at") == 0;
}

AgentClient::AgentClient(const std::string& address, std::chrono::milliseconds timeout)
    : address_(address), timeout_(timeout), stub_(std::make_unique<Stub>()) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  stub_->stub = api::Agent::NewStub(
      grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args));
}

AgentClient::~AgentClient() = default;

template <class Request, class Response, class Method>
Response AgentClient::call(Method method, const Request& request) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + timeout_);
  Response response;
  grpc::Status status = ((*stub_->stub).*method)(&context, request, &response);
  if (status.ok()) return response;
  std::string message = status.error_message();
  if (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    message = "agent at " + address_ + " did not answer in time";
  } else if (status.error_code() == grpc::StatusCode::UNAVAILABLE &&
             (message.find("failed to connect") != std::string::npos ||
              message.find("Connection refused") != std::string::npos ||
              message.find("Socket closed") != std::string::npos ||
              message.find("connections to all backends failing") != std::string::npos)) {
    message = "agent at " + address_ + " cannot be reached (" + message + ")";
  }
  throw AgentCallError(status.error_code(), message);
}

api::HelloResponse AgentClient::hello() {
  return call<api::HelloRequest, api::HelloResponse>(&api::Agent::Stub::Hello, {});
}
api::ClusterInitResponse AgentClient::init(const api::ClusterInitRequest& r) {
  return call<api::ClusterInitRequest, api::ClusterInitResponse>(&api::Agent::Stub::ClusterInit, r);
}
api::ClusterJoinResponse AgentClient::join(const api::ClusterJoinRequest& r) {
  return call<api::ClusterJoinRequest, api::ClusterJoinResponse>(&api::Agent::Stub::ClusterJoin, r);
}
api::AdmitHostResponse AgentClient::admit(const api::AdmitHostRequest& r) {
  return call<api::AdmitHostRequest, api::AdmitHostResponse>(&api::Agent::Stub::AdmitHost, r);
}
api::ClusterStatusResponse AgentClient::status() {
  return call<api::ClusterStatusRequest, api::ClusterStatusResponse>(
      &api::Agent::Stub::ClusterStatus, {});
}
api::HostRemoveResponse AgentClient::remove_host(const api::HostRemoveRequest& r) {
  return call<api::HostRemoveRequest, api::HostRemoveResponse>(&api::Agent::Stub::HostRemove, r);
}
api::HostSetAddressResponse AgentClient::set_address(const api::HostSetAddressRequest& r) {
  return call<api::HostSetAddressRequest, api::HostSetAddressResponse>(
      &api::Agent::Stub::HostSetAddress, r);
}

}  // namespace keel::cluster
