// What keelctl printed, for the tests that drive keel-vmm through it: the
// command's result for failure messages, and its --json output as the
// control API's Response.
#pragma once

#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>

#include <string>

#include "common/child_process.h"
#include "proto/control.pb.h"

namespace keel::testing {

inline std::string show(const CommandResult& r) {
  return "keelctl exit " + std::to_string(r.exit_code) + "\nstdout: " + r.out +
         "\nstderr: " + r.err;
}

// keelctl --json's output; a failed expectation when it is not a Response.
inline keel::api::v1::Response parse_json(const CommandResult& result) {
  keel::api::v1::Response response;
  auto status = google::protobuf::util::JsonStringToMessage(result.out, &response);
  EXPECT_TRUE(status.ok()) << "keelctl printed no JSON Response: " << result.out << result.err;
  return response;
}

}  // namespace keel::testing
