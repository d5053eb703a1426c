// What the agent tells the cluster about its host, read off the machine.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace keel::cluster {

// The IPv4 and IPv6 addresses configured on this host's interfaces (in this
// network namespace), numeric.
std::vector<std::string> local_addresses();
bool is_local_address(const std::string& address);
// Whether `address` is a numeric IPv4 or IPv6 address an agent may bind as a
// cluster address: not a wildcard, loopback or multicast one. Empty when it
// may; otherwise why not.
std::string cluster_address_problem(const std::string& address);

uint32_t online_cpus();
uint64_t memory_bytes();

}  // namespace keel::cluster
