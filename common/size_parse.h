// Parses operator-given sizes such as "512M" or "4G".
#pragma once

#include <cstdint>
#include <string_view>

namespace keel {

// Accepts a decimal number with an optional K, M, G or T suffix (binary
// units; a bare number is bytes). Throws InputError naming the text.
uint64_t parse_size(std::string_view text);

}  // namespace keel
