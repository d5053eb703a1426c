// Where a migration stream goes: "tcp:ADDR:PORT" (ADDR a numeric IPv4
// address, or an IPv6 one in brackets; no names, so nothing here waits on
// a resolver), and the sockets for it.
#pragma once

#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>

#include "common/unique_fd.h"

namespace keel::migration {

struct TcpEndpoint {
  sockaddr_storage address{};
  socklen_t length = 0;
  std::string text;  // "tcp:ADDR:PORT" as given
};

// Throws InputError naming what is wrong with `uri`.
TcpEndpoint parse_tcp_endpoint(const std::string& uri);

// Connected, TCP_NODELAY; InputError saying who refused or did not answer
// within `timeout`.
UniqueFd connect_tcp(const TcpEndpoint& endpoint, std::chrono::milliseconds timeout);
// Listening (SO_REUSEADDR); InputError when the address cannot be bound.
UniqueFd listen_tcp(const TcpEndpoint& endpoint);
// The port a listening socket got (the endpoint may say 0).
uint16_t local_port(int fd);
// One connection from `listener` (TCP_NODELAY); waits until one comes or
// `stop` turns true (then an invalid fd), checking it at least every 250 ms.
UniqueFd accept_tcp(int listener, const std::atomic<bool>& stop, std::string* peer);

}  // namespace keel::migration
