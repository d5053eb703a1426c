// keel-agent: one per host. Membership of the cluster and quorum through
// etcd (its own member by default), the host's lease, and the API keelctl
// and the other agents call (proto/agent.proto).
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <iostream>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>

#include "cluster/agent.h"
#include "cluster/agent_service.h"
#include "cluster/metrics_endpoint.h"
#include "common/error.h"
#include "common/log.h"
#include "common/size_parse.h"
#include "control/prometheus_text.h"

namespace {

namespace api = keel::agent::v1;
using keel::cluster::Agent;
using keel::cluster::AgentServer;
using keel::cluster::AgentSettings;

const char* const kUsage =
    "usage: keel-agent [--name NAME] [--state-dir DIR] [--socket PATH]\n"
    "                  [--roles compute,storage] [--pool DIR] [--pool-min-free SIZE]\n"
    "                  [--etcd-endpoints ADDR:PORT,...] [--lease-ttl SEC]\n"
    "                  [--metrics ADDR:PORT]\n"
    "\n"
    "The host's Keel agent: keeps the cluster's state in etcd, holds the host's\n"
    "lease, and serves keelctl (cluster init|join|status, host remove|set-address).\n"
    "  --name NAME         this host's name in the cluster (default: the hostname);\n"
    "                      a-z, 0-9 and '-'\n"
    "  --state-dir DIR     where the agent keeps agent.json and its etcd member's\n"
    "                      data (default /var/lib/keel/agent)\n"
    "  --socket PATH       the Unix socket keelctl talks to (default\n"
    "                      STATE_DIR/agent.sock; the state directory admits root\n"
    "                      alone); the other agents reach this one on its cluster\n"
    "                      address, port 7400, over TLS with the cluster's CA\n"
    "  --roles LIST        compute, storage or both (default both)\n"
    "  --pool DIR          the Btrfs pool of a storage host\n"
    "  --pool-min-free SIZE  below this much free space (K, M, G) the pool is\n"
    "                      unhealthy, as it is read-only or counting device\n"
    "                      errors: the host hands its highly available VMs over\n"
    "                      to their passives (default: the smaller of 1G and 5%\n"
    "                      of the pool)\n"
    "  --etcd-endpoints L  use the etcd the operator runs at these client\n"
    "                      addresses instead of starting a member of its own\n"
    "  --lease-ttl SEC     the host lease's time to live (default 4, the least):\n"
    "                      a host cut off stops its VMs within it\n"
    "  --etcd-binary PATH  etcd to run (default: etcd from PATH)\n"
    "  --metrics ADDR:PORT serve Prometheus's /metrics there (plain HTTP): the\n"
    "                      cluster as this host sees it, its lease, and each VM\n"
    "                      running here with its keel-vmm's metrics\n"
    "Stops on SIGTERM or SIGINT (its etcd member with it).\n";

std::vector<std::string> split(const std::string& text, char sep) {
  std::vector<std::string> out;
  std::stringstream in(text);
  std::string part;
  while (std::getline(in, part, sep)) {
    if (!part.empty()) out.push_back(part);
  }
  return out;
}

AgentSettings parse(int argc, char** argv) {
  AgentSettings s;
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  s.name = host;
  s.state_dir = "/var/lib/keel/agent";
  s.roles = {api::ROLE_COMPUTE, api::ROLE_STORAGE};
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::cout << kUsage;
      std::exit(0);
    }
    if (i + 1 >= argc) throw keel::InputError(arg + " needs a value (or is unknown)");
    std::string value = argv[++i];
    if (arg == "--name") {
      s.name = value;
    } else if (arg == "--state-dir") {
      s.state_dir = value;
    } else if (arg == "--socket") {
      if (value.empty() || value.size() > 100) {
        throw keel::InputError("--socket: a path of 1 to 100 characters (a Unix socket's limit)");
      }
      s.management_address = "unix:" + value;
    } else if (arg == "--pool") {
      s.pool = value;
    } else if (arg == "--pool-min-free") {
      try {
        s.pool_min_free = keel::parse_size(value);
      } catch (const keel::InputError& e) {
        throw keel::InputError(std::string("--pool-min-free: ") + e.what());
      }
      if (s.pool_min_free == 0) throw keel::InputError("--pool-min-free: give a size above 0");
    } else if (arg == "--metrics") {
      s.metrics_address = value;
    } else if (arg == "--etcd-binary") {
      s.etcd_binary = value;
    } else if (arg == "--etcd-endpoints") {
      s.etcd_endpoints = split(value, ',');
      if (s.etcd_endpoints.empty()) throw keel::InputError("--etcd-endpoints: no address given");
    } else if (arg == "--lease-ttl") {
      char* end = nullptr;
      long ttl = std::strtol(value.c_str(), &end, 10);
      // The agent renews every second with calls bounded by 1 s and fences
      // 1.5 s before expiry: a shorter lease would fence between renewals.
      if (*end != 0 || ttl < 4 || ttl > 600) {
        throw keel::InputError("--lease-ttl: '" + value + "' is not a number of seconds, 4 to 600");
      }
      s.lease_ttl_s = ttl;
    } else if (arg == "--roles") {
      s.roles.clear();
      for (const auto& role : split(value, ',')) {
        if (role == "compute") {
          s.roles.push_back(api::ROLE_COMPUTE);
        } else if (role == "storage") {
          s.roles.push_back(api::ROLE_STORAGE);
        } else {
          throw keel::InputError("--roles: unknown role '" + role + "' (compute, storage)");
        }
      }
      if (s.roles.empty()) throw keel::InputError("--roles: give compute, storage or both");
    } else {
      throw keel::InputError("unknown option " + arg + " (keel-agent --help)");
    }
  }
  if (s.management_address.empty()) {
    s.management_address = "unix:" + s.state_dir + "/agent.sock";
    if (s.management_address.size() > 105) {
      throw keel::InputError("--state-dir: too long for the socket in it (give --socket)");
    }
  }
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  keel::log::init("keel-agent");
  AgentSettings settings;
  try {
    settings = parse(argc, argv);
  } catch (const keel::InputError& e) {
    std::cerr << "keel-agent: " << e.what() << "\n";
    return 2;
  }
  keel::log::set_name(settings.name);
  // Every thread started from here on leaves these to sigwait below.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  try {
    Agent agent(settings);
    // Destroyed in reverse: the management server (and what its handlers
    // are doing, which may start the peer server) before the peer server.
    std::mutex peer_mutex;
    std::unique_ptr<AgentServer> peer;
    AgentServer management(agent, settings.management_address, AgentServer::kEverything);
    std::unique_ptr<keel::cluster::MetricsEndpoint> metrics;
    if (!settings.metrics_address.empty()) {
      metrics = std::make_unique<keel::cluster::MetricsEndpoint>(
          settings.metrics_address, [&agent] { return keel::prometheus_text(agent.metrics()); });
      keel::log::info("serving /metrics on " + metrics->address());
    }
    agent.on_cluster_address([&](const std::string& address) {
      std::string listen =
          (address.find(':') != std::string::npos ? "[" + address + "]" : address) + ":" +
          std::to_string(keel::cluster::kAgentPort);
      std::lock_guard lock(peer_mutex);
      if (listen == settings.management_address || (peer && peer->address() == listen)) return;
      peer.reset();
      try {
        // The other agents, over TLS: what changes this host is for its
        // operators (the socket).
        peer = std::make_unique<AgentServer>(agent, listen, AgentServer::kPeersOnly);
        keel::log::info("serving the other agents on " + listen);
      } catch (const std::exception& e) {
        keel::log::error(std::string("cannot serve the other agents: ") + e.what());
      }
    });
    keel::log::info("host " + settings.name + " ready; keelctl talks to " +
                    settings.management_address);
    int signo = 0;
    sigwait(&stop_signals, &signo);
    keel::log::info(std::string("stopping (") + strsignal(signo) + ")");
  } catch (const keel::InputError& e) {
    keel::log::error(e.what());
    return 2;
  } catch (const std::exception& e) {
    keel::log::error(e.what());
    return 1;
  }
  return 0;
}
