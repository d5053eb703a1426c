// Where the agents keep the cluster's state in etcd, and the records' form:
// each value is the proto/agent.proto message as JSON (what `etcdctl get`
// shows an operator).
#pragma once

#include <google/protobuf/message.h>

#include <string>

namespace keel::cluster {

// The agents' API on each host's cluster address.
inline constexpr int kAgentPort = 7400;

inline const std::string kClusterKey = "/keel/cluster";  // Cluster
inline const std::string kHostsPrefix = "/keel/hosts/";  // + NAME: Host
inline const std::string kAlivePrefix = "/keel/alive/";  // + NAME: Alive, on the host's lease
inline const std::string kVmsPrefix = "/keel/vms/";      // + NAME: ClusterVm
// + NAME: Owner, on the owner host's lease
inline const std::string kOwnersPrefix = "/keel/owners/";
// + NAME: Owner (the destination, at the source's generation), on the
// destination host's lease while a live migration brings the VM there: no
// other host may take the VM meanwhile, even when the source's lease (and
// with it the owner record) expires after the guest was handed over.
inline const std::string kIncomingPrefix = "/keel/incoming/";
// + NAME: Replica, on the passive host's lease while it keeps the VM's
// replica (high availability).
inline const std::string kReplicasPrefix = "/keel/replicas/";

std::string to_json(const google::protobuf::Message& record);
// False (and `record` cleared) when `json` is not the record.
bool from_json(const std::string& json, google::protobuf::Message* record);

// Empty when `name` may name a host (1 to 63 of a-z, 0-9 and '-', starting
// with a letter or digit: it is also its etcd member's name); else why not.
std::string host_name_problem(const std::string& name);

// ADDR:PORT, an IPv6 address in brackets.
std::string host_port(const std::string& address, int port);

// etcd's --initial-cluster entry for one member: NAME=https://ADDR:2380.
std::string peer_url_line(const std::string& name, const std::string& address);

}  // namespace keel::cluster
