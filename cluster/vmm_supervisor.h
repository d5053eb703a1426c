// keel-agent's watch over the host's keel-vmm processes: those it starts
// (cluster/vmm_launch.h) and those it finds running when it starts itself
// (adopted: the VMMs outlive an agent's restart). Each is watched through a
// pidfd; its end is reported with its last words (its log's last line:
// keel-vmm says there why it stopped, with its exit code).
#pragma once

#include <sys/types.h>

#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "cluster/vmm_launch.h"
#include "common/unique_fd.h"

namespace keel::cluster {

class VmmSupervisor {
 public:
  struct Ended {
    std::string vm;
    pid_t pid = 0;
    std::string last_words;
  };
  // `ended` is called once per VMM: on the supervisor's thread, or on the
  // caller's of start/adopt when it had ended before it was watched.
  explicit VmmSupervisor(std::function<void(const Ended&)> ended);
  // Stops watching; the VMMs run on.
  ~VmmSupervisor();
  VmmSupervisor(const VmmSupervisor&) = delete;
  VmmSupervisor& operator=(const VmmSupervisor&) = delete;

  // launch_vmm, then watched.
  pid_t start(const VmmLaunch& launch);
  // The VMMs running from this host's run directory (storage::vm_run_dir)
  // that are not watched yet, watched from now on; their names.
  std::vector<std::string> adopt_running();
  // VM name to PID, of the VMMs watched now.
  std::map<std::string, pid_t> running() const;

 private:
  void watch(const std::string& vm, pid_t pid);
  void loop();

  std::function<void(const Ended&)> ended_;
  mutable std::mutex mutex_;
  struct Watched {
    pid_t pid;
    UniqueFd pidfd;
  };
  std::map<std::string, Watched> watched_;
  UniqueFd wake_;  // eventfd: the watch list changed, or stop
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace keel::cluster
