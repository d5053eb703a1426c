#include "tests/support/net_namespace.h"

#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <vector>

#include "common/child_process.h"
#include "common/error.h"

namespace keel::testing {

std::string run_checked(const std::vector<std::string>& argv, int timeout_seconds) {
  auto result = run_command(argv, std::chrono::seconds(timeout_seconds));
  if (result.exit_code != 0) {
    std::string cmd;
    for (const auto& a : argv) cmd += a + " ";
    throw std::runtime_error(cmd + "failed (" + std::to_string(result.exit_code) +
                             "): " + result.out + result.err);
  }
  return result.out;
}

NetNamespace::NetNamespace(const std::string& tap, const std::string& host_cidr) : tap_(tap) {
  static std::atomic<int> counter{0};
  name_ = "keel-t" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
  original_ = UniqueFd(::open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC));
  if (!original_.valid()) throw_errno("open /proc/self/ns/net");
  run_checked({"ip", "netns", "add", name_});
  try {
    UniqueFd ns(::open(("/run/netns/" + name_).c_str(), O_RDONLY | O_CLOEXEC));
    if (!ns.valid()) throw_errno("open /run/netns/" + name_);
    if (::setns(ns.get(), CLONE_NEWNET) < 0) throw_errno("setns " + name_);
    entered_ = true;
    run_checked({"ip", "link", "set", "lo", "up"});
    run_checked({"ip", "tuntap", "add", "dev", tap_, "mode", "tap"});
    if (!host_cidr.empty()) run_checked({"ip", "addr", "add", host_cidr, "dev", tap_});
    run_checked({"ip", "link", "set", tap_, "up"});
  } catch (...) {
    if (entered_) ::setns(original_.get(), CLONE_NEWNET);
    run_command({"ip", "netns", "del", name_}, std::chrono::seconds(30));
    throw;
  }
}

NetNamespace::~NetNamespace() {
  if (entered_) ::setns(original_.get(), CLONE_NEWNET);
  // Deleting the namespace takes the tap with it.
  run_command({"ip", "netns", "del", name_}, std::chrono::seconds(30));
}

void bridge_with_second_tap(const NetNamespace& ns, const std::string& bridge,
                            const std::string& second_tap, const std::string& host_cidr) {
  run_checked({"ip", "link", "add", bridge, "type", "bridge", "forward_delay", "0"});
  run_checked({"ip", "tuntap", "add", "dev", second_tap, "mode", "tap"});
  for (const std::string& tap : {ns.tap(), second_tap})
    run_checked({"ip", "link", "set", tap, "master", bridge, "up"});
  run_checked({"ip", "addr", "add", host_cidr, "dev", bridge});
  run_checked({"ip", "link", "set", bridge, "up"});
}

}  // namespace keel::testing
