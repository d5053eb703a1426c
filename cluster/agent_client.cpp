#include "cluster/agent_client.h"

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "cluster/kept_channel.h"
#include "proto/agent.grpc.pb.h"

namespace keel::cluster {

namespace api = keel::agent::v1;

struct AgentClient::Stub {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<api::Agent::Stub> stub;
};

AgentClient::AgentClient(const std::string& address, std::chrono::milliseconds timeout)
    : AgentClient(address, timeout, ChannelTls{}) {}

AgentClient::AgentClient(const std::string& address, std::chrono::milliseconds timeout,
                         const ChannelTls& tls)
    : address_(address), timeout_(timeout), stub_(std::make_unique<Stub>()) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  // A long call (a console, a followed event log) notices a peer that went
  // without a word (its host cut off or dead) within seconds.
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, kKeepaliveMs);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, kKeepaliveTimeoutMs);
  stub_->channel = kept_channel("agent", address, tls, args);
  stub_->stub = api::Agent::NewStub(stub_->channel);
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
  bool unreachable = false;
  if (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    message = "agent at " + address_ + " did not answer in time";
  } else if (status.error_code() == grpc::StatusCode::UNAVAILABLE &&
             stub_->channel->GetState(false) != GRPC_CHANNEL_READY) {
    // Not the agent's answer (that comes on a working connection): no
    // connection at all.
    unreachable = true;
    message = "agent at " + address_ + " cannot be reached (" + message + ")";
  }
  throw AgentCallError(status.error_code(), message, unreachable);
}

void AgentClient::host_vm_files(const api::VmFilesRequest& r,
                                const std::function<void(const api::VmFileChunk&)>& each) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + timeout_);
  auto reader = stub_->stub->HostVmFiles(&context, r);
  api::VmFileChunk chunk;
  try {
    while (reader->Read(&chunk)) each(chunk);
  } catch (...) {
    context.TryCancel();
    reader->Finish();
    throw;
  }
  grpc::Status status = reader->Finish();
  if (!status.ok()) {
    throw AgentCallError(status.error_code(),
                         "agent at " + address_ + ": " + status.error_message(),
                         status.error_code() == grpc::StatusCode::UNAVAILABLE);
  }
}

void AgentClient::cluster_events(
    const api::ClusterEventsRequest& r,
    const std::function<bool(const api::ClusterEventsResponse&)>& each) {
  grpc::ClientContext context;
  if (!r.follow()) context.set_deadline(std::chrono::system_clock::now() + timeout_);
  auto reader = stub_->stub->ClusterEvents(&context, r);
  api::ClusterEventsResponse response;
  while (reader->Read(&response)) {
    if (!each(response)) {
      context.TryCancel();
      reader->Finish();
      return;
    }
  }
  grpc::Status status = reader->Finish();
  if (!status.ok()) {
    throw AgentCallError(status.error_code(),
                         "agent at " + address_ + ": " + status.error_message(),
                         status.error_code() == grpc::StatusCode::UNAVAILABLE);
  }
}

struct AgentConsoleCall::Impl {
  std::string address;
  std::shared_ptr<grpc::Channel> channel;
  grpc::ClientContext context;
  std::unique_ptr<grpc::ClientReaderWriter<api::VmConsoleRequest, api::VmConsoleResponse>> stream;
  std::atomic<bool> cancelled{false};
  std::atomic<bool> writes_done{false};
  std::atomic<bool> finished{false};
};

