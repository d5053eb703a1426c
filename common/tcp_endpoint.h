// TCP addresses as operators write them, "ADDR:PORT" or "tcp:ADDR:PORT"
// (ADDR a numeric IPv4 address, or an IPv6 one in brackets; no names, so
// nothing here waits on a resolver), and the sockets for them: a
// migration's stream, an NBD server and its clients.
#pragma once

#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>

#include "common/unique_fd.h"

namespace keel {

struct TcpEndpoint {
  sockaddr_storage address{};
  socklen_t length = 0;
  std::string text;  // as given
};

// "ADDR:PORT". Throws InputError naming `what` and what is wrong.
TcpEndpoint parse_host_port(const std::string& text, const std::string& what);
// "tcp:ADDR:PORT" (a migration's address).
TcpEndpoint parse_tcp_endpoint(const std::string& uri, const std::string& what);
// "ADDR:PORT", IPv6 in brackets.
std::string describe_address(const sockaddr_storage& address);

// Connected, TCP_NODELAY; InputError saying who refused or did not answer
// within `timeout`.
UniqueFd connect_tcp(const TcpEndpoint& endpoint, std::chrono::milliseconds timeout);
// Listening (SO_REUSEADDR); InputError when the address cannot be bound.
UniqueFd listen_tcp(const TcpEndpoint& endpoint, int backlog = 1);
// The port a listening socket got (the endpoint may say 0).
uint16_t local_port(int fd);
// One connection from `listener` (TCP_NODELAY); waits until one comes or
// `stop` turns true (then an invalid fd), checking it at least every 250 ms.
UniqueFd accept_tcp(int listener, const std::atomic<bool>& stop, std::string* peer);

}  // namespace keel
