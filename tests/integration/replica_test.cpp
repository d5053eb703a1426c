// Replica streaming between keel-vmm processes over loopback (label kvm):
// keelctl replicate to a keel-vmm --replica-of, epochs acknowledged while
// the test guest rewrites memory; the active killed with SIGKILL and the
// passive taking over from its last epoch, the guest carrying on without a
// reboot and its memory checked whole by the guest itself; output commit
// (a UDP echo's answers held until the passive acknowledged their epoch);
// the passive stopped (the active's guest waits past its run permit, and
// beats on once the passive answers again) and killed (the guest waits
// until replica-stop --run-on runs it on, unprotected; a plain
// replica-stop is refused), a new
// passive synced, replica-stop (the passive drops its copy; one stopped
// cannot, and the guest waits); a disk
// replicated into the passive's own image, matching its memory after a
// takeover; the active or the passive killed during a switchover (held
// up by the passive stopped); a switchover the passive does not confirm
// (the guest waits for the operator); and the refusals.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <functional>
#include <string>
#include <thread>

#include "common/fence_deadline.h"
#include "proto/control.pb.h"
#include "tests/support/keelctl_result.h"
#include "tests/support/live_vmm.h"
#include "tests/support/net_namespace.h"
#include "tests/support/net_peer.h"
#include "tests/support/scratch_dir.h"
#include "tests/support/vmm_run.h"

