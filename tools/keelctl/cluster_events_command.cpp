#include "tools/keelctl/cluster_events_command.h"

#include <google/protobuf/util/json_util.h>
#include <grpcpp/grpcpp.h>

#include <cctype>
#include <chrono>
#include <cstdio>
#include <iostream>

#include "cluster/agent_client.h"
#include "tools/keelctl/events_command.h"
#include "tools/keelctl/exit_codes.h"

namespace keel {

namespace agent_api = ::keel::agent::v1;

namespace {

std::string describe(const agent_api::ClusterEventsResponse& r) {
  const agent_api::ClusterEvent& e = r.event();
  std::string line;
  if (r.missed() != 0) line += "-- " + std::to_string(r.missed()) + " events no longer kept --\n";
  // A VMM's own event: "vmm-" and its type ("vmm-paused").
  const std::string type =
      e.type() == agent_api::CLUSTER_EVENT_VM_MACHINE
          ? "vmm-" + type_words(keel::api::v1::EventType_Name(e.machine().type()), "EVENT_TYPE_")
          : type_words(agent_api::ClusterEventType_Name(e.type()), "CLUSTER_EVENT_");
  line +=
      std::to_string(e.seq()) + "  " + utc_time(e.time_unix_ns()) + "  " + e.host() + "  " + type;
  if (!e.vm().empty()) line += "  vm=" + e.vm();
  if (!e.peer().empty()) line += "  peer=" + e.peer();
  if (e.duration_us() != 0) line += took_text(e.duration_us());
  if (!e.detail().empty()) line += "  " + e.detail();
  return line + "\n";
}

}  // namespace

int print_cluster_events(const std::string& agent, bool json, bool follow,
                         std::optional<uint64_t> since) {
  agent_api::ClusterEventsRequest request;
  request.set_after_seq(since.value_or(0));
  request.set_follow(follow);
  bool streaming = false;
  try {
    cluster::AgentClient client(agent, std::chrono::seconds(30));
    client.cluster_events(request, [&](const agent_api::ClusterEventsResponse& r) {
      streaming = true;
      if (json) {
        std::string text;
        google::protobuf::util::JsonPrintOptions options;
        (void)google::protobuf::util::MessageToJsonString(r, &text, options);
        std::cout << text << "\n";
      } else {
        std::cout << describe(r);
      }
      std::cout << std::flush;
      return static_cast<bool>(std::cout);
    });
  } catch (const cluster::AgentCallError& e) {
    std::cerr << "keelctl: events: " << e.what() << "\n";
    // As the other commands: 3 no connection, 4 no answer in time or a
    // stream that broke once it had begun, 1 refused.
    if (e.unreachable() && !streaming) return kNoConnection;
    if (e.grpc_code() == grpc::StatusCode::DEADLINE_EXCEEDED || streaming) return kNoAnswer;
    return kRefused;
  }
  return kDone;
}

}  // namespace keel
