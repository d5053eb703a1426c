#include "cluster/vmm_supervisor.h"

#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <filesystem>

#include "common/error.h"
#include "common/log.h"
#include "storage/vm_runtime.h"

namespace keel::cluster {

namespace fs = std::filesystem;

namespace {

UniqueFd open_pidfd(pid_t pid) {
  return UniqueFd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
}

void poke(int fd) {
  const uint64_t one = 1;
  (void)!::write(fd, &one, sizeof one);
}

}  // namespace

VmmSupervisor::VmmSupervisor(std::function<void(const Ended&)> ended)
    : ended_(std::move(ended)), wake_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  if (!wake_.valid()) throw_errno("eventfd for the VMM supervisor");
  thread_ = std::thread([this] { loop(); });
}

VmmSupervisor::~VmmSupervisor() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  poke(wake_.get());
  thread_.join();
}

pid_t VmmSupervisor::start(const VmmLaunch& launch) {
  const pid_t pid = launch_vmm(launch);
  watch(launch.vm, pid);
  return pid;
}

void VmmSupervisor::watch(const std::string& vm, pid_t pid) {
  UniqueFd pidfd = open_pidfd(pid);
  // Ended already, or (the PID read from a file) not this VM's keel-vmm
  // any more: a pidfd names one process, so checking after opening it is
  // enough.
  if (!pidfd.valid() || storage::running_vmm(vm) != pid) {
    log::info("keel-vmm of " + vm + " (pid " + std::to_string(pid) + ") ended before it was " +
              "watched");
    if (ended_) ended_({vm, pid, last_line(storage::vm_run_dir(vm) / "keel-vmm.log")});
    return;
  }
  {
    std::lock_guard lock(mutex_);
    // (start refuses a VM whose keel-vmm runs, adopt skips watched ones.)
    if (!watched_.emplace(vm, Watched{pid, std::move(pidfd)}).second) return;
  }
  poke(wake_.get());
}

std::vector<std::string> VmmSupervisor::adopt_running() {
  std::vector<std::string> adopted;
  const fs::path vms = storage::vm_run_dir("x").parent_path();
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(vms, ec)) {
    const std::string vm = entry.path().filename().string();
    {
      std::lock_guard lock(mutex_);
      if (watched_.count(vm)) continue;
    }
    if (auto pid = storage::running_vmm(vm)) {
      watch(vm, *pid);
      log::info("adopted the running keel-vmm of " + vm + " (pid " + std::to_string(*pid) + ")");
      adopted.push_back(vm);
    }
  }
  return adopted;
}

std::map<std::string, pid_t> VmmSupervisor::running() const {
  std::lock_guard lock(mutex_);
  std::map<std::string, pid_t> out;
  for (const auto& [vm, w] : watched_) out[vm] = w.pid;
  return out;
}

void VmmSupervisor::loop() {
  for (;;) {
    std::vector<pollfd> fds{{wake_.get(), POLLIN, 0}};
    std::vector<std::string> names;
    {
      std::lock_guard lock(mutex_);
      if (stopping_) return;
      for (const auto& [vm, w] : watched_) {
        fds.push_back({w.pidfd.get(), POLLIN, 0});
        names.push_back(vm);
      }
    }
    if (::poll(fds.data(), fds.size(), -1) < 0) {
      if (errno != EINTR) {
        log::error(std::string("VMM supervisor: poll: ") + std::strerror(errno));
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
      continue;
    }
    if (fds[0].revents) {
      uint64_t count;
      (void)!::read(wake_.get(), &count, sizeof count);
    }
    for (size_t i = 1; i < fds.size(); ++i) {
      if (!fds[i].revents) continue;
      Ended ended;
      {
        std::lock_guard lock(mutex_);
        auto it = watched_.find(names[i - 1]);
        if (it == watched_.end()) continue;
        ended = {it->first, it->second.pid, {}};
        watched_.erase(it);
      }
      ended.last_words = last_line(storage::vm_run_dir(ended.vm) / "keel-vmm.log");
      log::info("keel-vmm of " + ended.vm + " (pid " + std::to_string(ended.pid) +
                ") ended: " + (ended.last_words.empty() ? "(nothing said)" : ended.last_words));
      if (ended_) ended_(ended);
    }
  }
}

}  // namespace keel::cluster
