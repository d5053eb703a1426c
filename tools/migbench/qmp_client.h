// A QEMU Machine Protocol client for the QEMU peer: a Unix socket, one
// JSON object per line; commands answered by "return" or "error", events
// skipped. Answers come back as protobuf Structs (the JSON already parsed).
#pragma once

#include <google/protobuf/struct.pb.h>

#include <chrono>
#include <string>

#include "common/unique_fd.h"

namespace keel::migbench {

class QmpClient {
 public:
  // Connects (retrying while QEMU starts, up to `timeout`) and negotiates.
  QmpClient(const std::string& path, std::chrono::milliseconds timeout);
  // Runs `command` with `arguments` (a JSON object's text, or empty);
  // throws std::runtime_error with QEMU's error description.
  google::protobuf::Struct execute(const std::string& command, const std::string& arguments = "");

 private:
  google::protobuf::Struct read_message();
  std::string path_;
  UniqueFd fd_;
  std::string buffer_;
};

// A field of a Struct as text or number ("" / 0 when absent).
std::string text_field(const google::protobuf::Struct& s, const std::string& name);
double number_field(const google::protobuf::Struct& s, const std::string& name);

}  // namespace keel::migbench
