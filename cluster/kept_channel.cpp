#include "cluster/kept_channel.h"

#include <grpcpp/grpcpp.h>

#include <map>
#include <mutex>

namespace keel::cluster {

std::shared_ptr<grpc::Channel> kept_channel(const std::string& use, const std::string& target,
                                            const ChannelTls& tls,
                                            const grpc::ChannelArguments& args) {
  if (!tls.enabled || tls.ca_cert.empty()) return new_channel(target, tls, args);
  // The certificates are part of the key: a host's reissued certificate
  // (a new address) gets new channels. A few per peer at most.
  static std::mutex mutex;
  static std::map<std::string, std::shared_ptr<grpc::Channel>> kept;
  const std::string key =
      use + '\n' + target + '\n' + tls.server_name + '\n' + tls.ca_cert + '\n' + tls.cert;
  std::lock_guard lock(mutex);
  auto& channel = kept[key];
  if (!channel) channel = new_channel(target, tls, args);
  return channel;
}

}  // namespace keel::cluster
