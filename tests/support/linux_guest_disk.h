// The Linux guest image's disk job checked from the host: keel-diskcheck
// (static, from the image's bin/) run against an image file.
#pragma once

#include <string>
#include <vector>

namespace keel::testing {

// The "keel-guest: disk OK ..." or "keel-guest: disk BAD ..." line of
// `diskcheck ARGS...`, or "exit N: OUTPUT" when it printed neither.
std::string diskcheck_on_host(const std::string& diskcheck, const std::vector<std::string>& args);

// The sum= of such a line (a guest's and the host's check of one disk
// agree on it), or a text saying there is none.
std::string sum_of(const std::string& line);

}  // namespace keel::testing
