// VMs running in clusters of 3 and 5 hosts made of network namespaces,
// each with its own etcd member, keel-agent and pool (KVM directly or in
// the box): started on the host the agent picks, one owner at a time,
// adopted by a restarted agent, live-migrated off a drained host with their
// disks over NBD, paused when their host is cut off or its agent stopped,
// not started elsewhere while the owner's lease lives, taken back and
// resumed when the host returns (or discarded there when they moved).
#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>

#include "proto/agent.pb.h"
#include "tests/support/cluster_consoles.h"
#include "tests/support/http_client.h"
#include "tests/support/keelctl_result.h"
#include "tests/support/live_vmm.h"
#include "tests/support/test_cluster.h"
#include "tests/support/vmm_run.h"

namespace keel::testing {
namespace {

namespace api = ::keel::agent::v1;
using std::chrono::milliseconds;
using std::chrono::seconds;
using Clock = std::chrono::steady_clock;

// keel-vmm's status through its socket; a default one when it does not
// answer.
keel::api::v1::StatusResult vmm_status(const std::string& socket) {
  auto r = run_command({keelctl_path(), "--socket", socket, "--json", "status"}, seconds(30));
  keel::api::v1::Response response;
  if (r.exit_code != 0 || !google::protobuf::util::JsonStringToMessage(r.out, &response).ok()) {
    return {};
  }
  return response.status();
}

api::VmListResponse vm_list(const TestCluster& c, unsigned host) {
  auto r = c.keelctl(host, {"--json", "vm", "list"});
  api::VmListResponse out;
  EXPECT_EQ(r.exit_code, 0) << show(r);
  EXPECT_TRUE(google::protobuf::util::JsonStringToMessage(r.out, &out).ok()) << r.out;
  return out;
}

// A guest's heartbeat across a move, on the test's clock: its console on
// the source and on the destination looked at every 5 ms; the time from
// the source's last line to the destination's first.
class MoveGap {
 public:
  MoveGap(const TestCluster& c, unsigned from, unsigned to, std::string vm)
      : c_(c), from_(from), to_(to), vm_(std::move(vm)), thread_([this] { loop(); }) {}
  ~MoveGap() {
    stop_ = true;
    thread_.join();
  }
  // In ms, once the destination printed (-1 before).
  double gap_ms() {
    std::lock_guard lock(mutex_);
    if (!first_to_ || !last_from_) return -1;
    return std::chrono::duration<double, std::milli>(*first_to_ - *last_from_).count();
  }

 private:
  void loop() {
    size_t from_size = c_.console(from_, vm_).size();
    while (!stop_) {
      const auto now = Clock::now();
      const size_t from_now = c_.console(from_, vm_).size();
      const size_t to_now = c_.console(to_, vm_).size();
      {
        std::lock_guard lock(mutex_);
        if (from_now > from_size && !first_to_) last_from_ = now;
        if (to_now > 0 && !first_to_) first_to_ = now;
      }
      from_size = from_now;
      std::this_thread::sleep_for(milliseconds(5));
    }
  }

