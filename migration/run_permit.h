// The active's permit to run its guest under HA: the fence between the two
// copies that needs no third party. The passive takes over only after it
// has heard nothing from the active for longer than the permit (its
// Hello.run_permit_ms plus a margin), so the active's guest may run only
// until `length` after the passive was last surely listening: the start of
// the last frame of an epoch it acknowledged (it received that frame
// later). Past that the guest is paused here, whatever the stream's thread
// is waiting for, until an acknowledgement grants it again; once the stream
// fails the permit is never granted again, and the guest stays paused
// until whoever can tell (keel-agent, through etcd) lets it run on
// unprotected (end()).
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "vmm/migratable_machine.h"

namespace keel::migration {

class RunPermit {
 public:
  using Clock = std::chrono::steady_clock;

  RunPermit(MigratableMachine& machine, std::chrono::milliseconds length);
  ~RunPermit();  // the watch ends; the guest is left as it is
  RunPermit(const RunPermit&) = delete;
  RunPermit& operator=(const RunPermit&) = delete;

  std::chrono::milliseconds length() const { return length_; }
  // The guest may run until `heard + length`. True when the watch had
  // paused it and it may run again now: the caller resumes it.
  bool grant_from(Clock::time_point heard);
  // For a checkpoint about to resume the guest: whether it may run now
  // (no permit granted yet: it may); if not, it is left to the next grant.
  bool may_resume();
  // The stream failed: the guest's pause is requested before this returns,
  // and it runs no more until end().
  void revoke();
  // No permit any more: the watch stops pausing the guest. True when it
  // had paused it (the caller resumes it).
  bool end();

 private:
  void watch();

  MigratableMachine& machine_;
  const std::chrono::milliseconds length_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  bool granted_ = false;
  bool ended_ = false;
  bool paused_guest_ = false;
  Clock::time_point until_;
  std::thread watcher_;
};

}  // namespace keel::migration
