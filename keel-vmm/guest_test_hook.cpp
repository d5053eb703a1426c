// keel-vmm-testhooks only: the guest asks the VMM to do something a
// compromised VMM would (open a host file), so that tests can see what the
// jail does about it. Never in keel-vmm itself.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <span>
#include <string>

#include "common/log.h"
#include "vmm/machine.h"

namespace keel {

namespace {
constexpr uint32_t kOpenHostFile = 0x6b65656c;  // "keel"
}

bool guest_test_hook(uint16_t, std::span<const uint8_t> data) {
  uint32_t value = 0;
  std::memcpy(&value, data.data(), std::min(data.size(), sizeof value));
  if (data.size() != 4 || value != kOpenHostFile) return false;
  // On the vCPU thread, as an emulation bug's exploit would run.
  const int fd = ::open("/etc/passwd", O_RDONLY | O_CLOEXEC);
  const int err = errno;
  log::warning(fd >= 0 ? "test hook: the guest had the VMM open /etc/passwd"
                       : std::string("test hook: open /etc/passwd: ") + std::strerror(err));
  if (fd >= 0) ::close(fd);
  return true;
}

}  // namespace keel
