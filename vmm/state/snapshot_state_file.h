// A snapshot's state file: the serialized VmState behind a small header
// (magic "KEELSNAP", format version, payload length, CRC-32C of the
// payload), so a truncated, corrupted or foreign file is refused before any
// of it is parsed.
#pragma once

#include <cstdint>
#include <string>

namespace keel {

inline constexpr uint32_t kSnapshotFormatVersion = 1;
inline constexpr uint64_t kMaxStatePayload = 64ull << 20;

// Written to a temporary name, made durable, then renamed over `path`, so
// the file is either whole or absent.
void write_state_file(const std::string& path, const std::string& payload);

// The payload; InputError naming the problem otherwise.
std::string read_state_file(const std::string& path);

}  // namespace keel
