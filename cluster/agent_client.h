// A client of keel-agent's API (proto/agent.proto) for keelctl and for the
// agents themselves, each call bounded by a deadline. A refusal comes back
// as AgentCallError with the agent's gRPC code and message.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>

#include "proto/agent.pb.h"

namespace keel::cluster {

class AgentCallError : public std::runtime_error {
 public:
  AgentCallError(int grpc_code, const std::string& message, bool unreachable = false)
      : std::runtime_error(message), grpc_code_(grpc_code), unreachable_(unreachable) {}
  int grpc_code() const { return grpc_code_; }
  // No connection to the agent could be made.
  bool unreachable() const { return unreachable_; }

 private:
  int grpc_code_;
  bool unreachable_;
};

struct ChannelTls;

// Pings on an agent connection while a call is under way: every 10 s, and
// a peer silent 5 s after one is gone (AgentServer allows them).
inline constexpr int kKeepaliveMs = 10000;
inline constexpr int kKeepaliveTimeoutMs = 5000;

// A console call through the agents (VmConsole, HostVmConsole): one thread
// may read while another writes. Ends (cancelled) when destroyed.
class AgentConsoleCall {
 public:
  struct Impl;
  explicit AgentConsoleCall(std::unique_ptr<Impl> impl);
  ~AgentConsoleCall();
  AgentConsoleCall(const AgentConsoleCall&) = delete;
  AgentConsoleCall& operator=(const AgentConsoleCall&) = delete;

  // Blocks for the next response; false at the call's end.
  bool read(keel::agent::v1::VmConsoleResponse& response);
  // The attach's answer: read() bounded by `limit` (the call is cancelled
  // after it); AgentCallError when the call ended without one.
  keel::agent::v1::VmConsoleResponse read_attached(std::chrono::milliseconds limit);
  // Blocks while the agent does not take more (the guest reads slowly);
  // false once the call ended.
  bool write(const keel::agent::v1::VmConsoleRequest& request);
  void writes_done();
  // Ends the call: a read or write blocked returns false.
  void cancel();
  // Once read returned false: AgentCallError unless the call ended well
  // (or by cancel()).
  void finish();

 private:
  std::unique_ptr<Impl> impl_;
};

class AgentClient {
 public:
  // `address`: "unix:PATH" (the agent's own socket, plaintext), or ADDR:PORT
  // (an IPv6 address in brackets) with `tls` (cluster/cluster_tls.h).
  AgentClient(const std::string& address, std::chrono::milliseconds timeout);
  AgentClient(const std::string& address, std::chrono::milliseconds timeout, const ChannelTls& tls);
  ~AgentClient();
  AgentClient(const AgentClient&) = delete;
  AgentClient& operator=(const AgentClient&) = delete;

  keel::agent::v1::HelloResponse hello();
  keel::agent::v1::ClusterInitResponse init(const keel::agent::v1::ClusterInitRequest& r);
  keel::agent::v1::ClusterJoinResponse join(const keel::agent::v1::ClusterJoinRequest& r);
  keel::agent::v1::AdmitHostResponse admit(const keel::agent::v1::AdmitHostRequest& r);
  keel::agent::v1::ClusterStatusResponse status();
  keel::agent::v1::HostMetricsResponse host_metrics();
  keel::agent::v1::ClusterMetricsResponse cluster_metrics();
  keel::agent::v1::ClusterTokenResponse token();
  keel::agent::v1::HostRemoveResponse remove_host(const keel::agent::v1::HostRemoveRequest& r);
  keel::agent::v1::HostDrainResponse drain_host(const keel::agent::v1::HostDrainRequest& r);
  keel::agent::v1::HostSetAddressResponse set_address(
      const keel::agent::v1::HostSetAddressRequest& r);
  keel::agent::v1::VmCreateResponse vm_create(const keel::agent::v1::VmCreateRequest& r);
  keel::agent::v1::VmStartResponse vm_start(const keel::agent::v1::VmStartRequest& r);
  keel::agent::v1::VmStopResponse vm_stop(const keel::agent::v1::VmStopRequest& r);
  keel::agent::v1::VmListResponse vm_list(const keel::agent::v1::VmListRequest& r);
  keel::agent::v1::VmDeleteResponse vm_delete(const keel::agent::v1::VmDeleteRequest& r);
  keel::agent::v1::VmCreateResponse host_vm_create(const keel::agent::v1::VmCreateRequest& r);
  keel::agent::v1::VmStartResponse host_vm_start(const keel::agent::v1::VmStartRequest& r);
  keel::agent::v1::VmStopResponse host_vm_stop(const keel::agent::v1::VmStopRequest& r);
  keel::agent::v1::VmDeleteResponse host_vm_delete(const keel::agent::v1::VmDeleteRequest& r);
  keel::agent::v1::VmMigrateResponse vm_migrate(const keel::agent::v1::VmMigrateRequest& r);
  keel::agent::v1::VmMigrateResponse host_vm_migrate(const keel::agent::v1::VmMigrateRequest& r);
  keel::agent::v1::VmIncomingResponse host_vm_incoming(const keel::agent::v1::VmIncomingRequest& r);
  keel::agent::v1::VmStatus host_vm_status(const keel::agent::v1::VmStatusRequest& r);
  keel::agent::v1::VmHaResponse vm_ha(const keel::agent::v1::VmHaRequest& r);
  keel::agent::v1::VmHaResponse host_vm_ha(const keel::agent::v1::VmHaRequest& r);
  keel::agent::v1::VmReplicaResponse host_vm_replica(const keel::agent::v1::VmReplicaRequest& r);
  // Calls `each` with every chunk the storage host sends.
  void host_vm_files(const keel::agent::v1::VmFilesRequest& r,
                     const std::function<void(const keel::agent::v1::VmFileChunk&)>& each);

  // keelctl events: `each` gets every response; with follow, no deadline
  // (the stream lasts until the agent ends it or `each` returns false).
  void cluster_events(
      const keel::agent::v1::ClusterEventsRequest& r,
      const std::function<bool(const keel::agent::v1::ClusterEventsResponse&)>& each);

  // keelctl vm console, and the agent's relay to the VM's host.
  std::unique_ptr<AgentConsoleCall> vm_console();
  std::unique_ptr<AgentConsoleCall> host_vm_console();

  struct Stub;

 private:
  template <class Request, class Response, class Method>
  Response call(Method method, const Request& request);
  std::unique_ptr<AgentConsoleCall> console_call(bool host);

  std::string address_;
  std::chrono::milliseconds timeout_;
  std::unique_ptr<Stub> stub_;
};

}  // namespace keel::cluster