AgentConsoleCall::AgentConsoleCall(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

AgentConsoleCall::~AgentConsoleCall() {
  if (!impl_->finished) {
    impl_->context.TryCancel();
    impl_->stream->Finish();
  }
}

bool AgentConsoleCall::read(api::VmConsoleResponse& response) {
  return impl_->stream->Read(&response);
}

bool AgentConsoleCall::write(const api::VmConsoleRequest& request) {
  return !impl_->writes_done && impl_->stream->Write(request);
}

void AgentConsoleCall::writes_done() {
  if (!impl_->writes_done.exchange(true)) impl_->stream->WritesDone();
}

void AgentConsoleCall::cancel() {
  impl_->cancelled = true;
  impl_->context.TryCancel();
}

void AgentConsoleCall::finish() {
  if (impl_->finished.exchange(true)) return;
  const grpc::Status status = impl_->stream->Finish();
  if (status.ok() || (impl_->cancelled && status.error_code() == grpc::StatusCode::CANCELLED))
    return;
  // UNAVAILABLE on a working connection is the agent's own answer.
  const bool unreachable = status.error_code() == grpc::StatusCode::UNAVAILABLE &&
                           impl_->channel->GetState(false) != GRPC_CHANNEL_READY;
  throw AgentCallError(status.error_code(),
                       "agent at " + impl_->address + ": " + status.error_message(), unreachable);
}

api::VmConsoleResponse AgentConsoleCall::read_attached(std::chrono::milliseconds limit) {
  std::mutex mutex;
  std::condition_variable changed;
  bool answered = false, timed_out = false;
  std::thread watchdog([&] {
    std::unique_lock lock(mutex);
    if (!changed.wait_for(lock, limit, [&] { return answered; })) {
      timed_out = true;
      cancel();
    }
  });
  api::VmConsoleResponse response;
  const bool read = this->read(response);
  {
    std::lock_guard lock(mutex);
    answered = true;
  }
  changed.notify_all();
  watchdog.join();
  if (read && !timed_out) return response;
  if (timed_out) {
    throw AgentCallError(grpc::StatusCode::DEADLINE_EXCEEDED,
                         "agent at " + impl_->address + " did not answer the console's attach in " +
                             std::to_string(limit.count() / 1000) + " s");
  }
  finish();  // the refusal
  throw AgentCallError(grpc::StatusCode::INTERNAL,
                       "agent at " + impl_->address + " ended the console before it attached");
}

namespace {

using ConsoleOpen =
    std::unique_ptr<grpc::ClientReaderWriter<api::VmConsoleRequest, api::VmConsoleResponse>> (
        api::Agent::Stub::*)(grpc::ClientContext*);

}  // namespace

std::unique_ptr<AgentConsoleCall> AgentClient::console_call(bool host) {
  auto impl = std::make_unique<AgentConsoleCall::Impl>();
  impl->address = address_;
  impl->channel = stub_->channel;
  const ConsoleOpen open = host ? &api::Agent::Stub::HostVmConsole : &api::Agent::Stub::VmConsole;
  impl->stream = ((*stub_->stub).*open)(&impl->context);
  return std::make_unique<AgentConsoleCall>(std::move(impl));
}

std::unique_ptr<AgentConsoleCall> AgentClient::vm_console() {
  return console_call(false);
}

std::unique_ptr<AgentConsoleCall> AgentClient::host_vm_console() {
  return console_call(true);
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
api::HostMetricsResponse AgentClient::host_metrics() {
  return call<api::HostMetricsRequest, api::HostMetricsResponse>(&api::Agent::Stub::HostMetrics,
                                                                 {});
}

api::ClusterMetricsResponse AgentClient::cluster_metrics() {
  return call<api::ClusterMetricsRequest, api::ClusterMetricsResponse>(
      &api::Agent::Stub::ClusterMetrics, {});
}

api::ClusterStatusResponse AgentClient::status() {
  return call<api::ClusterStatusRequest, api::ClusterStatusResponse>(
      &api::Agent::Stub::ClusterStatus, {});
}
api::ClusterTokenResponse AgentClient::token() {
  return call<api::ClusterTokenRequest, api::ClusterTokenResponse>(&api::Agent::Stub::ClusterToken,
                                                                   {});
}
api::HostRemoveResponse AgentClient::remove_host(const api::HostRemoveRequest& r) {
  return call<api::HostRemoveRequest, api::HostRemoveResponse>(&api::Agent::Stub::HostRemove, r);
}

api::HostDrainResponse AgentClient::drain_host(const api::HostDrainRequest& r) {
  return call<api::HostDrainRequest, api::HostDrainResponse>(&api::Agent::Stub::HostDrain, r);
}
api::HostSetAddressResponse AgentClient::set_address(const api::HostSetAddressRequest& r) {
  return call<api::HostSetAddressRequest, api::HostSetAddressResponse>(
      &api::Agent::Stub::HostSetAddress, r);
}

api::VmCreateResponse AgentClient::vm_create(const api::VmCreateRequest& r) {
  return call<api::VmCreateRequest, api::VmCreateResponse>(&api::Agent::Stub::VmCreate, r);
}
api::VmStartResponse AgentClient::vm_start(const api::VmStartRequest& r) {
  return call<api::VmStartRequest, api::VmStartResponse>(&api::Agent::Stub::VmStart, r);
}
api::VmStopResponse AgentClient::vm_stop(const api::VmStopRequest& r) {
  return call<api::VmStopRequest, api::VmStopResponse>(&api::Agent::Stub::VmStop, r);
}
api::VmListResponse AgentClient::vm_list(const api::VmListRequest& r) {
  return call<api::VmListRequest, api::VmListResponse>(&api::Agent::Stub::VmList, r);
}
api::VmDeleteResponse AgentClient::vm_delete(const api::VmDeleteRequest& r) {
  return call<api::VmDeleteRequest, api::VmDeleteResponse>(&api::Agent::Stub::VmDelete, r);
}
api::VmCreateResponse AgentClient::host_vm_create(const api::VmCreateRequest& r) {
  return call<api::VmCreateRequest, api::VmCreateResponse>(&api::Agent::Stub::HostVmCreate, r);
}
api::VmStartResponse AgentClient::host_vm_start(const api::VmStartRequest& r) {
  return call<api::VmStartRequest, api::VmStartResponse>(&api::Agent::Stub::HostVmStart, r);
}
api::VmStopResponse AgentClient::host_vm_stop(const api::VmStopRequest& r) {
  return call<api::VmStopRequest, api::VmStopResponse>(&api::Agent::Stub::HostVmStop, r);
}
api::VmDeleteResponse AgentClient::host_vm_delete(const api::VmDeleteRequest& r) {
  return call<api::VmDeleteRequest, api::VmDeleteResponse>(&api::Agent::Stub::HostVmDelete, r);
}

api::VmMigrateResponse AgentClient::vm_migrate(const api::VmMigrateRequest& r) {
  return call<api::VmMigrateRequest, api::VmMigrateResponse>(&api::Agent::Stub::VmMigrate, r);
}
api::VmMigrateResponse AgentClient::host_vm_migrate(const api::VmMigrateRequest& r) {
  return call<api::VmMigrateRequest, api::VmMigrateResponse>(&api::Agent::Stub::HostVmMigrate, r);
}
api::VmStatus AgentClient::host_vm_status(const api::VmStatusRequest& r) {
  return call<api::VmStatusRequest, api::VmStatus>(&api::Agent::Stub::HostVmStatus, r);
}
api::VmHaResponse AgentClient::vm_ha(const api::VmHaRequest& r) {
  return call<api::VmHaRequest, api::VmHaResponse>(&api::Agent::Stub::VmHa, r);
}
api::VmHaResponse AgentClient::host_vm_ha(const api::VmHaRequest& r) {
  return call<api::VmHaRequest, api::VmHaResponse>(&api::Agent::Stub::HostVmHa, r);
}
api::VmReplicaResponse AgentClient::host_vm_replica(const api::VmReplicaRequest& r) {
  return call<api::VmReplicaRequest, api::VmReplicaResponse>(&api::Agent::Stub::HostVmReplica, r);
}
api::VmIncomingResponse AgentClient::host_vm_incoming(const api::VmIncomingRequest& r) {
  return call<api::VmIncomingRequest, api::VmIncomingResponse>(&api::Agent::Stub::HostVmIncoming,
                                                               r);
}

}  // namespace keel::cluster
