#include "common/size_parse.h"

#include <charconv>
#include <cstdio>
#include <iterator>
#include <string>

#include "common/error.h"

namespace keel {

uint64_t parse_size(std::string_view text) {
  auto bad = [&](const char* why) {
    return InputError("invalid size '" + std::string(text) + "': " + why);
  };
  if (text.empty()) throw bad("empty");
  uint64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec == std::errc::result_out_of_range) throw bad("too large");
  if (ec != std::errc() || end == text.data()) throw bad("expected a number with K, M, G or T");
  std::string_view suffix(end, text.data() + text.size() - end);
  unsigned shift = 0;
  if (suffix.empty()) {
    shift = 0;
  } else if (suffix.size() == 1 || (suffix.size() == 3 && (suffix.substr(1) == "iB"))) {
    switch (suffix[0]) {
      case 'K':
      case 'k':
        shift = 10;
        break;
      case 'M':
      case 'm':
        shift = 20;
        break;
      case 'G':
      case 'g':
        shift = 30;
        break;
      case 'T':
      case 't':
        shift = 40;
        break;
      default:
        throw bad("unknown suffix");
    }
  } else {
    throw bad("unknown suffix");
  }
  if (shift && value > (UINT64_MAX >> shift)) throw bad("too large");
  return value << shift;
}

std::string human_bytes(uint64_t bytes) {
  static const char* const units[] = {"bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  size_t unit = 0;
  double value = static_cast<double>(bytes);
  while (value >= 1024 && unit + 1 < std::size(units)) {
    value /= 1024;
    ++unit;
  }
  char text[32];
  if (unit == 0) {
    std::snprintf(text, sizeof(text), "%llu bytes", static_cast<unsigned long long>(bytes));
  } else if (value == static_cast<double>(static_cast<uint64_t>(value))) {
    std::snprintf(text, sizeof(text), "%.0f %s", value, units[unit]);
  } else {
    std::snprintf(text, sizeof(text), "%.1f %s", value, units[unit]);
  }
  return text;
}

}  // namespace keel
