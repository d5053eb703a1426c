#include "tests/support/linux_guest_net.h"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <optional>
#include <sstream>

namespace keel::testing {

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

std::string net_stream_sum(uint64_t mib, uint64_t seed) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (uint64_t i = 0; i < mib * 1048576 / 8; ++i)
    h = (h ^ splitmix64((seed << 40) ^ i)) * 0x100000001b3ull;
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(h));
  return buf;
}

std::string line_of(const std::string& out, const std::string& prefix) {
  std::istringstream in(out);
  for (std::string l; std::getline(in, l);) {
    if (l.rfind(prefix, 0) == 0) return l;
  }
  return "";
}

HostKeelNet::HostKeelNet(std::vector<std::vector<std::string>> commands)
    : results_(commands.size()), thread_([this, commands] { run(commands); }) {}

std::vector<HostKeelNet::Result> HostKeelNet::finish(std::chrono::seconds grace) {
  {
    std::unique_lock lock(mutex_);
    if (!done_cv_.wait_for(lock, grace, [this] { return done_; })) {
      aborted_ = true;
      if (current_ != nullptr) current_->signal(SIGKILL);
    }
  }
  if (thread_.joinable()) thread_.join();
  return results_;
}

void HostKeelNet::run(const std::vector<std::vector<std::string>>& commands) {
  for (size_t i = 0; i < commands.size(); ++i) {
    ChildProcess::Options options;
    options.capture_stdout = true;
    std::optional<ChildProcess> child;
    {
      std::lock_guard lock(mutex_);
      if (aborted_) break;
      try {
        child.emplace(ChildProcess::spawn(commands[i], options));
      } catch (const std::exception& e) {
        results_[i].out = std::string("spawn failed: ") + e.what();
        break;
      }
      current_ = &*child;
    }
    char buf[4096];
    for (;;) {
      ssize_t n = ::read(child->stdout_fd(), buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      results_[i].out.append(buf, static_cast<size_t>(n));
    }
    {
      // Not reaped while the killer may still see it: no pid reuse race.
      std::lock_guard lock(mutex_);
      current_ = nullptr;
    }
    results_[i].exit_code = child->wait();
  }
  std::lock_guard lock(mutex_);
  done_ = true;
  done_cv_.notify_all();
}

}  // namespace keel::testing
