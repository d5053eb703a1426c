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
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>

namespace keel::migration {

// The passive's side: once it holds a copy that may run, a silence of the
// active this long means its guest surely waits (its permit ran out, and
// the margin, max(250 ms, permit / 2), covers the active's late timer): the
// copy may take over. InputError naming the permit when it is outside
// 100 ms to 60 s (an older or hostile active).
std::chrono::milliseconds passive_silence_limit(uint32_t run_permit_ms);

class RunPermit {
 public:
  using Clock = std::chrono::steady_clock;

  // `request_pause`: asks the guest's vCPUs to park, without waiting
  // (MigratableMachine::request_pause); called from the watch's thread.
  RunPermit(std::function<void()> request_pause, std::chrono::milliseconds length);
  ~RunPermit();  // the watch ends; the guest is left as it is
  RunPermit(const RunPermit&) = delete;
  RunPermit& operator=(const RunPermit&) = delete;

  std::chrono::milliseconds length() const { return length_; }
  // The guest may run until `heard + length`. True when it waits for a
  // resume (the watch or a checkpoint paused it): resume_if_valid, on the
  // machine's event loop.
  bool grant_from(Clock::time_point heard);
  // `resume` (the machine's, on its event loop) runs only while the guest
  // may run, decided under the permit's lock so that the watch's pause
  // cannot come between; else the guest is left waiting for the next
  // grant. True when it ran.
  bool resume_if_valid(const std::function<void()>& resume);
  // A pause the caller leaves in place (a checkpoint that failed): the
  // permit takes it as its own, for end() or the next grant to lift.
  void keep_paused();
  // The stream failed: the guest's pause is requested before this returns,
  // and it runs no more until end().
  void revoke();
  // No permit any more: the watch stops pausing the guest. True when the
  // guest waits for a resume (the caller resumes it).
  bool end();

 private:
  void watch();

  const std::function<void()> request_pause_;
  const std::chrono::milliseconds length_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  bool granted_ = false;
  bool ended_ = false;
  bool revoked_ = false;
  bool paused_guest_ = false;  // waits for a resume the permit decides
  Clock::time_point until_;
  std::thread watcher_;
};

}  // namespace keel::migration
