// The Agent's part of the cluster's event log (cluster/cluster_event_log.h):
// what this host tells, and keelctl events' reads and follows.
#include <stdexcept>

#include "cluster/agent.h"
#include "cluster/agent_error.h"

namespace keel::cluster {

namespace api = ::keel::agent::v1;

void Agent::tell(api::ClusterEvent event) {
  events_->tell(std::move(event));
}

void Agent::cluster_events(const api::ClusterEventsRequest& request,
                           const std::function<bool(const api::ClusterEventsResponse&)>& each,
                           const std::function<bool()>& stop) {
  require_member();
  with_quorum([&] {
    try {
      ClusterEventLog(etcd()).read(
          request.after_seq(), request.from_now(), request.follow(),
          [&](const ClusterEventLog::Told& told) {
            api::ClusterEventsResponse response;
            *response.mutable_event() = told.event;
            response.set_missed(told.missed);
            return each(response);
          },
          stop);
    } catch (const std::invalid_argument& e) {
      throw invalid(e.what());
    }
  });
}

}  // namespace keel::cluster
