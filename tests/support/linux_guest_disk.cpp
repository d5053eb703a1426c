#include "tests/support/linux_guest_disk.h"

#include <chrono>
#include <sstream>

#include "common/child_process.h"
#include "tests/support/vmm_run.h"

namespace keel::testing {

std::string diskcheck_on_host(const std::string& diskcheck, const std::vector<std::string>& args) {
  std::vector<std::string> argv{diskcheck};
  argv.insert(argv.end(), args.begin(), args.end());
  auto result = run_command(argv, std::chrono::seconds(120));
  std::istringstream in(result.out);
  std::string last;
  for (std::string l; std::getline(in, l);) {
    if (l.rfind("keel-guest: disk OK ", 0) == 0 || l.rfind("keel-guest: disk BAD ", 0) == 0)
      last = l;
  }
  return last.empty() ? "exit " + std::to_string(result.exit_code) + ": " + result.out + result.err
                      : last;
}

std::string sum_of(const std::string& line) {
  auto f = fields(line);
  return f.count("sum") ? f["sum"] : "(no sum in '" + line + "')";
}

}  // namespace keel::testing
