// What keelctl prints for an answer: for people, or JSON.
#pragma once

#include <string>

#include "proto/control.pb.h"

namespace keel {

// The answer to a successful request, for people: several lines, each ending
// with a newline.
std::string describe_result(const keel::api::v1::Response& response);

// One migration round, for people: one line ending with a newline.
std::string describe_migration_round(const keel::api::v1::MigrationRound& round);

// An error answer for people, one line: "MESSAGE (CODE)".
std::string describe_error(const keel::api::v1::Error& error);

// The whole response as JSON on one line, snake_case field names, every
// field printed (zeros too), enums by name.
std::string response_json(const keel::api::v1::Response& response);

// 3723000 -> "1h 2m 3s"; under a minute with milliseconds: "1.234 s".
std::string human_duration_ms(uint64_t ms);

}  // namespace keel
