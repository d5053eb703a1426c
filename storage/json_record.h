// The pool's records (proto/pool.proto) as JSON files: written whole or not
// at all, read back as untrusted input.
#pragma once

#include <google/protobuf/message.h>

#include <filesystem>
#include <string>
#include <string_view>

namespace keel::storage {

// `data` into a temporary file beside `path`, synced, renamed over it:
// whole or not at all.
void write_file_whole(const std::filesystem::path& path, std::string_view data);
// fsync of a directory: a rename or a new entry in it survives a power cut.
void sync_directory(const std::filesystem::path& dir);
// The record as JSON, through write_file_whole.
void write_json_record(const std::filesystem::path& path, const google::protobuf::Message& record);
// InputError naming the file when it is missing, not JSON or not the record.
void read_json_record(const std::filesystem::path& path, google::protobuf::Message* record);

// Now as UTC RFC 3339, for the records' times.
std::string utc_now();

}  // namespace keel::storage
