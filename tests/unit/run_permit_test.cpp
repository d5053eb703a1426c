// RunPermit (migration/run_permit.h): the active's guest paused once its
// permit passes, never resumed past it, and let go at the end. The pause
// it asks for is a counter here; a permit that has passed is made by
// granting from a moment already far enough back, so nothing waits on time
// but the watch's own pause, which the test waits for as an event. Also
// the passive's side: the silence after which its copy may take over.
#include "migration/run_permit.h"

#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>

#include "tests/support/input_error.h"

namespace keel::migration {
namespace {

using Clock = RunPermit::Clock;
using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::input_error;

class Pauses {
 public:
  std::function<void()> asker() {
    return [this] {
      std::lock_guard guard(mutex_);
      ++count_;
      changed_.notify_all();
    };
  }
  // Waits until at least `n` pauses were asked for (or 10 s).
  int wait_for(int n) {
    std::unique_lock lock(mutex_);
    changed_.wait_for(lock, seconds(10), [&] { return count_ >= n; });
    return count_;
  }
  int count() {
    std::lock_guard guard(mutex_);
    return count_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  int count_ = 0;
};

TEST(RunPermit, NoPermitGrantedLetsTheGuestRun) {
  Pauses pauses;
  RunPermit permit(pauses.asker(), milliseconds(500));
  int resumed = 0;
  EXPECT_TRUE(permit.resume_if_valid([&] { ++resumed; }));
  EXPECT_EQ(resumed, 1);
  EXPECT_EQ(pauses.count(), 0);
  EXPECT_FALSE(permit.end());
}

TEST(RunPermit, APassedPermitPausesTheGuestOnceAndARenewalLetsItRun) {
  Pauses pauses;
  RunPermit permit(pauses.asker(), seconds(5));
  // Heard from long enough ago: the permit has passed already.
  EXPECT_FALSE(permit.grant_from(Clock::now() - seconds(10)));
  EXPECT_EQ(pauses.wait_for(1), 1);
  int resumed = 0;
  EXPECT_FALSE(permit.resume_if_valid([&] { ++resumed; }));
  EXPECT_EQ(resumed, 0) << "resumed past its permit";
  // A fresh acknowledgement: the guest waits for its resume, which runs.
  EXPECT_TRUE(permit.grant_from(Clock::now()));
  EXPECT_TRUE(permit.resume_if_valid([&] { ++resumed; }));
  EXPECT_EQ(resumed, 1);
  EXPECT_FALSE(permit.end()) << "no pause left once resumed";
  EXPECT_EQ(pauses.count(), 1) << "the watch paused a paused guest again";
}

TEST(RunPermit, AGrantNeverMovesThePermitBack) {
  Pauses pauses;
  RunPermit permit(pauses.asker(), seconds(60));
  permit.grant_from(Clock::now());
  // An older moment (an acknowledgement of an earlier epoch) changes nothing.
  permit.grant_from(Clock::now() - seconds(120));
  int resumed = 0;
  EXPECT_TRUE(permit.resume_if_valid([&] { ++resumed; }));
  EXPECT_EQ(resumed, 1);
  EXPECT_EQ(pauses.count(), 0);
}

TEST(RunPermit, ACheckpointsPauseLeftInPlaceIsLiftedOnlyByEndOrGrant) {
  Pauses pauses;
  RunPermit permit(pauses.asker(), seconds(60));
  permit.grant_from(Clock::now());
  permit.keep_paused();
  EXPECT_TRUE(permit.grant_from(Clock::now())) << "the kept pause waits for a resume";
  EXPECT_TRUE(permit.resume_if_valid([] {}));
  permit.keep_paused();
  EXPECT_TRUE(permit.end());
  EXPECT_EQ(pauses.count(), 0);
}

TEST(RunPermit, RevokedTheGuestPausesAtOnceAndRunsOnlyAfterTheEnd) {
  Pauses pauses;
  RunPermit permit(pauses.asker(), seconds(60));
  permit.grant_from(Clock::now());
  permit.revoke();
  EXPECT_EQ(pauses.count(), 1) << "the pause is asked before revoke returns";
  int resumed = 0;
  EXPECT_FALSE(permit.resume_if_valid([&] { ++resumed; }));
  permit.grant_from(Clock::now() - seconds(59));  // a late ack cannot lift it
  EXPECT_FALSE(permit.resume_if_valid([&] { ++resumed; }));
  EXPECT_EQ(resumed, 0);
  EXPECT_TRUE(permit.end()) << "the caller resumes the guest after the end";
  EXPECT_TRUE(permit.resume_if_valid([&] { ++resumed; }));
  EXPECT_EQ(resumed, 1);
  EXPECT_EQ(pauses.count(), 1);
}

// What the passive makes of the Hello's run_permit_ms.
TEST(PassiveSilenceLimit, ThePermitPlusItsMarginAndBadPermitsRefused) {
  EXPECT_EQ(passive_silence_limit(500), milliseconds(750));
  EXPECT_EQ(passive_silence_limit(100), milliseconds(350));
  EXPECT_EQ(passive_silence_limit(2000), milliseconds(3000));
  EXPECT_EQ(passive_silence_limit(60000), milliseconds(90000));
  for (uint32_t bad : {0u, 99u, 60001u, 0xffffffffu}) {
    const std::string why = input_error([&] { passive_silence_limit(bad); });
    EXPECT_NE(why.find("the active's run permit is " + std::to_string(bad) +
                       " ms, not within 100 to 60000 ms"),
              std::string::npos)
        << why;
  }
}

}  // namespace
}  // namespace keel::migration
