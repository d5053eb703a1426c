// One NBD client's session on the server: the handshake, then requests
// until the client disconnects, the connection breaks or `stop_fd` turns
// readable. Runs on the calling thread.
#pragma once

#include <string>

#include "storage/nbd_negotiation.h"
#include "storage/nbd_server.h"

namespace keel::storage {

void serve_nbd_connection(int socket, const std::string& client, const NbdCatalog& catalog,
                          int stop_fd, NbdServerStats& stats);

}  // namespace keel::storage
