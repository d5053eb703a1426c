// Keel's NBD server in the test's own process, exporting files by name to
// every client: for tests of keel-vmm's NBD disks that need no pool.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/tcp_endpoint.h"
#include "storage/nbd_server.h"

namespace keel::testing {

class FileCatalog : public storage::NbdCatalog {
 public:
  void add(const std::string& name, const std::string& path, uint64_t size,
           bool read_only = false) {
    exports_[name] = storage::NbdExport{name, path, "", size, read_only, nullptr};
  }
  std::vector<std::string> names_for(const std::string&) const override {
    std::vector<std::string> names;
    for (const auto& [name, e] : exports_) names.push_back(name);
    return names;
  }
  Lookup find(const std::string& name, const std::string&) const override {
    auto it = exports_.find(name);
    if (it == exports_.end()) return {};
    return {Verdict::kOpen, it->second};
  }

 private:
  std::map<std::string, storage::NbdExport> exports_;
};

// Serves on 127.0.0.1 (`port` 0: a free one) until destroyed.
class NbdFileServer {
 public:
  explicit NbdFileServer(std::shared_ptr<FileCatalog> catalog, uint16_t port = 0)
      : server_(std::move(catalog),
                parse_host_port("127.0.0.1:" + std::to_string(port), "test NBD server")),
        thread_([this] { server_.run(); }) {}
  ~NbdFileServer() {
    server_.stop();
    thread_.join();
  }
  NbdFileServer(const NbdFileServer&) = delete;
  NbdFileServer& operator=(const NbdFileServer&) = delete;
  uint16_t port() const { return server_.port(); }
  std::string address(const std::string& name) const {
    return "tcp:127.0.0.1:" + std::to_string(port()) + "/" + name;
  }

 private:
  storage::NbdServer server_;
  std::thread thread_;
};

}  // namespace keel::testing
