// A refusal or failure of an agent operation: the gRPC status it goes back
// as (proto/agent.proto says which code means what) and one line saying why.
#pragma once

#include <stdexcept>
#include <string>

namespace keel::cluster {

class AgentError : public std::runtime_error {
 public:
  enum class Code {
    kInvalidArgument,     // the request is malformed
    kFailedPrecondition,  // refused in this state
    kUnavailable,         // no quorum, or a peer that cannot be reached
    kInternal,
  };
  AgentError(Code code, const std::string& message) : std::runtime_error(message), code_(code) {}
  Code code() const { return code_; }

 private:
  Code code_;
};

inline AgentError refused(const std::string& why) {
  return AgentError(AgentError::Code::kFailedPrecondition, why);
}
inline AgentError invalid(const std::string& why) {
  return AgentError(AgentError::Code::kInvalidArgument, why);
}
// Why a drained host takes no VM, and how to take the mark off.
inline std::string drained_host(const std::string& host) {
  return "host " + host + " is drained (keelctl host undrain " + host + ")";
}

}  // namespace keel::cluster
