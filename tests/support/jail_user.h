// The user tests run jailed keel-vmm processes as (--jail): no account has
// it, and the jail needs none.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace keel::testing {

inline constexpr uid_t kJailUid = 64123;

// `args` with --jail kJailUid added.
inline std::vector<std::string> jailed(std::vector<std::string> args) {
  args.push_back("--jail");
  args.push_back(std::to_string(kJailUid));
  return args;
}

}  // namespace keel::testing
