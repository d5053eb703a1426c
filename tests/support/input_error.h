// The message of the InputError a piece of code throws, for tests of
// refusals.
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "common/error.h"

namespace keel::testing {

// The message of the InputError `f` throws; fails the test (and returns "")
// when it throws none.
template <typename F>
std::string input_error(F f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  }
  ADD_FAILURE() << "no InputError";
  return "";
}

}  // namespace keel::testing
