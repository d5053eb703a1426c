// Errors carry errno and the context of what was being done.
#pragma once

#include <stdexcept>
#include <string>
#include <system_error>

namespace keel {

// Thrown for bad input from the operator (command line, configuration,
// kernel image): the message is meant to be shown as is, on one line.
class InputError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Throws std::system_error for the current errno, with `what` naming the
// operation that failed.
[[noreturn]] void throw_errno(const std::string& what);
[[noreturn]] void throw_errno(int err, const std::string& what);

}  // namespace keel
