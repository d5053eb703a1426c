#include "tools/migbench/bench_network.h"

#include <sched.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "common/child_process.h"

namespace keel::migbench {

namespace {

void ip(const std::vector<std::string>& args) {
  std::vector<std::string> argv{"ip"};
  argv.insert(argv.end(), args.begin(), args.end());
  const CommandResult r = run_command(argv, std::chrono::seconds(10));
  if (r.exit_code != 0) {
    std::string line;
    for (const auto& a : argv) line += (line.empty() ? "" : " ") + a;
    throw std::runtime_error("'" + line + "' failed: " + r.err);
  }
}

}  // namespace

void enter_bench_network() {
  if (::unshare(CLONE_NEWNET) != 0) {
    throw std::runtime_error(std::string("unshare(CLONE_NEWNET) for --net: ") +
                             std::strerror(errno));
  }
  ip({"link", "set", "lo", "up"});
  ip({"link", "add", "kmb-br", "type", "bridge", "forward_delay", "0"});
  for (const std::string& tap : {kSourceTap, kDestinationTap}) {
    ip({"tuntap", "add", "dev", tap, "mode", "tap"});
    ip({"link", "set", tap, "master", "kmb-br", "up"});
  }
  ip({"addr", "add", kBridgeAddress + "/24", "dev", "kmb-br"});
  ip({"link", "set", "kmb-br", "up"});
}

}  // namespace keel::migbench
