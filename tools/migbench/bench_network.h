// The benchmark's own network, for --net: this process moves into a fresh
// network namespace (so do the VMMs it starts, and everything goes with the
// namespace when it exits) holding a bridge with the host's address and two
// taps on it, one for each side of a migration, so the guest keeps its
// address and the bridge learns its new port from the destination's
// announcement.
#pragma once

#include <string>

namespace keel::migbench {

inline const std::string kBridgeAddress = "10.0.3.1";
inline const std::string kGuestAddress = "10.0.3.2";
inline const std::string kGuestMac = "52:54:00:4b:4d:42";
inline const std::string kSourceTap = "kmb-src";
inline const std::string kDestinationTap = "kmb-dst";
inline constexpr unsigned kEchoPort = 7;

// Call before any thread starts. Throws std::runtime_error saying which
// step failed (unshare needs CAP_SYS_ADMIN; the taps, /dev/net/tun).
void enter_bench_network();

}  // namespace keel::migbench
