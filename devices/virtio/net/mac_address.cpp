#include "devices/virtio/net/mac_address.h"

#include <sys/random.h>

#include <cstdio>

#include "common/error.h"

namespace keel {

namespace {

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

MacAddress parse_mac_address(std::string_view text) {
  auto bad = [&](const char* why) -> InputError {
    return InputError("bad MAC address '" + std::string(text) + "': " + why);
  };
  if (text.size() != 17) throw bad("expected six hex byte pairs like 52:54:00:12:34:56");
  const char separator = text[2];
  if (separator != ':' && separator != '-') throw bad("bytes are separated by ':'");
  MacAddress mac{};
  for (size_t i = 0; i < mac.size(); ++i) {
    const size_t at = i * 3;
    const int high = hex_digit(text[at]);
    const int low = hex_digit(text[at + 1]);
    if (high < 0 || low < 0) throw bad("not a hex digit");
    if (i + 1 < mac.size() && text[at + 2] != separator) throw bad("bytes are separated by ':'");
    mac[i] = static_cast<uint8_t>(high << 4 | low);
  }
  if (mac[0] & 1) throw bad("a multicast address cannot be a NIC's");
  return mac;
}

MacAddress random_local_mac_address() {
  MacAddress mac{};
  if (::getrandom(mac.data(), mac.size(), 0) != static_cast<ssize_t>(mac.size())) {
    throw_errno("getrandom for a MAC address");
  }
  mac[0] = static_cast<uint8_t>((mac[0] & ~1u) | 2u);
  return mac;
}

std::string to_string(const MacAddress& mac) {
  char text[18];
  std::snprintf(text, sizeof text, "%02x:%02x:%02x:%02x:%02x:%02x", mac[0], mac[1], mac[2], mac[3],
                mac[4], mac[5]);
  return text;
}

}  // namespace keel
