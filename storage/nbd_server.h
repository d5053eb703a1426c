// Keel's NBD server: exports files (a pool's VM disks) over TCP with the
// fixed newstyle handshake (NbdServerNegotiation) and simple replies; READ,
// WRITE, FLUSH, TRIM, WRITE_ZEROES with FUA; each connection in a thread of
// its own with many requests in flight on io_uring (RawDisk: the export's
// lock keeps a second writer out), replies in the order they complete.
// Which client may open which export is the catalog's to say.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/tcp_endpoint.h"
#include "common/unique_fd.h"
#include "storage/nbd_negotiation.h"

namespace keel::storage {

struct NbdServerStats {
  std::atomic<uint64_t> connections{0};
  std::atomic<uint64_t> refused{0};  // sessions that ended before an export opened
  std::atomic<uint64_t> requests{0};
};

class NbdServer {
 public:
  // Listens on `listen` (port 0: a free one).
  NbdServer(std::shared_ptr<const NbdCatalog> catalog, const TcpEndpoint& listen);
  // Stops and waits for every connection's thread.
  ~NbdServer();
  NbdServer(const NbdServer&) = delete;
  NbdServer& operator=(const NbdServer&) = delete;

  uint16_t port() const { return port_; }
  // Accepts connections until stop(); each is served by its own thread.
  void run();
  // From any thread (or a signal handler: one write to an eventfd).
  void stop();
  const NbdServerStats& stats() const { return stats_; }

 private:
  void serve(UniqueFd socket, std::string client);

  std::shared_ptr<const NbdCatalog> catalog_;
  UniqueFd listener_;
  UniqueFd stop_;
  uint16_t port_ = 0;
  struct Worker {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  void reap_finished();

  std::mutex threads_mutex_;
  std::vector<Worker> threads_;
  NbdServerStats stats_;
};

}  // namespace keel::storage
