#include "cluster/cluster_keys.h"

#include <google/protobuf/util/json_util.h>

#include "cluster/etcd_member.h"

namespace keel::cluster {

std::string to_json(const google::protobuf::Message& record) {
  std::string out;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  auto status = google::protobuf::util::MessageToJsonString(record, &out, options);
  if (!status.ok()) throw std::runtime_error("cannot encode a cluster record as JSON");
  return out;
}

bool from_json(const std::string& json, google::protobuf::Message* record) {
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = true;  // written by a newer agent
  if (google::protobuf::util::JsonStringToMessage(json, record, options).ok()) return true;
  record->Clear();
  return false;
}

std::string host_name_problem(const std::string& name) {
  if (name.empty()) return "a host name must not be empty";
  if (name.size() > 63) return "host name '" + name + "' is longer than 63 characters";
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (c == '-' && i > 0);
    if (!ok) {
      return "host name '" + name +
             "' may hold only a-z, 0-9 and '-' (not first), like a DNS label";
    }
  }
  return {};
}

std::string peer_url_line(const std::string& name, const std::string& address) {
  return name + "=" + peer_url(address);
}

std::string host_port(const std::string& address, int port) {
  const bool v6 = address.find(':') != std::string::npos;
  return (v6 ? "[" + address + "]" : address) + ":" + std::to_string(port);
}

}  // namespace keel::cluster
