#include "cluster/host_facts.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <sys/sysinfo.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "common/error.h"

namespace keel::cluster {

std::vector<std::string> local_addresses() {
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) throw_errno("getifaddrs");
  std::vector<std::string> out;
  for (ifaddrs* a = list; a != nullptr; a = a->ifa_next) {
    if (a->ifa_addr == nullptr) continue;
    char text[INET6_ADDRSTRLEN] = {};
    if (a->ifa_addr->sa_family == AF_INET) {
      auto* in = reinterpret_cast<sockaddr_in*>(a->ifa_addr);
      ::inet_ntop(AF_INET, &in->sin_addr, text, sizeof text);
    } else if (a->ifa_addr->sa_family == AF_INET6) {
      auto* in6 = reinterpret_cast<sockaddr_in6*>(a->ifa_addr);
      ::inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof text);
    } else {
      continue;
    }
    out.emplace_back(text);
  }
  ::freeifaddrs(list);
  return out;
}

bool is_local_address(const std::string& address) {
  auto all = local_addresses();
  return std::find(all.begin(), all.end(), address) != all.end();
}

std::string cluster_address_problem(const std::string& address) {
  in_addr v4{};
  in6_addr v6{};
  if (::inet_pton(AF_INET, address.c_str(), &v4) == 1) {
    uint32_t host = ntohl(v4.s_addr);
    if (host == 0) return "the wildcard address 0.0.0.0 cannot be a host's cluster address";
    if ((host >> 24) == 127) return "a loopback address cannot be a host's cluster address";
    if ((host >> 28) == 0xe) return "a multicast address cannot be a host's cluster address";
    if (host == 0xffffffff) return "the broadcast address cannot be a host's cluster address";
    return {};
  }
  if (::inet_pton(AF_INET6, address.c_str(), &v6) == 1) {
    if (IN6_IS_ADDR_UNSPECIFIED(&v6)) return "the wildcard address :: cannot be a cluster address";
    if (IN6_IS_ADDR_LOOPBACK(&v6)) return "a loopback address cannot be a host's cluster address";
    if (IN6_IS_ADDR_MULTICAST(&v6)) return "a multicast address cannot be a host's cluster address";
    if (IN6_IS_ADDR_LINKLOCAL(&v6)) {
      return "a link-local IPv6 address cannot be a cluster address (it needs an interface)";
    }
    return {};
  }
  return "'" + address + "' is not a numeric IPv4 or IPv6 address";
}

uint32_t online_cpus() {
  long n = ::sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? static_cast<uint32_t>(n) : 1;
}

uint64_t memory_bytes() {
  struct sysinfo info {};
  if (::sysinfo(&info) != 0) throw_errno("sysinfo");
  return static_cast<uint64_t>(info.totalram) * info.mem_unit;
}

}  // namespace keel::cluster
