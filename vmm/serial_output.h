// Where the guest's COM1 output goes: stdout or a file, flushed at each
// end of line so that whoever reads it sees lines when the guest prints them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/unique_fd.h"

namespace keel {

class SerialOutput {
 public:
  // Empty path: standard output. Throws InputError when the file cannot be opened.
  explicit SerialOutput(const std::string& path);
  SerialOutput(const SerialOutput&) = delete;
  SerialOutput& operator=(const SerialOutput&) = delete;
  ~SerialOutput() { flush(); }

  void put(uint8_t byte);
  void flush();

 private:
  UniqueFd file_;
  int fd_;
  std::vector<uint8_t> pending_;
};

}  // namespace keel
