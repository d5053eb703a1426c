#include "tools/keelctl/command_line.h"

#include <charconv>

namespace keel {

bool CommandLine::next() {
  if (++at_ >= argc_) return false;
  word_ = argv_[at_];
  inline_value_.reset();
  if (word_.rfind("--", 0) == 0) {
    const size_t eq = word_.find('=');
    if (eq != std::string::npos) {
      inline_value_ = word_.substr(eq + 1);
      word_.resize(eq);
    }
  }
  return true;
}

std::string CommandLine::value() {
  if (inline_value_) return *inline_value_;
  if (at_ + 1 >= argc_) throw UsageError{word_ + " needs a value"};
  return argv_[++at_];
}

uint64_t CommandLine::number(uint64_t max) {
  const std::string text = value();
  uint64_t n = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec != std::errc() || end != text.data() + text.size() || n > max) {
    throw UsageError{"invalid value for " + word_ + ": '" + text + "' (expected a number up to " +
                     std::to_string(max) + ")"};
  }
  return n;
}

double CommandLine::seconds() {
  const std::string text = value();
  double s = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), s);
  if (ec != std::errc() || end != text.data() + text.size() || !(s >= 0) || s > 86400 * 7) {
    throw UsageError{"invalid value for " + word_ + ": '" + text + "' (expected seconds)"};
  }
  return s;
}

}  // namespace keel