  const TestCluster& c_;
  unsigned from_, to_;
  std::string vm_;
  std::mutex mutex_;
  std::optional<Clock::time_point> last_from_, first_to_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// h1 stores VMs only; h2 and h3 store and run them. VM a is stored on h2,
// VM b on h1 (so wherever it runs, its disks come over NBD and its boot
// files are fetched).
TEST(ClusterVms, RunMoveAndPauseWhenCutOffThenComeBack) {
  TestCluster c(3);
  // 16 MiB written at boot (so that a migration capped at 2 MB/s lasts
  // seconds); each line typed on the console answered.
  c.make_pools("beat", "job=heartbeat interval_ms=100 count=0 mib=16 listen=1");
  c.start_agent(1, {"--roles", "storage"});
  c.start_agent(2, {"--metrics", TestCluster::address(2) + ":9464"});
  c.start_agent(3);
  c.form(3);
  auto r = c.keelctl(
      1, {"vm", "create", "a", "--image", "beat", "--memory", "64M", "--storage-host", "h2"});
  ASSERT_EQ(r.exit_code, 0) << show(r);
  r = c.keelctl(
      2, {"vm", "create", "b", "--image", "beat", "--memory", "64M", "--storage-host", "h1"});
  ASSERT_EQ(r.exit_code, 0) << show(r);
  r = c.keelctl(2, {"vm", "start", "b", "--host", "h3"});
  ASSERT_EQ(r.exit_code, 0) << show(r);

  // Started from h3, placed by the agent: h2 (h3 runs b, h1 runs none),
  // with the reason.
  r = c.keelctl(3, {"vm", "start", "a"});
  ASSERT_EQ(r.exit_code, 0) << show(r) << c.console(2, "a");
  EXPECT_NE(r.out.find("started a on host h2 (the most free memory"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("h1: not a compute host"), std::string::npos) << r.out;
  const std::string socket = c.vm_socket(2, "a");
  ASSERT_TRUE(wait_until([&] { return beats_after(c, 2, "a", 0); }, seconds(120)))
      << c.console(2, "a");
  r = c.keelctl(1, {"vm", "show", "a"});
  EXPECT_NE(r.out.find("keel-vmm    running (pid "), std::string::npos) << show(r);
  ASSERT_TRUE(wait_until([&] { return beats_after(c, 3, "b", 0); }, seconds(120)))
      << c.console(3, "b");
  auto list = vm_list(c, 1);
  ASSERT_EQ(list.vms_size(), 2);
  EXPECT_TRUE(list.vms(0).running());
  EXPECT_EQ(list.vms(0).owner().host(), "h2");
  EXPECT_EQ(list.vms(0).owner().generation(), 1u);
  r = c.keelctl(1, {"vm", "start", "a"});
  EXPECT_EQ(r.exit_code, 1) << show(r);
  EXPECT_NE(r.err.find("VM a runs on host h2"), std::string::npos) << r.err;
  r = c.keelctl(1, {"--json", "cluster", "status"});
  api::ClusterStatusResponse status;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(r.out, &status).ok()) << show(r);
  for (const auto& h : status.hosts()) EXPECT_EQ(h.vms(), h.host().name() == "h1" ? 0u : 1u);

  // h2's /metrics: the cluster as h2 sees it and VM a's keel-vmm, labelled,
  // in a text Prometheus's promtool accepts.
  const std::string scraped =
      http_exchange(TestCluster::address(2) + ":9464", "GET /metrics HTTP/1.1\r\n\r\n");
  EXPECT_EQ(scraped.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << scraped.substr(0, 300);
  const std::string text = scraped.substr(scraped.find("\r\n\r\n") + 4);
  for (const std::string sample :
       {"keel_cluster_quorum{host=\"h2\"} 1\n", "keel_cluster_members{host=\"h2\"} 3\n",
        "keel_cluster_host_alive{host=\"h2\",peer=\"h3\"} 1\n",
        "keel_host_vms{host=\"h2\",state=\"running\"} 1\n",
        "keel_host_vm_metrics_unanswered{host=\"h2\"} 0\n",
        "keel_vm_running{vm=\"a\",host=\"h2\"} 1\n",
        "keel_vm_memory_bytes{vm=\"a\",host=\"h2\"} 67108864\n",
        "keel_disk_read_bytes_total{vm=\"a\",host=\"h2\",disk=\"vda\"} "}) {
    EXPECT_NE(text.find(sample), std::string::npos) << sample << " not in:\n" << text;
  }
  const std::string metrics_file = c.state_dir(1) + "/../metrics.txt";
  std::ofstream(metrics_file) << text;
  auto check =
      run_command({"sh", "-c", "promtool check metrics < '" + metrics_file + "'"}, seconds(60));
  EXPECT_EQ(check.exit_code, 0) << check.out << check.err;

  // a's console from the other hosts, relayed by the agents: its history
  // from h1 (which runs neither VM); a viewer on h2 (the agent there
  // attaches to the VMM itself) and a writer on h3 both see the guest
  // answer what the writer typed.
  r = c.keelctl(1, {"vm", "console", "a", "--dump"});
  EXPECT_EQ(r.exit_code, 0) << show(r);
  EXPECT_NE(r.out.find("testos: beat seq=1 "), std::string::npos) << show(r);
  const std::string heard = "testos: heard typed on h3";
  std::thread viewer([&] {
    auto v = c.keelctl(2, {"vm", "console", "a", "--read-only", "--history", "all"}, seconds(60),
                       [&](const CommandResult& so_far, pid_t) {
                         return so_far.out.find(heard) != std::string::npos;
                       });
    EXPECT_NE(v.out.find(heard), std::string::npos) << show(v);
  });
  const std::string typing = std::string("printf 'typed on h3\\r' | ") + keelctl_path() +
                             " --agent " + c.agent_socket(3) + " vm console a";
  auto typed = run_command({"ip", "netns", "exec", c.ns(3), "sh", "-c", typing}, seconds(60), {},
                           [&](const CommandResult& so_far, pid_t) {
                             return so_far.out.find(heard) != std::string::npos;
                           });
  EXPECT_NE(typed.out.find(heard), std::string::npos) << show(typed);
  viewer.join();
  r = c.keelctl(3, {"vm", "console", "nosuch"});
  EXPECT_EQ(r.exit_code, 1) << show(r);
  EXPECT_NE(r.err.find("no VM named 'nosuch'"), std::string::npos) << r.err;

  // keelctl top from a host that runs neither: both VMs, where they run.
  auto top = c.keelctl(1, {"top", "--once"});
  EXPECT_EQ(top.exit_code, 0) << show(top);
  EXPECT_NE(top.out.find("a                h2       running       1"), std::string::npos)
      << top.out;
  EXPECT_NE(top.out.find("b                h3       running       1"), std::string::npos)
      << top.out;
  EXPECT_EQ(top.out.find("not answering"), std::string::npos) << top.out;

  // h3's etcd member killed while b runs there: the agent renews its lease
  // through the other members, so the guest never pauses, and starts its
  // member again.
  const pid_t etcd3 = c.etcd_pid(3);
  ASSERT_GT(etcd3, 0);
  ::kill(etcd3, SIGKILL);
  const auto killed = Clock::now();
  bool b_paused = false;
  while (Clock::now() - killed < seconds(10)) {  // 2.5 times the lease's TTL
    b_paused = b_paused || vmm_status(c.vm_socket(3, "b")).paused_by_fence();
  }
  EXPECT_FALSE(b_paused) << "b paused when only its host's etcd member died";
  EXPECT_TRUE(wait_until([&] { return c.etcd_pid(3) > 0 && c.etcd_pid(3) != etcd3; }, seconds(20)))
      << "h3's agent did not start its etcd member again";

  // h2's agent restarted: the guest runs on, the VMM is adopted (the stop
  // below goes through the new agent) and the VM stays h2's. (A restart
  // longer than the lease's TTL, as in the box, lets the lease expire: the
  // VMM pauses at the fence, and the new agent takes the VM again, at the
  // next generation, since nobody else did.)
  const uint32_t pid = vmm_status(socket).pid();
  ASSERT_NE(pid, 0u);
  c.stop_agent(2);
  c.start_agent(2);
  size_t seen = c.console(2, "a").size();
  EXPECT_TRUE(wait_until([&] { return beats_after(c, 2, "a", seen); }, seconds(30)));
  EXPECT_EQ(vmm_status(socket).pid(), pid);
  list = vm_list(c, 3);
  EXPECT_EQ(list.vms(0).owner().host(), "h2");
  EXPECT_GE(list.vms(0).owner().generation(), 1u);
  r = c.keelctl(1, {"vm", "stop", "a"});
  ASSERT_EQ(r.exit_code, 0) << show(r);
  EXPECT_NE(r.out.find("stopped a on host h2"), std::string::npos) << r.out;
  EXPECT_TRUE(wait_until([&] { return !vm_list(c, 3).vms(0).running(); }, seconds(10)));

  // h3 drained: b live-migrates to h2, the one other compute host (h1
  // only stores), its heartbeat going on where it stopped; a start on the
  // drained host is refused until it is undrained.
  // keelctl events --follow on h1 meanwhile: it tells the move as it
  // happens (once it printed the log so far, it is following).
  std::mutex follow_mutex;
  std::string followed;
  std::thread follower([&] {
    auto f =
        c.keelctl(1, {"events", "--follow"}, seconds(300), [&](const CommandResult& so_far, pid_t) {
          std::lock_guard lock(follow_mutex);
          followed = so_far.out;
          return followed.find("vm-migrated  vm=b") != std::string::npos &&
                 followed.find("h2  vmm-started  vm=b") != std::string::npos;
        });
    std::lock_guard lock(follow_mutex);
    followed = f.out + f.err;
  });
  EXPECT_TRUE(wait_until(
      [&] {
        std::lock_guard lock(follow_mutex);
        return followed.find("vm-started  vm=b") != std::string::npos;
      },
      seconds(30)));
  // keelctl top on h1 meanwhile shows b migrating (at 2 MB/s its memory
  // takes seconds to send; top --once samples for 2 s).
  std::atomic<bool> drained{false};
  std::string top_seen;
  std::thread top_watch([&] {
    while (!drained) {
      auto t = c.keelctl(1, {"top", "--once"});
      if (t.out.find("b                h3       migrating") != std::string::npos) {
        top_seen = t.out;
        return;
      }
    }
  });
  std::optional<MoveGap> gap;
  gap.emplace(c, 3, 2, "b");
  r = c.keelctl(1, {"host", "drain", "h3", "--bandwidth", "2"});
  drained = true;
  top_watch.join();
  EXPECT_NE(top_seen, "") << "keelctl top never showed b migrating";
  follower.join();  // it ends once it saw the move (or in 300 s)
  ASSERT_EQ(r.exit_code, 0) << show(r) << c.console(2, "b");
  EXPECT_NE(r.out.find("b: migrated to host h2 (paused "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("host h3 is drained: it runs no VM"), std::string::npos) << r.out;
  EXPECT_LT(followed.find("h3  vm-migration-started  vm=b  peer=h2"),
            followed.find("h3  vm-migrated  vm=b  peer=h2"))
      << followed;
  EXPECT_NE(followed.find("h3  vm-migrated  vm=b  peer=h2"), std::string::npos) << followed;
  // The cluster's event log tells the move, from any host.
  std::string events;
  EXPECT_TRUE(wait_until(
      [&] {
        events = c.keelctl(1, {"events"}).out;
        return events.find("h3  vm-migrated  vm=b  peer=h2  took=") != std::string::npos;
      },
      seconds(30)))
      << events;
  EXPECT_NE(events.find("h3  vm-migration-started  vm=b  peer=h2"), std::string::npos) << events;
  EXPECT_NE(events.find("h3  host-drained"), std::string::npos) << events;
  EXPECT_LT(events.find("vm-migration-started  vm=b"), events.find("vm-migrated  vm=b"));
  // And each keel-vmm's own events, relayed by its host's agent: the
  // source's migration, the destination's start from it.
  EXPECT_TRUE(wait_until(
      [&] {
        events = c.keelctl(1, {"events"}).out;
        return events.find("h3  vmm-migration-finished  vm=b") != std::string::npos &&
               events.find("h2  vmm-started  vm=b") != std::string::npos;
      },
      seconds(30)))
      << events;
  CommandResult refused = c.keelctl(1, {"vm", "start", "a", "--host", "h3"});
  EXPECT_EQ(refused.exit_code, 1) << show(refused);
  EXPECT_NE(refused.err.find("h3: it is drained (keelctl host undrain h3)"), std::string::npos)
      << refused.err;
  ASSERT_EQ(c.keelctl(1, {"host", "undrain", "h3"}).exit_code, 0);
  const std::string socket_b = c.vm_socket(2, "b");
  ASSERT_TRUE(wait_until([&] { return beats_after(c, 2, "b", 0); }, seconds(60)))
      << c.console(2, "b");
  std::cout << r.out.substr(0, r.out.find('\n')) << "; outside, the heartbeat (every 100 ms) "
            << "stopped for " << gap->gap_ms() << " ms across the move\n";
  gap.reset();
  const auto before = beats(c, 3, "b"), after = beats(c, 2, "b");
  ASSERT_FALSE(before.empty());
  ASSERT_FALSE(after.empty());
  // A beat the guest was printing as it was paused is split by the move
  // (its start the last, unfinished line on h3, its end on h2): no whole
  // beat line on either side, yet none lost.
  const std::string h3_text = c.console(3, "b");
  const std::string h3_tail = h3_text.substr(h3_text.rfind('\n') + 1);
  const std::string split_beat = "testos: beat seq=" + std::to_string(before.back().seq + 1);
  const bool split =
      !h3_tail.empty() && (split_beat.rfind(h3_tail, 0) == 0 || h3_tail.rfind(split_beat, 0) == 0);
  EXPECT_EQ(after.front().seq, before.back().seq + (split ? 2 : 1)) << "h3 ends with: " << h3_tail;
  EXPECT_TRUE(wait_until([&] { return vmm_status(c.vm_socket(3, "b")).pid() == 0; }, seconds(10)));
  list = vm_list(c, 3);
  EXPECT_EQ(list.vms(1).owner().host(), "h2");
  EXPECT_EQ(list.vms(1).owner().generation(), 2u);

  // a started again (the next generation), then h2 cut off: its VMMs pause
  // their guests at the fence; the majority refuses to start them while
  // h2's lease lives; then it cannot start a elsewhere (its disk is on h2)
  // and starts b on h3, whose writes h1 accepts from then on, not h2's.
  r = c.keelctl(1, {"--json", "vm", "start", "a", "--host", "h2"});
  ASSERT_EQ(r.exit_code, 0) << show(r);
  api::VmStartResponse started;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(r.out, &started).ok()) << r.out;
  ASSERT_TRUE(wait_until([&] { return vmm_status(socket).state() == 1; }, seconds(60)));
  const auto cut_at = Clock::now();
  c.cut(2);
  // At once, while h2's lease surely lives.
  r = c.keelctl(1, {"vm", "start", "b"});
  EXPECT_EQ(r.exit_code, 1) << show(r);
  EXPECT_NE(r.err.find("VM b runs on host h2"), std::string::npos) << r.err;
  ASSERT_TRUE(wait_until([&] { return vmm_status(socket).paused_by_fence(); }, seconds(20)))
      << "the guest was not paused after h2 was cut off";
  const auto paused_ms = std::chrono::duration_cast<milliseconds>(Clock::now() - cut_at).count();
  std::cout << "cut link to guest paused: " << paused_ms << " ms\n";
  ASSERT_TRUE(wait_until([&] { return vmm_status(socket_b).paused_by_fence(); }, seconds(20)));
  // Asked on h2 itself: what it last knew, and what its keel-vmm says.
  r = c.keelctl(2, {"vm", "show", "a"});
  EXPECT_EQ(r.exit_code, 0) << show(r);
  EXPECT_NE(r.err.find("no quorum: shown is what this host last knew"), std::string::npos) << r.err;
  EXPECT_NE(r.out.find("keel-vmm    paused by its host's fence (pid "), std::string::npos) << r.out;
  seen = c.console(2, "a").size();
  const size_t seen_b = c.console(2, "b").size();
  EXPECT_TRUE(wait_until(
      [&] {
        auto s = c.keelctl(1, {"vm", "start", "a"});
        return s.err.find("h2: its agent is not alive") != std::string::npos;
      },
      seconds(20)))
      << "h2's lease did not expire on the majority's side";
  // (Its console on h3 from before the migration: a fresh boot starts it
  // anew.)
  const std::string old_b3 = c.console(3, "b");
  r = c.keelctl(1, {"--json", "vm", "start", "b"});
  ASSERT_EQ(r.exit_code, 0) << show(r);
  api::VmStartResponse moved;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(r.out, &moved).ok()) << r.out;
  EXPECT_EQ(moved.host(), "h3");
  EXPECT_TRUE(wait_until(
      [&] {
        const std::string now = c.console(3, "b");
        return now != old_b3 && now.find("testos: beat ") != std::string::npos;
      },
      seconds(120)))
      << c.console(3, "b");
  EXPECT_TRUE(vmm_status(socket).paused_by_fence());
  EXPECT_EQ(c.console(2, "a").size(), seen) << "the guest ran while its host was cut off";
  EXPECT_EQ(c.console(2, "b").size(), seen_b) << "b ran on h2 after its pause";
  std::ifstream log(c.log_path(1));
  const std::string h1_log((std::istreambuf_iterator<char>(log)), {});
  EXPECT_NE(h1_log.find("writes from 10.77.0.2 refused"), std::string::npos) << h1_log;

  // Back: nobody took a, so h2 takes it again (the next generation) and
  // resumes the guest; b moved (another host, a later generation): its
  // paused copy on h2 is ended, never resumed.
  c.heal(2);
  ASSERT_TRUE(wait_until([&] { return vmm_status(socket).state() == 1; }, seconds(30)))
      << "the guest was not resumed after h2 came back";
  EXPECT_TRUE(wait_until([&] { return beats_after(c, 2, "a", seen); }, seconds(30)));
  EXPECT_TRUE(wait_until([&] { return vmm_status(socket_b).pid() == 0; }, seconds(30)))
      << "h2 kept its stale copy of b";
  EXPECT_EQ(c.console(2, "b").size(), seen_b);
  list = vm_list(c, 1);
  EXPECT_EQ(list.vms(0).owner().host(), "h2");
  EXPECT_EQ(list.vms(0).owner().generation(), started.generation() + 1);
  EXPECT_EQ(list.vms(1).owner().host(), "h3");

  // h2's agent stopped (SIGSTOP): the VMMs pause themselves at the fence;
  // continued, the agent resumes them.
  c.signal_agent(2, SIGSTOP);
  const bool paused = wait_until([&] { return vmm_status(socket).paused_by_fence(); }, seconds(20));
  c.signal_agent(2, SIGCONT);
  EXPECT_TRUE(paused) << "the guest ran on under a stopped agent";
  EXPECT_TRUE(wait_until([&] { return vmm_status(socket).state() == 1; }, seconds(30)))
      << "the guest was not resumed after the agent continued";

  for (const char* vm : {"a", "b"}) {
    r = c.keelctl(3, {"vm", "stop", vm, "--force"});
    EXPECT_EQ(r.exit_code, 0) << show(r);
  }
  EXPECT_TRUE(wait_until(
      [&] {
        auto l = vm_list(c, 1);
        return !l.vms(0).running() && !l.vms(1).running();
      },
      seconds(10)));
  r = c.keelctl(3, {"vm", "delete", "a"});
  EXPECT_EQ(r.exit_code, 0) << show(r);
}

unsigned trials() {
  const char* env = std::getenv("KEEL_CLUSTER_TRIALS");
  return env ? static_cast<unsigned>(std::atoi(env)) : 2;
}

// 5 hosts, two VMs stored on h3 (always on the majority's side), split 2+3
// and 3+2 and healed, KEEL_CLUSTER_TRIALS times (2 here; the long label's
// cluster_vm_long_test runs 20): the minority's VMs pause, operations there
// are refused, the majority starts them elsewhere once the leases expired,
// and the minority, healed, discards its copies. No VM ever prints on two
// hosts in the same 20 ms.
TEST(ClusterVms, PartitionTrialsNeverRunAVmTwice) {
  TestCluster c(5);
  c.make_pools("beat", "job=heartbeat interval_ms=100 count=0");
  for (unsigned h = 1; h <= 5; ++h) c.start_agent(h);
  c.form(5);
  const std::vector<std::string> vms = {"v1", "v2"};
  for (const auto& vm : vms) {
    auto r = c.keelctl(
        3, {"vm", "create", vm, "--image", "beat", "--memory", "64M", "--storage-host", "h3"});
    ASSERT_EQ(r.exit_code, 0) << show(r);
  }
  ASSERT_EQ(c.keelctl(3, {"vm", "start", "v1", "--host", "h1"}).exit_code, 0);
  ASSERT_EQ(c.keelctl(3, {"vm", "start", "v2", "--host", "h5"}).exit_code, 0);
  ConsoleWatch watch(c, vms);
  std::vector<int64_t> paused_ms, moved_ms;
  for (unsigned trial = 0; trial < trials(); ++trial) {
    SCOPED_TRACE("trial " + std::to_string(trial));
    const std::vector<unsigned> minority =
        trial % 2 == 0 ? std::vector<unsigned>{1, 2} : std::vector<unsigned>{4, 5};
    auto in_minority = [&](unsigned h) {
      return std::find(minority.begin(), minority.end(), h) != minority.end();
    };
    // Where each VM runs now (the majority host 3 answers).
    std::map<std::string, unsigned> owner;
    const auto listed = vm_list(c, 3);
    for (const auto& row : listed.vms()) {
      ASSERT_TRUE(row.running()) << row.vm().name() << " is not running; the agents said:\n"
                                 << agents_said(c, row.vm().name());
      owner[row.vm().name()] = static_cast<unsigned>(std::stoul(row.owner().host().substr(1)));
    }
    c.split(trial % 2 == 0 ? std::vector<unsigned>{1, 2} : std::vector<unsigned>{1, 2, 3});
    // Once the split is whole (the cut itself is a moment earlier).
    const auto split_at = Clock::now();
    for (const auto& [vm, h] : owner) {
      if (!in_minority(h)) continue;
      ASSERT_TRUE(wait_until(
          [&, vm = vm, h = h] { return vmm_status(c.vm_socket(h, vm)).paused_by_fence(); },
          seconds(20)))
          << vm << " on h" << h << " ran on in the minority";
      paused_ms.push_back(
          std::chrono::duration_cast<milliseconds>(Clock::now() - split_at).count());
      auto r = c.keelctl(h, {"vm", "stop", vm});
      EXPECT_EQ(r.exit_code, 1) << show(r);
      EXPECT_NE(r.err.find("no quorum"), std::string::npos) << r.err;
      // The majority: refused while the lease lives, then started elsewhere.
      ASSERT_TRUE(wait_until(
          [&, vm = vm] {
            return c.keelctl(3, {"vm", "start", vm}).exit_code == 0;
          },
          seconds(30)))
          << vm << " never started on the majority's side";
      moved_ms.push_back(std::chrono::duration_cast<milliseconds>(Clock::now() - split_at).count());
    }
    c.unsplit();
    // Healed: every stale copy on the minority's hosts ends.
    for (const auto& [vm, h] : owner) {
      if (!in_minority(h)) continue;
      EXPECT_TRUE(wait_until(
          [&, vm = vm, h = h] { return vmm_status(c.vm_socket(h, vm)).pid() == 0; }, seconds(30)))
          << "h" << h << " kept its stale copy of " << vm;
    }
    ASSERT_TRUE(wait_until([&] { return vm_list(c, minority[0]).vms_size() == 2; }, seconds(30)));
  }
  EXPECT_TRUE(watch.overlaps().empty()) << watch.overlaps().front();
  std::sort(paused_ms.begin(), paused_ms.end());
  std::sort(moved_ms.begin(), moved_ms.end());
  if (!paused_ms.empty()) {
    std::cout << "split to the minority's VM paused: median " << paused_ms[paused_ms.size() / 2]
              << " ms; to the VM started on the majority's side: median "
              << moved_ms[moved_ms.size() / 2] << " ms, of " << paused_ms.size() << std::endl;
  }
}

}  // namespace
}  // namespace keel::testing

int main(int argc, char** argv) {
  keel::testing::enter_private_network();
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