namespace keel::testing {
namespace {

namespace pb = ::keel::api::v1;
using std::chrono::milliseconds;
using std::chrono::seconds;

std::vector<std::string> testos(const std::string& cmdline) {
  return {"--kernel", testos_bzimage(), "--cpus", "2", "--memory", "256M", "--cmdline", cmdline};
}

// A keel-vmm keeping a replica, listening on a loopback port of its own.
struct Passive {
  std::string address;
  std::unique_ptr<LiveVmm> vmm;
};
Passive passive(std::vector<std::string> extra = {}) {
  Passive p;
  std::vector<std::string> args{"--replica-of", "tcp:127.0.0.1:0"};
  args.insert(args.end(), extra.begin(), extra.end());
  p.vmm = std::make_unique<LiveVmm>(args);
  p.address = p.vmm->incoming_address(seconds(30), "waiting for a replica stream on ");
  EXPECT_EQ(p.address.rfind("tcp:127.0.0.1:", 0), 0u) << p.vmm->describe();
  return p;
}

pb::Response call(const LiveVmm& vmm, std::vector<std::string> args,
                  milliseconds timeout = seconds(60)) {
  args.insert(args.begin(), "--json");
  return parse_json(vmm.keelctl(args, timeout));
}

// Polls replica-status (an answer at a time, no sleeping between) until
// `done` holds or `timeout` passes; the last status.
pb::ReplicaInfo replica_until(const LiveVmm& vmm,
                              const std::function<bool(const pb::ReplicaInfo&)>& done,
                              milliseconds timeout) {
  const auto end = std::chrono::steady_clock::now() + timeout;
  pb::ReplicaInfo info;
  do {
    info = call(vmm, {"replica-status"}).replica_status();
    if (done(info)) break;
    std::this_thread::sleep_for(milliseconds(50));  // a status every 50 ms, not a spin
  } while (std::chrono::steady_clock::now() < end);
  return info;
}

uint64_t last_beat(const LiveVmm& vmm) {
  auto lines = vmm.lines("testos: beat ");
  while (!lines.empty() && lines.back().text.find(" t_us=") == std::string::npos) lines.pop_back();
  return lines.empty() ? 0 : field_u64(lines.back().text, "seq");
}

TEST(Replica, PassiveTakesOverFromItsLastEpochWhenTheActiveIsKilled) {
  // The guest rewrites 16 MiB over and over, a pass number in every word,
  // and checks all of it at the end: a copy whose memory and vCPU state
  // came from different moments fails that check.
  LiveVmm active(testos("job=dirtier mib=16 seconds=45 interval_ms=20 rate_mbps=8"));
  ASSERT_TRUE(active.wait_line("testos: dirtier start ", 0, seconds(300))) << active.describe();
  ASSERT_TRUE(active.wait_line("testos: beat seq=3 ")) << active.describe();
  Passive p = passive();

  pb::Response started = call(active, {"replicate", p.address}, seconds(600));
  ASSERT_TRUE(started.ok()) << started.error().message() << active.describe() << p.vmm->describe();
  EXPECT_EQ(started.replicate().phase(), pb::REPLICA_PHASE_PROTECTED);
  EXPECT_EQ(started.replicate().role(), pb::REPLICA_ROLE_ACTIVE);
  EXPECT_GE(started.replicate().epoch(), 1u);

  // The copy is held: its status says so, and it runs nothing.
  pb::Response held = call(*p.vmm, {"status"});
  EXPECT_EQ(held.status().state(), pb::RUN_STATE_REPLICA) << p.vmm->describe();
  pb::Response refused = call(*p.vmm, {"pause"});
  EXPECT_FALSE(refused.ok());
  EXPECT_NE(refused.error().message().find("a passive replica"), std::string::npos)
      << refused.error().message();
  refused = call(active, {"takeover"});
  EXPECT_NE(refused.error().message().find("not a passive replica"), std::string::npos)
      << refused.error().message();
  refused = call(active, {"pause"});
  EXPECT_EQ(refused.error().code(), pb::ERROR_CODE_BUSY) << refused.error().message();

  // Epochs go on while the guest writes.
  pb::ReplicaInfo info = replica_until(
      active, [](const pb::ReplicaInfo& i) { return i.epoch() >= 20; }, seconds(120));
  ASSERT_GE(info.epoch(), 20u) << active.describe();
  EXPECT_EQ(info.phase(), pb::REPLICA_PHASE_PROTECTED);
  EXPECT_GT(info.last_epoch_pages(), 0u);
  EXPECT_GT(info.max_pause_us(), 0u);
  std::fprintf(stderr,
               "epoch %llu: target %u ms, last epoch %.1f ms with %llu pages, pause last %.3f ms "
               "longest %.3f ms, %.2f%% paused, %.1f MB/s\n",
               static_cast<unsigned long long>(info.epoch()), info.epoch_target_ms(),
               static_cast<double>(info.last_epoch_us()) / 1000,
               static_cast<unsigned long long>(info.last_epoch_pages()),
               static_cast<double>(info.last_pause_us()) / 1000,
               static_cast<double>(info.max_pause_us()) / 1000, info.paused_percent(),
               static_cast<double>(info.bandwidth_bytes_per_s()) / 1e6);
  pb::ReplicaInfo copy = call(*p.vmm, {"replica-status"}).replica_status();
  EXPECT_EQ(copy.role(), pb::REPLICA_ROLE_PASSIVE);
  EXPECT_GE(copy.epoch(), 1u);

  ASSERT_EQ(::kill(active.pid(), SIGKILL), 0);
  active.wait_exit(seconds(30));
  const uint64_t beat_before = last_beat(active);
  ASSERT_GT(beat_before, 3u);

  pb::Response took = call(*p.vmm, {"takeover"});
  ASSERT_TRUE(took.ok()) << took.error().message() << p.vmm->describe();
  EXPECT_GE(took.takeover().epoch(), info.epoch());

  // The guest carries on where the last epoch left it: no boot, beats that
  // continue the active's (a few printed after that epoch come again).
  auto first = p.vmm->wait_line("testos: beat seq=", 0, seconds(60));
  ASSERT_TRUE(first) << p.vmm->describe();
  const uint64_t resumed_at = field_u64(first->text, "seq");
  EXPECT_GT(resumed_at, 3u) << first->text;
  EXPECT_LE(resumed_at, beat_before + 1) << first->text;
  EXPECT_TRUE(p.vmm->lines("testos: dirtier start").empty()) << p.vmm->describe();
  EXPECT_EQ(call(*p.vmm, {"status"}).status().state(), pb::RUN_STATE_RUNNING);
  ASSERT_TRUE(p.vmm->wait_line("testos: dirtier OK ", 0, seconds(300))) << p.vmm->describe();
  EXPECT_TRUE(p.vmm->lines("testos: dirtier BAD").empty()) << p.vmm->describe();
  EXPECT_EQ(p.vmm->wait_exit(seconds(60)), 0) << p.vmm->describe();
}

// Disk replication: the guest writes random extents of its disk (paced),
// keeps each one's checksum in its memory, and at the end reads back every
// write no later one overlapped. Killed midway, the active's guest goes on
// from the passive's own image: unless that disk holds exactly what the
// guest had written at the checkpoint its memory comes from, the check
// fails.
TEST(Replica, PassiveDiskMatchesItsMemoryAfterATakeover) {
  ScratchDir scratch("keel-replica-disk");
  const std::string mine = scratch.sparse_file("active.img", 16 << 20);
  const std::string copy = scratch.sparse_file("passive.img", 16 << 20);
  std::vector<std::string> args = testos("job=disk mode=random mib=8 ops=2000 seed=11 rate_mbps=1");
  args.insert(args.end(), {"--disk", "path=" + mine});
  LiveVmm active(args);
  ASSERT_TRUE(active.wait_line("testos: disk progress mode=random ops=50", 0, seconds(300)))
      << active.describe();

  {
    // The active's own image is no copy: refused by the passive, by name.
    LiveVmm same({"--replica-of", "tcp:127.0.0.1:0", "--disk", "path=" + mine});
    const std::string address =
        same.incoming_address(seconds(30), "waiting for a replica stream on ");
    pb::Response refused = call(active, {"replicate", address}, seconds(120));
    EXPECT_FALSE(refused.ok());
    EXPECT_NE(refused.error().message().find("own copy"), std::string::npos)
        << refused.error().message();
    EXPECT_EQ(same.wait_exit(seconds(30)), 1) << same.describe();
  }

  Passive p;
  p.vmm = std::make_unique<LiveVmm>(
      std::vector<std::string>{"--replica-of", "tcp:127.0.0.1:0", "--disk", "path=" + copy});
  p.address = p.vmm->incoming_address(seconds(30), "waiting for a replica stream on ");
  pb::Response started = call(active, {"replicate", p.address}, seconds(600));
  ASSERT_TRUE(started.ok()) << started.error().message() << p.vmm->describe();
  const size_t from = active.line_count();
  ASSERT_TRUE(active.wait_line("testos: disk progress mode=random ops=", from, seconds(120)));
  pb::ReplicaInfo info = replica_until(
      active, [](const pb::ReplicaInfo& i) { return i.epoch() >= 5; }, seconds(120));
  ASSERT_GE(info.epoch(), 5u);
  ASSERT_TRUE(active.lines("testos: disk OK").empty()) << "the job ended before the fault";

  ASSERT_EQ(::kill(active.pid(), SIGKILL), 0);
  active.wait_exit(seconds(30));
  pb::Response took = call(*p.vmm, {"takeover"});
  ASSERT_TRUE(took.ok()) << took.error().message() << p.vmm->describe();
  ASSERT_TRUE(p.vmm->wait_line("testos: disk OK mode=random ", 0, seconds(600)))
      << p.vmm->describe();
  EXPECT_TRUE(p.vmm->lines("testos: disk FAIL").empty()) << p.vmm->describe();
  EXPECT_TRUE(p.vmm->lines("testos: disk bad").empty()) << p.vmm->describe();
  EXPECT_TRUE(p.vmm->lines("testos: disk device").empty()) << "booted again";
  EXPECT_EQ(p.vmm->wait_exit(seconds(60)), 0) << p.vmm->describe();
}

uint64_t net_counter(const LiveVmm& vmm, const std::string& name) {
  const pb::Response status = call(vmm, {"status"});
  for (const auto& device : status.status().devices()) {
    if (device.type() != "virtio-net") continue;
    auto it = device.counters().find(name);
    return it == device.counters().end() ? 0 : it->second;
  }
  return 0;
}

// Output commit: the guest's answers leave its host only once the passive
// acknowledged the epoch they were sent in. A passive held stopped
// (SIGSTOP) acknowledges nothing: the guest answers (its frame waits in
// the VMM), nothing reaches the peer until the passive goes on. Then the
// active is killed, and the passive's guest answers on its own tap.
TEST(Replica, OutputWaitsForThePassivesAcknowledgement) {
  NetNamespace ns("krep-a", "");
  bridge_with_second_tap(ns, "krep-br", "krep-b", "10.0.3.1/24");
  std::vector<std::string> args = testos("job=net ip=10.0.3.15 seconds=600");
  args.insert(args.end(), {"--net", "tap=krep-a,mac=52:54:00:12:34:57"});
  LiveVmm active(args);
  ASSERT_TRUE(active.wait_line("testos: net ready ", 0, seconds(300))) << active.describe();
  ASSERT_EQ(ping("10.0.3.15", 3, std::chrono::steady_clock::now() + seconds(120)), 3)
      << active.describe();
  UdpSocket udp("10.0.3.1", 0);
  auto ask = [&udp](const std::string& text) {
    udp.send_to("10.0.3.15", 7, std::vector<uint8_t>(text.begin(), text.end()));
  };
  auto answer = [&udp](milliseconds wait) {
    auto bytes = udp.receive(wait);
    return std::string(bytes.begin(), bytes.end());
  };
  ask("before");
  ASSERT_EQ(answer(seconds(5)), "before") << active.describe();

  Passive p;
  p.vmm = std::make_unique<LiveVmm>(
      std::vector<std::string>{"--replica-of", "tcp:127.0.0.1:0", "--net", "tap=krep-b"});
  p.address = p.vmm->incoming_address(seconds(30), "waiting for a replica stream on ");
  // Epochs of up to 1 s, so a run permit of 1250 ms: the request below must
  // reach the guest before the permit pauses it (with the default 500 ms a
  // slow box now and then missed that window, and the guest, rightly
  // paused, never answered).
  pb::Response started =
      call(active, {"replicate", "--max-epoch-ms", "1000", p.address}, seconds(600));
  ASSERT_TRUE(started.ok()) << started.error().message() << p.vmm->describe();
  ask("protected");
  ASSERT_EQ(answer(seconds(10)), "protected") << active.describe();
  EXPECT_GE(net_counter(active, "tx_held"), 1u);

  ASSERT_EQ(::kill(p.vmm->pid(), SIGSTOP), 0);
  const uint64_t held_before = net_counter(active, "tx_held");
  ask("while the passive is stopped");
  // The guest answers at once: its frame is held, not sent.
  const auto until = std::chrono::steady_clock::now() + seconds(5);
  while (net_counter(active, "tx_held") == held_before && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(milliseconds(20));
  EXPECT_GT(net_counter(active, "tx_held"), held_before) << active.describe();
  EXPECT_EQ(answer(milliseconds(1500)), "") << "an answer left before its epoch was acknowledged";
  ASSERT_EQ(::kill(p.vmm->pid(), SIGCONT), 0);
  EXPECT_EQ(answer(seconds(10)), "while the passive is stopped") << active.describe();

  ASSERT_EQ(::kill(active.pid(), SIGKILL), 0);
  active.wait_exit(seconds(30));
  pb::Response took = call(*p.vmm, {"takeover"});
  ASSERT_TRUE(took.ok()) << took.error().message() << p.vmm->describe();
  ask("after the takeover");
  EXPECT_EQ(answer(seconds(10)), "after the takeover") << p.vmm->describe();
  EXPECT_EQ(p.vmm->keelctl({"shutdown"}).exit_code, 0);
  EXPECT_EQ(p.vmm->wait_exit(seconds(60)), 0) << p.vmm->describe();
  EXPECT_TRUE(p.vmm->lines("testos: net FAIL").empty()) << p.vmm->describe();
}

// Planned handovers: each hop a new passive, synced, then switchover; the
// old active exits (migrated), the guest beats on where the passive was,
// and its memory, written once before the first beat, checks out at the
// end after all the hops.
TEST(Replica, SwitchoverHandsTheGuestOnFourTimes) {
  constexpr int kHops = 4;
  auto here = std::make_unique<LiveVmm>(testos("job=heartbeat interval_ms=20 count=0 mib=16"));
  ASSERT_TRUE(here->wait_line("testos: beat seq=3 ", 0, seconds(300))) << here->describe();
  for (int hop = 0; hop < kHops; ++hop) {
    SCOPED_TRACE("hop " + std::to_string(hop + 1));
    Passive next = passive();
    pb::Response started = call(*here, {"replicate", next.address}, seconds(600));
    ASSERT_TRUE(started.ok()) << started.error().message() << next.vmm->describe();
    pb::Response refused = call(*next.vmm, {"switchover"});
    EXPECT_FALSE(refused.ok());
    pb::Response done = call(*here, {"switchover"}, seconds(600));
    ASSERT_TRUE(done.ok()) << done.error().message() << here->describe() << next.vmm->describe();
    EXPECT_EQ(done.switchover().phase(), pb::REPLICA_PHASE_SWITCHED_OVER);
    EXPECT_GT(done.switchover().switchover_pause_us(), 0u);
    std::fprintf(stderr, "hop %d: switchover paused the guest %.3f ms after %llu epochs\n", hop + 1,
                 static_cast<double>(done.switchover().switchover_pause_us()) / 1000,
                 static_cast<unsigned long long>(done.switchover().epoch()));
    EXPECT_EQ(here->wait_exit(seconds(60)), 0) << here->describe();
    EXPECT_NE(here->errors().find("(switchover, paused "), std::string::npos) << here->describe();
    const uint64_t before = last_beat(*here);
    ASSERT_TRUE(next.vmm->wait_line("testos: beat seq=" + std::to_string(before + 3) + " "))
        << next.vmm->describe();
    EXPECT_TRUE(next.vmm->lines("testos: heartbeat filled").empty()) << "booted again";
    EXPECT_EQ(call(*next.vmm, {"status"}).status().state(), pb::RUN_STATE_RUNNING);
    here = std::move(next.vmm);
  }
  EXPECT_EQ(here->keelctl({"shutdown"}).exit_code, 0);
  EXPECT_EQ(here->wait_exit(seconds(60)), 0) << here->describe();
  EXPECT_FALSE(here->lines("testos: heartbeat memory OK").empty()) << here->describe();
}

// A guest writing memory as fast as it can: the switchover's last epoch
// pre-copies round after round, throttling the writer when a round does
// not shrink what is left, and the memory checks out where it arrives.
TEST(Replica, SwitchoverOfAGuestWritingFlatOut) {
  LiveVmm active(testos("job=dirtier mib=32 seconds=60 interval_ms=20"));
  ASSERT_TRUE(active.wait_line("testos: dirtier pass=1 ", 0, seconds(300))) << active.describe();
  Passive next = passive();
  pb::Response started = call(active, {"replicate", next.address}, seconds(600));
  ASSERT_TRUE(started.ok()) << started.error().message() << next.vmm->describe();
  pb::Response done = call(active, {"switchover"}, seconds(600));
  ASSERT_TRUE(done.ok()) << done.error().message() << active.describe() << next.vmm->describe();
  EXPECT_EQ(done.switchover().phase(), pb::REPLICA_PHASE_SWITCHED_OVER);
  std::fprintf(stderr, "switchover of the dirtier: paused %.3f ms, vCPUs throttled to %u%%\n",
               static_cast<double>(done.switchover().switchover_pause_us()) / 1000,
               100 - done.switchover().throttle_percent());
  EXPECT_EQ(active.wait_exit(seconds(60)), 0) << active.describe();
  EXPECT_TRUE(next.vmm->lines("testos: dirtier start").empty()) << "booted again";
  ASSERT_TRUE(next.vmm->wait_line("testos: dirtier OK ", 0, seconds(600))) << next.vmm->describe();
  EXPECT_TRUE(next.vmm->lines("testos: dirtier BAD").empty()) << next.vmm->describe();
}

// A fault during a switchover. So that it surely comes during one, the
// passive is stopped (SIGSTOP) first: the switchover asked for meanwhile
// waits for its acknowledgement. The active killed (the passive continued
// after): the passive takes over from its last epoch, the dirtier's own
// check of all its memory passing, no reboot. The passive killed (a
// replica-stop refused just before: a switchover under way ends on its
// own): the active's guest waits, held, and replica-stop runs it on, its
// memory whole too.
TEST(Replica, FaultsDuringASwitchover) {
  for (const bool active_dies : {true, false}) {
    SCOPED_TRACE(active_dies ? "the active killed" : "the passive killed");
    LiveVmm active(testos("job=dirtier mib=32 seconds=45 interval_ms=20"));
    ASSERT_TRUE(active.wait_line("testos: dirtier pass=1 ", 0, seconds(300))) << active.describe();
    Passive next = passive();
    pb::Response started = call(active, {"replicate", next.address}, seconds(600));
    ASSERT_TRUE(started.ok()) << started.error().message() << next.vmm->describe();
    ASSERT_EQ(::kill(next.vmm->pid(), SIGSTOP), 0);
    // Its answer: refused, or no answer at all from a killed active.
    CommandResult answered;
    std::thread asking([&] { answered = active.keelctl({"switchover"}, seconds(600)); });
    const pb::ReplicaInfo switching = replica_until(
        active, [](const pb::ReplicaInfo& i) { return i.phase() != pb::REPLICA_PHASE_PROTECTED; },
        seconds(60));
    EXPECT_EQ(switching.phase(), pb::REPLICA_PHASE_SWITCHING_OVER) << switching.ShortDebugString();
    if (!active_dies) {
      pb::Response stop = call(active, {"replica-stop"});
      EXPECT_EQ(stop.error().code(), pb::ERROR_CODE_BUSY) << stop.ShortDebugString();
      EXPECT_NE(stop.error().message().find("a switchover is under way"), std::string::npos)
          << stop.error().message();
    }
    LiveVmm& victim = active_dies ? active : *next.vmm;
    ASSERT_EQ(::kill(victim.pid(), SIGKILL), 0);
    if (active_dies) {
      ASSERT_EQ(::kill(next.vmm->pid(), SIGCONT), 0);
    }
    asking.join();
    EXPECT_NE(answered.exit_code, 0) << "the switchover went through\n" << show(answered);
    victim.wait_exit(seconds(30));
    LiveVmm& survivor = active_dies ? *next.vmm : active;
    if (active_dies) {
      // Once its stream ended: a takeover asked for before waits for that.
      pb::Response took = call(survivor, {"takeover"});
      ASSERT_TRUE(took.ok()) << took.error().message() << survivor.describe();
    } else {
      const pb::ReplicaInfo held = replica_until(
          survivor, [](const pb::ReplicaInfo& i) { return i.phase() == pb::REPLICA_PHASE_FAILED; },
          seconds(60));
      ASSERT_EQ(held.phase(), pb::REPLICA_PHASE_FAILED) << held.ShortDebugString();
      EXPECT_TRUE(held.guest_held()) << held.ShortDebugString();
      pb::Response run_on = call(survivor, {"replica-stop", "--run-on"});
      ASSERT_TRUE(run_on.ok()) << run_on.error().message();
    }
    ASSERT_TRUE(survivor.wait_line("testos: dirtier OK ", 0, seconds(600))) << survivor.describe();
    EXPECT_TRUE(survivor.lines("testos: dirtier BAD").empty()) << survivor.describe();
    if (active_dies) {
      EXPECT_TRUE(survivor.lines("testos: dirtier start").empty()) << "booted again";
    }
  }
}

// Go sent, and the passive does not confirm (here it cannot run the copy:
// its host's fence deadline passed): the passive may run the guest, so
// the active's waits paused (UNCERTAIN), and nothing resumes it, not even
// a resume after a fence; only the operator's replica-stop (the passive's
// copy surely never ran) runs it on here, its memory whole.
TEST(Replica, AnUncertainSwitchoverIsLeftToTheOperator) {
  ScratchDir dir("keel-replica-fence");
  auto fence = FenceDeadline::create(dir / "fence", FenceDeadline::now_ns() + 600'000'000'000ull);
  LiveVmm active(testos("job=heartbeat interval_ms=20 count=0 mib=8"));
  ASSERT_TRUE(active.wait_line("testos: beat seq=3 ", 0, seconds(300))) << active.describe();
  Passive next = passive({"--fence-file", dir / "fence"});
  pb::Response started = call(active, {"replicate", next.address}, seconds(600));
  ASSERT_TRUE(started.ok()) << started.error().message() << next.vmm->describe();

  fence.set_deadline_ns(0);
  pb::Response failed = call(active, {"switchover"}, seconds(600));
  EXPECT_FALSE(failed.ok()) << "switched over to a fenced host";
  EXPECT_NE(failed.error().message().find("could not run the guest"), std::string::npos)
      << failed.error().message();
  const pb::ReplicaInfo uncertain = call(active, {"replica-status"}).replica_status();
  ASSERT_EQ(uncertain.phase(), pb::REPLICA_PHASE_UNCERTAIN) << uncertain.ShortDebugString();
  EXPECT_NE(uncertain.error().find("replica-stop --run-on runs the guest on here"),
            std::string::npos)
      << uncertain.error();
  EXPECT_EQ(call(active, {"status"}).status().state(), pb::RUN_STATE_PAUSED) << active.describe();
  for (const char* refused : {"resume", "shutdown"}) {
    pb::Response answer = call(active, {refused});
    EXPECT_EQ(answer.error().code(), pb::ERROR_CODE_BUSY) << refused << answer.ShortDebugString();
    EXPECT_NE(answer.error().message().find("did not confirm"), std::string::npos)
        << answer.error().message();
  }
  EXPECT_TRUE(next.vmm->lines("testos: beat ").empty()) << next.vmm->describe();
  // A plain stop (one meant for a replication under way) does not run it.
  pb::Response plain = call(active, {"replica-stop"});
  EXPECT_EQ(plain.error().code(), pb::ERROR_CODE_INVALID_STATE) << plain.ShortDebugString();
  EXPECT_NE(plain.error().message().find("--run-on"), std::string::npos) << plain.error().message();
  EXPECT_EQ(call(active, {"status"}).status().state(), pb::RUN_STATE_PAUSED) << active.describe();

  pb::Response run_on = call(active, {"replica-stop", "--run-on"});
  ASSERT_TRUE(run_on.ok()) << run_on.error().message();
  EXPECT_EQ(run_on.replica_stop().phase(), pb::REPLICA_PHASE_FAILED);
  const uint64_t beat = last_beat(active);
  ASSERT_TRUE(active.wait_line("testos: beat seq=" + std::to_string(beat + 3) + " "))
      << active.describe();
  EXPECT_TRUE(call(active, {"pause"}).ok());
  EXPECT_TRUE(call(active, {"resume"}).ok());
  EXPECT_EQ(active.keelctl({"shutdown"}).exit_code, 0);
  EXPECT_EQ(active.wait_exit(seconds(60)), 0) << active.describe();
  EXPECT_FALSE(active.lines("testos: heartbeat memory OK").empty()) << active.describe();
}

TEST(Replica, ActiveRunsOnWhenItsPassiveDiesOrIsStopped) {
  LiveVmm active(testos("job=heartbeat interval_ms=20 count=0 mib=8"));
  ASSERT_TRUE(active.wait_line("testos: beat seq=3 ", 0, seconds(300))) << active.describe();

  {
    // A keel-vmm waiting for a migration is not a passive: refused by name.
    LiveVmm incoming({"--incoming", "tcp:127.0.0.1:0"});
    const std::string address = incoming.incoming_address(seconds(30));
    pb::Response refused = call(active, {"replicate", address}, seconds(120));
    EXPECT_FALSE(refused.ok());
    EXPECT_NE(refused.error().message().find("--replica-of"), std::string::npos)
        << refused.error().message();
  }

  // The passive dies: the guest waits here (the passive might have run it),
  // its status says so, and replica-stop runs it on, unprotected.
  Passive first = passive();
  pb::Response started = call(active, {"replicate", first.address}, seconds(600));
  ASSERT_TRUE(started.ok()) << started.error().message() << first.vmm->describe();
  pb::Response busy = call(active, {"replicate", first.address});
  EXPECT_EQ(busy.error().code(), pb::ERROR_CODE_BUSY) << busy.error().message();

  // The passive stops answering: past the run permit the guest waits for it
  // (the passive might take over), and beats on once it answers again.
  const uint32_t permit_ms = started.replicate().run_permit_ms();
  EXPECT_GE(permit_ms, 500u);
  ASSERT_EQ(::kill(first.vmm->pid(), SIGSTOP), 0);
  const auto silenced = std::chrono::steady_clock::now();
  // The guest's own view, polled: paused (a checkpoint's pause is as long
  // as a status call at most, so the permit's is the one seen after it).
  std::this_thread::sleep_for(milliseconds(permit_ms + 200));
  EXPECT_EQ(call(active, {"status"}).status().state(), pb::RUN_STATE_PAUSED) << active.describe();
  const uint64_t waiting = last_beat(active);
  std::this_thread::sleep_for(milliseconds(700));  // no beat while it waits
  EXPECT_EQ(last_beat(active), waiting) << active.describe();
  EXPECT_LT(std::chrono::steady_clock::now() - silenced, seconds(3))
      << "the window outlasted the active's wait for an acknowledgement";
  ASSERT_EQ(::kill(first.vmm->pid(), SIGCONT), 0);
  ASSERT_TRUE(active.wait_line("testos: beat seq=" + std::to_string(waiting + 3) + " "))
      << active.describe();
  EXPECT_EQ(call(active, {"replica-status"}).replica_status().phase(), pb::REPLICA_PHASE_PROTECTED);

  ASSERT_EQ(::kill(first.vmm->pid(), SIGKILL), 0);
  pb::ReplicaInfo lost = replica_until(
      active, [](const pb::ReplicaInfo& i) { return i.phase() == pb::REPLICA_PHASE_FAILED; },
      seconds(60));
  EXPECT_EQ(lost.phase(), pb::REPLICA_PHASE_FAILED);
  EXPECT_TRUE(lost.guest_held());
  EXPECT_NE(lost.error().find("the guest is paused here"), std::string::npos) << lost.error();
  EXPECT_EQ(call(active, {"status"}).status().state(), pb::RUN_STATE_PAUSED) << active.describe();
  pb::Response held = call(active, {"replicate", first.address});
  EXPECT_EQ(held.error().code(), pb::ERROR_CODE_BUSY) << held.error().message();
  EXPECT_NE(held.error().message().find("failed replication"), std::string::npos)
      << held.error().message();
  EXPECT_FALSE(call(active, {"replica-stop"}).ok()) << "a plain stop ran the held guest";
  pb::Response run_on = call(active, {"replica-stop", "--run-on"});
  ASSERT_TRUE(run_on.ok()) << run_on.error().message();
  EXPECT_FALSE(run_on.replica_stop().guest_held());
  EXPECT_NE(run_on.replica_stop().error().find("unprotected"), std::string::npos)
      << run_on.replica_stop().error();
  const uint64_t beat = last_beat(active);
  ASSERT_TRUE(active.wait_line("testos: beat seq=" + std::to_string(beat + 5) + " "))
      << active.describe();

  // A new passive, then replica-stop: the passive drops its copy and exits 0.
  Passive second = passive();
  started = call(active, {"replicate", second.address, "--epoch-ms", "50"}, seconds(600));
  ASSERT_TRUE(started.ok()) << started.error().message() << second.vmm->describe();
  // The target starts there and grows only while pauses take over 5% of it.
  EXPECT_GE(started.replicate().epoch_target_ms(), 50u);
  EXPECT_LE(started.replicate().epoch_target_ms(), 500u);
  pb::Response stopped = call(active, {"replica-stop"});
  ASSERT_TRUE(stopped.ok()) << stopped.error().message();
  EXPECT_EQ(second.vmm->wait_exit(seconds(60)), 0) << second.vmm->describe();
  EXPECT_NE(second.vmm->errors().find("the active ended the replication"), std::string::npos)
      << second.vmm->describe();
  pb::ReplicaInfo ended = replica_until(
      active, [](const pb::ReplicaInfo& i) { return i.phase() == pb::REPLICA_PHASE_STOPPED; },
      seconds(30));
  EXPECT_EQ(ended.phase(), pb::REPLICA_PHASE_STOPPED);

  // A stop the passive cannot hear (it is stopped): it might run the copy
  // yet, so the guest waits until replica-stop runs it on; the passive,
  // going on, reads the end and drops its copy.
  Passive third = passive();
  started = call(active, {"replicate", third.address}, seconds(600));
  ASSERT_TRUE(started.ok()) << started.error().message() << third.vmm->describe();
  ASSERT_EQ(::kill(third.vmm->pid(), SIGSTOP), 0);
  ASSERT_TRUE(call(active, {"replica-stop"}).ok());
  const pb::ReplicaInfo unheard = replica_until(
      active, [](const pb::ReplicaInfo& i) { return i.guest_held(); }, seconds(60));
  EXPECT_TRUE(unheard.guest_held()) << unheard.error();
  EXPECT_EQ(call(active, {"status"}).status().state(), pb::RUN_STATE_PAUSED) << active.describe();
  ASSERT_EQ(::kill(third.vmm->pid(), SIGCONT), 0);
  EXPECT_EQ(third.vmm->wait_exit(seconds(60)), 0) << third.vmm->describe();
  ASSERT_TRUE(call(active, {"replica-stop", "--run-on"}).ok());

  // Not busy any more: the guest pauses and resumes as before.
  EXPECT_TRUE(call(active, {"pause"}).ok());
  EXPECT_TRUE(call(active, {"resume"}).ok());
  const uint64_t later = last_beat(active);
  ASSERT_TRUE(active.wait_line("testos: beat seq=" + std::to_string(later + 3) + " "))
      << active.describe();
  EXPECT_TRUE(active.keelctl({"shutdown"}).exit_code == 0);
  EXPECT_EQ(active.wait_exit(seconds(60)), 0) << active.describe();
  EXPECT_NE(active.console().back().find("testos: heartbeat memory OK"), std::string::npos)
      << active.describe();
}

}  // namespace
}  // namespace keel::testing
