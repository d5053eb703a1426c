// An Ethernet MAC address: parsed from the operator's "52:54:00:12:34:56"
// form, or made up as a random locally administered unicast address.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace keel {

using MacAddress = std::array<uint8_t, 6>;

// Six two-digit hex groups separated by ':' (or all by '-'). Throws
// InputError on anything else, and for multicast addresses (bit 0 of the
// first byte), which a NIC cannot own.
MacAddress parse_mac_address(std::string_view text);

// A fresh random address with the locally administered bit set and the
// multicast bit clear (IEEE 802: bits 1 and 0 of the first byte).
MacAddress random_local_mac_address();

std::string to_string(const MacAddress& mac);

}  // namespace keel
