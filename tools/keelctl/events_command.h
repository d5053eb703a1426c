// keelctl events: what happened to the VM (proto/control.proto's Event),
// from the VMM's ring: a line each for people or a JSON object per line.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace keel {

// Prints the events after `since` (none: the oldest the VMM keeps); with
// `follow`, then every new one until the VMM stops or keelctl is
// interrupted. keelctl's exit codes (0, 1 refused, 3 cannot connect, 4 the
// stream broke).
// "2026-12-07T12:34:56.789Z"
std::string utc_time(uint64_t unix_ns);
// An enum value's name for people: "EVENT_TYPE_MIGRATION_FINISHED" less
// `prefix` ("EVENT_TYPE_") -> "migration-finished".
std::string type_words(std::string name, const std::string& prefix);
// "  took=1.234ms"
std::string took_text(uint64_t duration_us);

int print_events(const std::string& socket, bool json, bool follow, std::optional<uint64_t> since);

}  // namespace keel
