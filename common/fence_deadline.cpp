#include "common/fence_deadline.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

#include "common/error.h"
#include "common/unique_fd.h"

namespace keel {

namespace {
constexpr size_t kFileBytes = 4096;

std::atomic_ref<uint64_t> word(const MemoryMapping& m) {
  return std::atomic_ref<uint64_t>(*m.as<uint64_t>());
}
}  // namespace

FenceDeadline FenceDeadline::open(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd.valid()) {
    throw InputError("--fence-file " + path + ": " + std::strerror(errno));
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode) ||
      st.st_size < static_cast<off_t>(kFileBytes)) {
    throw InputError("--fence-file " + path + " is not a fence file (a regular file of 4 KiB)");
  }
  return FenceDeadline(
      MemoryMapping::map(kFileBytes, PROT_READ, MAP_SHARED, fd.get(), 0, "map the fence file"));
}

FenceDeadline FenceDeadline::create(const std::string& path, uint64_t deadline_ns) {
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644));
  if (!fd.valid()) throw_errno("open fence file " + path);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw_errno("stat fence file " + path);
  const bool fresh = st.st_size < static_cast<off_t>(kFileBytes);
  if (fresh && ::ftruncate(fd.get(), kFileBytes) != 0) throw_errno("size fence file " + path);
  FenceDeadline out(MemoryMapping::map(kFileBytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0,
                                       "map the fence file"));
  if (fresh) out.set_deadline_ns(deadline_ns);
  return out;
}

uint64_t FenceDeadline::deadline_ns() const {
  return word(mapping_).load(std::memory_order_acquire);
}

void FenceDeadline::set_deadline_ns(uint64_t deadline_ns) {
  word(mapping_).store(deadline_ns, std::memory_order_release);
}

bool FenceDeadline::passed() const {
  return now_ns() >= deadline_ns();
}

uint64_t FenceDeadline::overdue_ms() const {
  const uint64_t now = now_ns(), deadline = deadline_ns();
  return now > deadline ? (now - deadline) / 1000000 : 0;
}

uint64_t FenceDeadline::now_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_BOOTTIME, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

}  // namespace keel
