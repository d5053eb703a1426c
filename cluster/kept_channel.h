// Channels to the other hosts' agents and etcd members kept between calls.
// A new channel pays a TCP connect and a TLS handshake (100-300 ms in the
// KVM test host) before its first call: every forwarded operation and every
// probe of the members paid that each time.
#pragma once

#include <memory>
#include <string>

#include "cluster/cluster_tls.h"

namespace keel::cluster {

// The channel to `target` with `tls` made for `use` (which names `args`: one
// use, one set of arguments), made on first need and kept for the process's
// life. Channels without a checked server (plaintext, or a join's first
// look) are not kept: a new one each time.
std::shared_ptr<grpc::Channel> kept_channel(const std::string& use, const std::string& target,
                                            const ChannelTls& tls,
                                            const grpc::ChannelArguments& args);

}  // namespace keel::cluster
