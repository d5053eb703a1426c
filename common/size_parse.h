// Sizes for operators: parses "512M" or "4G", and says a byte count back
// ("1.5 KiB", "512 MiB").
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace keel {

// Accepts a decimal number with an optional K, M, G or T suffix (binary
// units; a bare number is bytes). Throws InputError naming the text.
uint64_t parse_size(std::string_view text);

// 1536 -> "1.5 KiB"; 512 MiB -> "512 MiB"; under 1 KiB: "N bytes".
std::string human_bytes(uint64_t bytes);

}  // namespace keel
