// Keel's records in etcd (cluster/cluster_keys.h) read back: a record that
// is not Keel's is an internal error, never taken for absent.
#pragma once

#include <optional>
#include <string>

#include "cluster/agent_error.h"
#include "cluster/cluster_keys.h"
#include "cluster/etcd_client.h"
#include "proto/agent.pb.h"

namespace keel::cluster {

// The record at `key` (linearizable), its mod revision in `revision`;
// nullopt when there is none.
template <class Record>
std::optional<Record> read_record(EtcdClient& etcd, const std::string& key, int64_t* revision) {
  auto kv = etcd.get(key);
  if (!kv) return std::nullopt;
  Record record;
  if (!from_json(kv->value, &record)) {
    throw AgentError(AgentError::Code::kInternal, "etcd's " + key + " is not a record of Keel's");
  }
  if (revision) *revision = kv->mod_revision;
  return record;
}

// Why `host`, as its record says, may keep no replica: drained by the
// operator, or unhealthy by its agent's word; "" when it may.
inline std::string keeps_no_replica(const keel::agent::v1::Host& host) {
  if (host.drained()) return drained_host(host.name());
  if (!host.unhealthy().empty())
    return "host " + host.name() + " is unhealthy: " + host.unhealthy();
  return "";
}

}  // namespace keel::cluster
