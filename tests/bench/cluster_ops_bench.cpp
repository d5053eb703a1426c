// How long the cluster's VM operations take as an operator sees them
// (keelctl's whole run, from a host that is neither the storage nor the
// compute host, so each call is forwarded): create, start (until keel-vmm
// answers on its socket) and stop (the guest powered off by the ACPI
// button), with 3 and 7 hosts, each with its own etcd member, keel-agent and
// pool, as network namespaces. Prints the median and the range of each.
//
// usage: cluster_ops_bench [--runs N] [--hosts N]...   (default 5 runs; 3 and 7 hosts)
// Needs KVM for the starts: tools/kvm-run --need kvm -- cluster_ops_bench.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <stdexcept>
#include <string>
#include <vector>

#include "tests/support/test_cluster.h"

namespace {

using keel::testing::TestCluster;
using Clock = std::chrono::steady_clock;

struct Figures {
  std::vector<double> create, start, stop;
};

// keelctl's run on `host`, in ms; exits the program when it fails.
double timed(TestCluster& c, unsigned host, const std::vector<std::string>& args) {
  const auto begin = Clock::now();
  auto r = c.keelctl(host, args, std::chrono::seconds(300));
  const double ms = std::chrono::duration<double, std::milli>(Clock::now() - begin).count();
  if (r.exit_code != 0) {
    std::cerr << "cluster_ops_bench: keelctl";
    for (const auto& a : args) std::cerr << " " << a;
    std::cerr << " failed (" << r.exit_code << "): " << r.out << r.err << "\n";
    std::exit(1);
  }
  return ms;
}

std::string summary(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  char line[128];
  std::snprintf(line, sizeof line, "median %7.1f ms (%.1f to %.1f, %zu runs)", v[v.size() / 2],
                v.front(), v.back(), v.size());
  return line;
}

Figures measure(unsigned hosts, unsigned runs) {
  TestCluster c(hosts);
  c.make_pools("beat", "job=heartbeat interval_ms=1000 count=0");
  for (unsigned h = 1; h <= hosts; ++h) c.start_agent(h);
  c.form(hosts);
  Figures f;
  // Asked on h1, stored on h2, run on h3.
  for (unsigned run = 0; run < runs; ++run) {
    const std::string vm = "b" + std::to_string(run);
    f.create.push_back(timed(
        c, 1, {"vm", "create", vm, "--image", "beat", "--memory", "64M", "--storage-host", "h2"}));
    f.start.push_back(timed(c, 1, {"vm", "start", vm, "--host", "h3"}));
    f.stop.push_back(timed(c, 1, {"vm", "stop", vm, "--timeout", "60"}));
    timed(c, 1, {"vm", "delete", vm});
  }
  return f;
}

}  // namespace

int main(int argc, char** argv) {
  unsigned runs = 5;
  std::vector<unsigned> sizes;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string arg = argv[i];
    const long value = std::atol(argv[i + 1]);
    if (arg == "--runs" && value > 0 && value <= 1000) {
      runs = static_cast<unsigned>(value);
    } else if (arg == "--hosts" && value >= 3 && value <= 8) {
      sizes.push_back(static_cast<unsigned>(value));
    } else {
      std::cerr << "usage: cluster_ops_bench [--runs N] [--hosts 3..8]...\n";
      return 2;
    }
  }
  if (sizes.empty()) sizes = {3, 7};
  keel::testing::enter_private_network();
  for (unsigned hosts : sizes) {
    Figures f;
    try {
      f = measure(hosts, runs);
    } catch (const std::exception& e) {
      std::cerr << "cluster_ops_bench: " << hosts << " hosts: " << e.what() << "\n";
      return 1;
    }
    std::cout << hosts << " hosts: vm create " << summary(f.create) << "\n"
              << hosts << " hosts: vm start  " << summary(f.start) << "\n"
              << hosts << " hosts: vm stop   " << summary(f.stop) << std::endl;
  }
  return 0;
}
