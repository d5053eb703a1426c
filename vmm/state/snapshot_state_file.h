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

// Written to a temporary name in `dir` (created new, never through a
// link), made durable, then renamed to `name` unless something by that name
// exists (InputError "WHAT already holds a snapshot"), so the file is
// either whole or absent. `what` names the directory in messages.
void write_state_file(int dir, const std::string& name, const std::string& payload,
                      const std::string& what);
// The same at `path` (its directory opened as it is).
void write_state_file(const std::string& path, const std::string& payload);

// The payload; InputError naming the problem otherwise (a missing file, one
// that is not a regular file, a bad header or checksum).
std::string read_state_file(const std::string& path);

}  // namespace keel
