// A network namespace with one tap device in it, for tests: created on
// construction, entered by the constructing thread (so keel-vmm children
// and the test's own sockets live in it), left and deleted on destruction,
// also when the test fails. Nothing reaches the host's own network.
#pragma once

#include <string>
#include <vector>

#include "common/unique_fd.h"

namespace keel::testing {

class NetNamespace {
 public:
  // Tap `tap` with `host_cidr` (e.g. "10.0.2.1/24"; empty: no address),
  // up, and lo up.
  NetNamespace(const std::string& tap, const std::string& host_cidr);
  ~NetNamespace();
  NetNamespace(const NetNamespace&) = delete;
  NetNamespace& operator=(const NetNamespace&) = delete;

  const std::string& name() const { return name_; }
  const std::string& tap() const { return tap_; }

 private:
  std::string name_;
  std::string tap_;
  UniqueFd original_;
  bool entered_ = false;
};

// In `ns`: a second tap `second_tap`, and a bridge `bridge` (forwarding at
// once) holding both taps, with `host_cidr` and up: one network, two ports,
// as a migration's source and destination on two hosts would have them.
void bridge_with_second_tap(const NetNamespace& ns, const std::string& bridge,
                            const std::string& second_tap, const std::string& host_cidr);

// Runs a command (in the current namespace), throwing with its output when
// it fails.
std::string run_checked(const std::vector<std::string>& argv, int timeout_seconds = 30);

}  // namespace keel::testing
