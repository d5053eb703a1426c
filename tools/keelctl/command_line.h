// keelctl's command lines, read one word at a time: options as "--name
// VALUE" or "--name=VALUE", values checked as numbers or seconds. Shared by
// the VMM commands (keelctl.cpp) and keelctl console.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace keel {

// A bad command line: keelctl prints the message and its usage, exit 2.
struct UsageError {
  std::string message;
};

class CommandLine {
 public:
  CommandLine(int argc, char** argv) : argc_(argc), argv_(argv) {}

  // The next word (an option's name without its "=VALUE"); false at the end.
  bool next();
  const std::string& word() const { return word_; }
  bool is_option() const { return word_.size() > 1 && word_[0] == '-'; }

  // The current option's value: after its '=', or the next word.
  std::string value();
  // The value as a whole number up to `max`, or as seconds (0 to a week).
  uint64_t number(uint64_t max);
  double seconds();

 private:
  int argc_;
  char** argv_;
  int at_ = 0;
  std::string word_;
  std::optional<std::string> inline_value_;
};

}  // namespace keel
