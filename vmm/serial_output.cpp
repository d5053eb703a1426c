#include "vmm/serial_output.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/error.h"

namespace keel {

SerialOutput::SerialOutput(const std::string& path) : fd_(STDOUT_FILENO) {
  if (!path.empty()) {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) throw InputError("cannot open serial file " + path + ": " + std::strerror(errno));
    file_.reset(fd);
    fd_ = fd;
  }
  pending_.reserve(4096);
}

void SerialOutput::put(uint8_t byte) {
  pending_.push_back(byte);
  if (byte == '\n' || pending_.size() >= 4096) flush();
}

void SerialOutput::flush() {
  size_t done = 0;
  while (done < pending_.size()) {
    ssize_t n = ::write(fd_, pending_.data() + done, pending_.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // a closed reader must not stop the guest: drop the output
    done += static_cast<size_t>(n);
  }
  pending_.clear();
}

}  // namespace keel
