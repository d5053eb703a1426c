// keel-agent's cluster on hosts made of network namespaces (no KVM): 1, 3,
// 5 and 7 hosts forming, joining's refusals, quorum refused without a
// majority, a host cut off fencing itself before its lease can expire
// elsewhere, partitions healed, an agent restarted or stopped, its etcd
// killed, and malformed requests. KEEL_CLUSTER_TRIALS sets the number of
// partition trials (the cluster-long label runs 20).
#include <arpa/inet.h>
#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <thread>

#include "cluster/agent_client.h"
#include "cluster/cluster_keys.h"
#include "cluster/etcd_client.h"
#include "common/fence_deadline.h"
#include "common/unique_fd.h"
#include "tests/support/keelctl_result.h"
#include "tests/support/test_cluster.h"

namespace keel::testing {
namespace {

namespace api = keel::agent::v1;
using cluster::AgentCallError;
using cluster::AgentClient;
using std::chrono::milliseconds;
using std::chrono::seconds;
using Clock = std::chrono::steady_clock;

int64_t unix_ms() {
  return std::chrono::duration_cast<milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Host's agent on its own socket (what keelctl there talks to).
AgentClient agent_at(const TestCluster& c, unsigned host,
                     milliseconds timeout = milliseconds(5000)) {
  return AgentClient(c.agent_socket(host), timeout);
}

// Host's TLS material, as its agent keeps it.
cluster::ClusterTls tls_of(const TestCluster& c, unsigned host) {
  auto tls = cluster::ClusterTls::load(c.state_dir(host) + "/tls");
  if (!tls) throw std::runtime_error(TestCluster::name(host) + " has no TLS material");
  return *tls;
}

// Host's agent on its cluster address, as the other agents reach it.
AgentClient peer_at(unsigned host, const cluster::ChannelTls& tls,
                    milliseconds timeout = milliseconds(5000)) {
  return AgentClient(TestCluster::address(host) + ":7400", timeout, tls);
}

// An etcd client as host's agent has it (etcd admits certificates of the
// cluster's CA alone).
cluster::EtcdClient etcd_as(const TestCluster& c, unsigned host) {
  return cluster::EtcdClient({TestCluster::address(host) + ":2379"}, milliseconds(5000),
                             cluster::etcd_channel(tls_of(c, host)));
}

api::ClusterStatusResponse status_json(const TestCluster& c, unsigned host) {
  auto r = c.keelctl(host, {"--json", "cluster", "status"});
  EXPECT_EQ(r.exit_code, 0) << show(r);
  api::ClusterStatusResponse s;
  EXPECT_TRUE(google::protobuf::util::JsonStringToMessage(r.out, &s).ok()) << r.out;
  return s;
}

// The same, for loops that wait for it: an answer that is not there yet
// (an etcd member starting again, say) is an empty status, not a failure.
api::ClusterStatusResponse status_now(const TestCluster& c, unsigned host) {
  auto r = c.keelctl(host, {"--json", "cluster", "status"});
  api::ClusterStatusResponse s;
  if (r.exit_code != 0 || !google::protobuf::util::JsonStringToMessage(r.out, &s).ok()) return {};
  return s;
}

bool whole(const api::ClusterStatusResponse& s, unsigned n) {
  unsigned leaders = 0;
  for (const auto& h : s.hosts()) {
    if (!h.reachable() || !h.alive() || h.learner() || h.host().cluster_address().empty()) {
      return false;
    }
    leaders += h.leader();
  }
  return s.members() == n && s.reachable() == n && s.quorum() && s.hosts_size() == int(n) &&
         leaders == 1;
}

// Seen from `host`: n hosts, all reachable and alive, voting, one leader.
// A host's etcd may be slow to answer a probe on a loaded machine: looked
// at again for up to 15 s before it counts as a failure.
void expect_whole(const TestCluster& c, unsigned host, unsigned n) {
  api::ClusterStatusResponse s;
  wait_until(
      [&] {
        s = status_now(c, host);
        return whole(s, n);
      },
      seconds(15));
  EXPECT_TRUE(whole(s, n)) << "seen from " << TestCluster::name(host) << ":\n" << s.DebugString();
}

bool alive_seen_from(const TestCluster& c, unsigned from, unsigned host) {
  auto s = status_json(c, from);
  for (const auto& h : s.hosts()) {
    if (h.host().name() == TestCluster::name(host)) return h.alive();
  }
  return false;
}

int64_t median(std::vector<int64_t> v) {
  if (v.empty()) return -1;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

unsigned trials() {
  const char* env = std::getenv("KEEL_CLUSTER_TRIALS");
  return env ? static_cast<unsigned>(std::atoi(env)) : 2;
}

// The cluster grows from 1 to 7 hosts; at 1, 3, 5 and 7 every host sees all
// of them, reachable, alive, one leader; an 8th is refused; then 3 of the 7
// cut off from the other 4 are refused every operation while the 4 go on.
TEST(Cluster, FormsOneThreeFiveAndSevenHostClustersAndRefusesAnEighth) {
  TestCluster c(8);
  for (unsigned h = 1; h <= 8; ++h) c.start_agent(h);
  auto r = c.keelctl(1, {"cluster", "init", "--address", TestCluster::address(1)});
  ASSERT_EQ(r.exit_code, 0) << show(r);
  EXPECT_NE(r.out.find("no fault tolerance"), std::string::npos) << r.out;
  expect_whole(c, 1, 1);
  for (unsigned h = 2; h <= 7; ++h) {
    // Through a different host each time: any member admits.
    unsigned peer = 1 + (h % (h - 1));
    r = c.keelctl(h, {"cluster", "join", "--address", TestCluster::address(h), "--peer",
                      TestCluster::address(peer), "--token", c.join_token(1)});
    ASSERT_EQ(r.exit_code, 0) << TestCluster::name(h) << ": " << show(r);
    bool even = h % 2 == 0;
    EXPECT_EQ(r.out.find("an odd count is recommended") != std::string::npos, even) << r.out;
    if (h == 3 || h == 5 || h == 7) {
      for (unsigned from = 1; from <= h; ++from) expect_whole(c, from, h);
    }
  }
  r = c.keelctl(8, {"cluster", "join", "--address", TestCluster::address(8), "--peer",
                    TestCluster::address(4), "--token", c.join_token(1)});
  EXPECT_EQ(r.exit_code, 1) << show(r);
  EXPECT_NE(r.err.find("the cluster has 7 hosts, the most it can have"), std::string::npos)
      << r.err;

  // 3 | 4: the three have no majority.
  c.split({1, 2, 3});
  for (unsigned h = 1; h <= 3; ++h) {
    auto started = Clock::now();
    r = c.keelctl(h, {"host", "remove", "h7"});
    auto took = Clock::now() - started;
    EXPECT_EQ(r.exit_code, 1) << show(r);
    // The three reach one another (their probes may be late on a loaded
    // machine: at most three).
    EXPECT_TRUE(r.err.find("no quorum (3 of 7 hosts reachable)") != std::string::npos ||
                r.err.find("no quorum (2 of 7 hosts reachable)") != std::string::npos)
        << r.err;
    EXPECT_LT(took, seconds(8)) << "a refusal must come within a bounded time";
    EXPECT_FALSE(status_json(c, h).quorum());
  }
  for (unsigned h = 4; h <= 7; ++h) EXPECT_TRUE(status_json(c, h).quorum());
  c.unsplit();
  EXPECT_TRUE(wait_until([&] { return status_now(c, 1).reachable() == 7; }, seconds(20)));
  EXPECT_TRUE(wait_until([&] { return status_now(c, 2).quorum(); }, seconds(20)));
}

// A host whose link is cut refuses operations at once, fences itself before
// its lease can expire on the majority's side, and comes back when healed.
TEST(Cluster, CutHostFencesBeforeItsLeaseExpiresElsewhere) {
  TestCluster c(3);
  for (unsigned h = 1; h <= 3; ++h) c.start_agent(h);
  c.form(3);
  ASSERT_TRUE(wait_until([&] { return alive_seen_from(c, 1, 3); }, seconds(10)));

  int64_t cut_at = unix_ms();
  c.cut(3);
  auto r = c.keelctl(3, {"host", "remove", "h1"});
  EXPECT_EQ(r.exit_code, 1) << show(r);
  EXPECT_NE(r.err.find("no quorum (1 of 3 hosts reachable)"), std::string::npos) << r.err;
  // The majority sees h3's lease expire, not before TTL after the cut.
  ASSERT_TRUE(wait_until([&] { return !alive_seen_from(c, 1, 3); }, seconds(15)));
  int64_t expired_seen_at = unix_ms();
  // By then h3's fence deadline, which keel-vmm processes watch
  // (--fence-file, control_api_test), had passed: VMMs on h3 would have
  // paused their guests before the majority could start them elsewhere.
  const uint64_t expired_seen_ns = FenceDeadline::now_ns();
  auto deadline = FenceDeadline::open(c.state_dir(3) + "/fence");
  EXPECT_LT(deadline.deadline_ns(), expired_seen_ns);
  std::cout << "h3's fence deadline passed " << (expired_seen_ns - deadline.deadline_ns()) / 1000000
            << " ms before the majority saw its lease gone\n";
  // h3 is fenced: asked on its own management address (its link is down).
  EXPECT_FALSE(status_json(c, 3).quorum());

  c.heal(3);
  ASSERT_TRUE(wait_until([&] { return alive_seen_from(c, 1, 3); }, seconds(20)));
  auto hello = agent_at(c, 3).hello();
  ASSERT_GT(hello.last_fenced_unix_ms(), 0) << "h3 never fenced itself";
  int64_t fenced_after = hello.last_fenced_unix_ms() - cut_at;
  std::cout << "cut link to fenced: " << fenced_after << " ms; lease expiry seen by the "
            << "majority after " << expired_seen_at - cut_at << " ms\n";
  EXPECT_LT(hello.last_fenced_unix_ms(), expired_seen_at);
  EXPECT_LE(fenced_after, 4000) << "fenced later than the lease's TTL";
  EXPECT_FALSE(hello.fenced());
  expect_whole(c, 3, 3);
  // h3 tells the cluster's log of its fence once it reaches the majority.
  std::string events;
  EXPECT_TRUE(wait_until(
      [&] {
        events = c.keelctl(1, {"events"}).out;
        return events.find("h3  host-fenced  took=") != std::string::npos;
      },
      seconds(20)))
      << events;
}

// Split 2+3 and 3+2 and heal, again and again: each time the minority
// refuses, fences itself before the majority can see its leases expire, and
// the whole cluster comes back.
TEST(Cluster, PartitionsTwoThreeAndThreeTwoHeal) {
  TestCluster c(5);
  for (unsigned h = 1; h <= 5; ++h) c.start_agent(h);
  c.form(5);
  std::vector<int64_t> fenced_after;
  for (unsigned trial = 0; trial < trials(); ++trial) {
    std::vector<unsigned> minority =
        trial % 2 == 0 ? std::vector<unsigned>{1, 2} : std::vector<unsigned>{4, 5};
    std::vector<unsigned> majority;
    for (unsigned h = 1; h <= 5; ++h) {
      if (std::find(minority.begin(), minority.end(), h) == minority.end()) majority.push_back(h);
    }
    SCOPED_TRACE("trial " + std::to_string(trial));
    for (unsigned h = 1; h <= 5; ++h) ASSERT_TRUE(alive_seen_from(c, majority[0], h));
    int64_t split_at = unix_ms();
    // {1,2} | {3,4,5} and {1,2,3} | {4,5}: the listed side is the one
    // moved to the second bridge.
    c.split(trial % 2 == 0 ? std::vector<unsigned>{1, 2} : std::vector<unsigned>{1, 2, 3});
    for (unsigned h : minority) {
      auto r = c.keelctl(h, {"host", "remove", TestCluster::name(majority[0])});
      EXPECT_EQ(r.exit_code, 1) << show(r);
      EXPECT_TRUE(r.err.find("no quorum (2 of 5 hosts reachable)") != std::string::npos ||
                  r.err.find("no quorum (1 of 5 hosts reachable)") != std::string::npos)
          << r.err;
    }
    for (unsigned h : majority) EXPECT_TRUE(status_json(c, h).quorum());
    ASSERT_TRUE(wait_until(
        [&] {
          return !alive_seen_from(c, majority[0], minority[0]) &&
                 !alive_seen_from(c, majority[0], minority[1]);
        },
        seconds(15)));
    int64_t expired_seen_at = unix_ms();
    c.unsplit();
    for (unsigned h : minority) {
      ASSERT_TRUE(wait_until([&] { return alive_seen_from(c, majority[0], h); }, seconds(20)));
      auto hello = agent_at(c, h).hello();
      EXPECT_GT(hello.last_fenced_unix_ms(), split_at) << TestCluster::name(h);
      EXPECT_LT(hello.last_fenced_unix_ms(), expired_seen_at) << TestCluster::name(h);
      std::cout << "trial " << trial << ": " << TestCluster::name(h) << " fenced "
                << hello.last_fenced_unix_ms() - split_at << " ms after the split" << std::endl;
      fenced_after.push_back(hello.last_fenced_unix_ms() - split_at);
    }
    ASSERT_TRUE(
        wait_until([&] { return status_now(c, minority[0]).reachable() == 5; }, seconds(20)));
  }
  std::cout << "split to the minority fenced: median " << median(fenced_after) << " ms of "
            << fenced_after.size() << std::endl;
}

// The leader's host dies (SIGKILL: its etcd dies with it), again and again:
// how long until the others accept operations (a linearizable read) again.
TEST(Cluster, LeaderHostDeathTrials) {
  TestCluster c(3);
  for (unsigned h = 1; h <= 3; ++h) c.start_agent(h);
  c.form(3);
  std::vector<int64_t> took;
  for (unsigned trial = 0; trial < trials(); ++trial) {
    SCOPED_TRACE("trial " + std::to_string(trial));
    unsigned leader = 0;
    const auto before = status_json(c, 1);
    for (const auto& h : before.hosts()) {
      if (h.leader()) leader = static_cast<unsigned>(std::stoi(h.host().name().substr(1)));
    }
    ASSERT_NE(leader, 0u);
    unsigned other = leader == 1 ? 2 : 1;
    auto agent = agent_at(c, other, milliseconds(3000));
    auto killed = Clock::now();
    c.kill_agent(leader);
    // An answer that is current came through a leader: the cluster again
    // serves operations.
    ASSERT_TRUE(wait_until(
        [&] {
          try {
            return agent.status().current();
          } catch (const AgentCallError&) {
            return false;
          }
        },
        seconds(20)));
    took.push_back(std::chrono::duration_cast<milliseconds>(Clock::now() - killed).count());
    std::cout << "trial " << trial << ": leader " << TestCluster::name(leader)
              << " killed, a majority answering after " << took.back() << " ms" << std::endl;
    c.start_agent(leader);
    ASSERT_TRUE(wait_until([&] { return alive_seen_from(c, other, leader); }, seconds(20)));
    ASSERT_TRUE(wait_until([&] { return status_now(c, leader).reachable() == 3; }, seconds(20)));
  }
  std::cout << "leader's host killed to a majority answering: median " << median(took) << " ms of "
            << took.size() << std::endl;
}

// The cluster's event log (keelctl events without --socket): the same
// numbered story from every host; a reader resumes after a number; a
// follower sees a drain as it happens; a number past the newest refused.
TEST(Cluster, EventLogTheSameFromEveryHostResumedAndFollowed) {
  TestCluster c(3);
  for (unsigned h = 1; h <= 3; ++h) c.start_agent(h);
  c.form(3);
  auto joined = [&](unsigned from) {
    auto r = c.keelctl(from, {"events"});
    return r.exit_code == 0 && r.out.find("3  ") != std::string::npos ? r.out : std::string();
  };
  std::string seen;
  ASSERT_TRUE(wait_until([&] { return !(seen = joined(3)).empty(); }, seconds(30)))
      << show(c.keelctl(3, {"events"}));
  EXPECT_NE(seen.find("h1  host-joined  host h1 formed the cluster (" + TestCluster::address(1)),
            std::string::npos)
      << seen;
  EXPECT_NE(seen.find("h2  host-joined  host h2 joined"), std::string::npos) << seen;
  EXPECT_NE(seen.find("h3  host-joined  host h3 joined"), std::string::npos) << seen;
  EXPECT_EQ(seen.rfind("1  ", 0), 0u) << seen;
  EXPECT_EQ(joined(1), seen) << "every host tells the same log";

  // A follower on h2 from after event 2: event 3 at once, then the drain
  // and undrain done through h1 as they happen.
  std::string followed;
  std::thread follower([&] {
    auto r = c.keelctl(2, {"events", "--follow", "--since", "2"}, seconds(120),
                       [](const CommandResult& so_far, pid_t) {
                         return so_far.out.find("host-undrained") != std::string::npos;
                       });
    followed = r.out + r.err;
  });
  auto r = c.keelctl(1, {"host", "drain", "h3"});
  EXPECT_EQ(r.exit_code, 0) << show(r);
  r = c.keelctl(1, {"host", "undrain", "h3"});
  EXPECT_EQ(r.exit_code, 0) << show(r);
  follower.join();
  const size_t third = followed.find("3  ");
  const size_t drained = followed.find("h3  host-drained  host h3 drained");
  const size_t undrained = followed.find("h3  host-undrained");
  EXPECT_EQ(third, 0u) << followed;
  EXPECT_NE(drained, std::string::npos) << followed;
  EXPECT_NE(undrained, std::string::npos) << followed;
  EXPECT_LT(drained, undrained) << followed;
  EXPECT_EQ(followed.find("formed the cluster"), std::string::npos) << "nothing before --since\n"
                                                                    << followed;

  // Resumed after the drain: the undrain alone. JSON for scripts.
  r = c.keelctl(3, {"--json", "events", "--since", "4"});
  EXPECT_EQ(r.exit_code, 0) << show(r);
  EXPECT_NE(r.out.find("\"CLUSTER_EVENT_HOST_UNDRAINED\""), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("HOST_DRAINED"), std::string::npos) << r.out;
  r = c.keelctl(3, {"events", "--since", "99"});
  EXPECT_EQ(r.exit_code, 1) << show(r);
  EXPECT_NE(r.err.find("after 99: the cluster's newest event is 5"), std::string::npos) << r.err;
  r = c.keelctl(3, {"events", "--since", "x"});
  EXPECT_EQ(r.exit_code, 2) << show(r);
}

// What joining refuses, and what a member refuses about addresses and
// removals.
TEST(Cluster, JoinAndMembershipRefusals) {
  TestCluster c(4);
  for (unsigned h = 1; h <= 4; ++h) c.start_agent(h);
  // Not in a cluster yet.
  auto r = c.keelctl(2, {"cluster", "status"});
  EXPECT_EQ(r.exit_code, 1) << show(r);
  EXPECT_NE(r.err.find("this host is not in a cluster"), std::string::npos) << r.err;
  // A peer that is in no cluster.
  const std::string no_such_token = "keel1." + std::string(32, '0') + "." + std::string(64, '0');
  r = c.keelctl(2, {"cluster", "join", "--address", TestCluster::address(2), "--peer",
                    TestCluster::address(1), "--token", no_such_token});
  EXPECT_EQ(r.exit_code, 1) << show(r);
  EXPECT_NE(r.err.find("a host in a cluster? (keelctl cluster init there first)"),
            std::string::npos)
      << r.err;
  // An address that is not this host's, and one that is no address at all.
  r = c.keelctl(1, {"cluster", "init", "--address", TestCluster::address(2)});
  EXPECT_EQ(r.exit_code, 1) << show(r);
  EXPECT_NE(r.err.find("is not configured on any interface of this host"), std::string::npos);
  r = c.keelctl(1, {"cluster", "init", "--address", "127.0.0.1"});
  EXPECT_EQ(r.exit_code, 1) << show(r);
  EXPECT_NE(r.err.find("loopback"), std::string::npos) << r.err;
  r = c.keelctl(1, {"cluster", "init", "--address", "10.77.0"});
  EXPECT_EQ(r.exit_code, 1) << show(r);
  EXPECT_NE(r.err.find("not a numeric IPv4 or IPv6 address"), std::string::npos) << r.err;

  // A 1-host cluster may change its address; with two hosts it may not.
  r = c.keelctl(1, {"cluster", "init", "--address", TestCluster::address(1)});
  ASSERT_EQ(r.exit_code, 0) << show(r);
  r = c.keelctl(1, {"cluster", "init", "--address", TestCluster::address(1)});
  EXPECT_EQ(r.exit_code, 1) << show(r);
  EXPECT_NE(r.err.find("this host is already in cluster"), std::string::npos) << r.err;
  run_command({"ip", "-n", c.ns(1), "addr", "add", "10.77.0.51/24", "dev", "eth0"}, seconds(10));
  r = c.keelctl(1, {"host", "set-address", "10.77.0.51"});
  ASSERT_EQ(r.exit_code, 0) << show(r);
  r = c.keelctl(1, {"host", "set-address", TestCluster::address(1)});
  ASSERT_EQ(r.exit_code, 0) << show(r);
  // Joining needs the cluster's token: none, a damaged one, another
  // cluster's (its CA's fingerprint differs: nothing is sent to the peer),
  // the right CA with a wrong secret.
  const std::string token = c.join_token(1);
  const auto join_h2 = [&](const std::vector<std::string>& extra) {
    std::vector<std::string> args = {
        "cluster", "join", "--address", TestCluster::address(2), "--peer", TestCluster::address(1)};
    args.insert(args.end(), extra.begin(), extra.end());
    return c.keelctl(2, args);
  };
  r = join_h2({});
  EXPECT_EQ(r.exit_code, 2) << show(r);
  EXPECT_NE(r.err.find("--token T"), std::string::npos) << r.err;
  r = join_h2({"--token", token.substr(0, 40)});
  EXPECT_EQ(r.exit_code, 1) << show(r);
  EXPECT_NE(r.err.find("--token: "), std::string::npos) << r.err;
  r = join_h2({"--token", no_such_token});
  EXPECT_EQ(r.exit_code, 1) << show(r);
  EXPECT_NE(r.err.find("is not of the cluster the token names"), std::string::npos) << r.err;
  r = join_h2({"--token", "keel1." + std::string(32, 'a') + token.substr(38)});
  EXPECT_EQ(r.exit_code, 1) << show(r);
  EXPECT_NE(r.err.find("the join token's secret is not this cluster's"), std::string::npos)
      << r.err;
  r = c.keelctl(1, {"--json", "cluster", "status"});
  EXPECT_NE(r.out.find("\"h1\""), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("\"h2\""), std::string::npos) << "refused joins left h2 behind: " << r.out;
  r = c.keelctl(2, {"cluster", "join", "--address", TestCluster::address(2), "--peer",
                    TestCluster::address(1), "--token", c.join_token(1)});
  ASSERT_EQ(r.exit_code, 0) << show(r);
  r = c.keelctl(1, {"host", "set-address", "10.77.0.51"});
  EXPECT_EQ(r.exit_code, 1) << show(r);
  EXPECT_NE(r.err.find("the cluster address is fixed once a second host has joined"),
            std::string::npos)
      << r.err;
  // Joining twice; a name taken; a host removing itself or a live one.
  r = c.keelctl(2, {"cluster", "join", "--address", TestCluster::address(2), "--peer",
                    TestCluster::address(1), "--token", c.join_token(1)});
  EXPECT_EQ(r.exit_code, 1) << show(r);
  EXPECT_NE(r.err.find("this host is already in cluster"), std::string::npos) << r.err;
  c.stop_agent(4);
  c.start_agent(4, {"--name", "h2"});
  // (start_agent passes --name h4 first; the later --name wins.)
  r = c.keelctl(4, {"cluster", "join", "--address", TestCluster::address(4), "--peer",
                    TestCluster::address(1), "--token", c.join_token(1)});
  EXPECT_EQ(r.exit_code, 1) << show(r);
  EXPECT_NE(r.err.find("a host named 'h2' is in the cluster already"), std::string::npos) << r.err;
  r = c.keelctl(1, {"host", "remove", "h1"});
  EXPECT_EQ(r.exit_code, 1) << show(r);
  EXPECT_NE(r.err.find("a host cannot remove itself"), std::string::npos) << r.err;
  r = c.keelctl(1, {"host", "remove", "h2"});
  EXPECT_EQ(r.exit_code, 1) << show(r);
  EXPECT_NE(r.err.find("host 'h2' is alive"), std::string::npos) << r.err;
  r = c.keelctl(1, {"host", "remove", "h9"});
  EXPECT_EQ(r.exit_code, 1) << show(r);
  EXPECT_NE(r.err.find("no host named 'h9'"), std::string::npos) << r.err;
  r = c.keelctl(1, {"host", "remove", "Bad_Name"});
  EXPECT_EQ(r.exit_code, 1) << show(r);
  EXPECT_NE(r.err.find("like a DNS label"), std::string::npos) << r.err;

  // h3 joins, then its address goes: restarted, its agent refuses to serve
  // the cluster from elsewhere.
  r = c.keelctl(3, {"cluster", "join", "--address", TestCluster::address(3), "--peer",
                    TestCluster::address(2), "--token", c.join_token(1)});
  ASSERT_EQ(r.exit_code, 0) << show(r);
  c.stop_agent(3);
  run_command({"ip", "-n", c.ns(3), "addr", "del", TestCluster::address(3) + "/24", "dev", "eth0"},
              seconds(10));
  run_command({"ip", "-n", c.ns(3), "addr", "add", "10.77.0.53/24", "dev", "eth0"}, seconds(10));
  c.start_agent(3);
  r = c.keelctl(3, {"cluster", "status"});
  EXPECT_EQ(r.exit_code, 1) << show(r);
  EXPECT_NE(r.err.find("this host's cluster address 10.77.0.3 is on none of its interfaces"),
            std::string::npos)
      << r.err;
  // A stopped host can be removed once its lease is gone.
  c.stop_agent(3);
  ASSERT_TRUE(wait_until([&] { return !alive_seen_from(c, 1, 3); }, seconds(15)));
  r = c.keelctl(1, {"host", "remove", "h3"});
  EXPECT_EQ(r.exit_code, 0) << show(r);
  EXPECT_NE(r.out.find("2 hosts left"), std::string::npos) << r.out;
  expect_whole(c, 2, 2);
}

// An agent restarted, SIGSTOPped and continued; its etcd member killed.
TEST(Cluster, AgentRestartStopAndEtcdKill) {
  TestCluster c(3);
  for (unsigned h = 1; h <= 3; ++h) c.start_agent(h);
  c.form(3);
  // Restart: it comes back in the same cluster with the same name, and
  // takes up the lease it held (what is bound to it, its VMs' ownership,
  // stays valid): the others never see it gone.
  ASSERT_TRUE(wait_until([&] { return alive_seen_from(c, 1, 2); }, seconds(10)));
  const int64_t lease = agent_at(c, 2).hello().lease_id();
  ASSERT_NE(lease, 0);
  const auto renewed_ago = milliseconds(agent_at(c, 2).hello().lease_renewed_ms_ago());
  const auto stopping = Clock::now();
  c.stop_agent(2);
  c.start_agent(2);
  ASSERT_TRUE(wait_until([&] { return agent_at(c, 2).hello().lease_id() != 0; }, seconds(10)));
  const auto back_after = Clock::now() - stopping + renewed_ago;
  if (back_after < seconds(3)) {
    // Back well inside the lease's 4 s: the same lease.
    EXPECT_EQ(agent_at(c, 2).hello().lease_id(), lease);
  } else {
    // A slow restart (the machine loaded): the lease may have expired, and
    // then a new one is right.
    std::cout << "restart took " << std::chrono::duration_cast<milliseconds>(back_after).count()
              << " ms since the last renewal: the lease may have been new\n";
  }
  EXPECT_TRUE(wait_until([&] { return alive_seen_from(c, 1, 2); }, seconds(10)));
  expect_whole(c, 2, 3);
  // Its etcd member killed: the agent starts it again.
  pid_t etcd = c.etcd_pid(2);
  ASSERT_GT(etcd, 0);
  ::kill(etcd, SIGKILL);
  ASSERT_TRUE(wait_until([&] { return c.etcd_pid(2) > 0 && c.etcd_pid(2) != etcd; }, seconds(10)));
  ASSERT_TRUE(wait_until([&] { return status_now(c, 2).reachable() == 3; }, seconds(20)));
  std::ifstream log(c.log_path(2));
  std::string text((std::istreambuf_iterator<char>(log)), {});
  EXPECT_NE(text.find("etcd member h2 exited"), std::string::npos) << text;
  // SIGSTOP: its lease expires on the others' side; continued, it fences
  // (it cannot know how long it slept) and registers again.
  c.signal_agent(3, SIGSTOP);
  ASSERT_TRUE(wait_until([&] { return !alive_seen_from(c, 1, 3); }, seconds(15)));
  c.signal_agent(3, SIGCONT);
  ASSERT_TRUE(wait_until([&] { return alive_seen_from(c, 1, 3); }, seconds(20)));
  EXPECT_GT(agent_at(c, 3).hello().last_fenced_unix_ms(), 0);
  // A host's death (SIGKILL: its etcd dies with it): the rest go on.
  c.kill_agent(1);
  auto started = Clock::now();
  ASSERT_TRUE(wait_until([&] { return status_now(c, 2).quorum(); }, seconds(20)));
  std::cout << "host killed to a majority answering: "
            << std::chrono::duration_cast<milliseconds>(Clock::now() - started).count() << " ms\n";
}

// Requests that are not gRPC, and gRPC requests with bad fields.
TEST(Cluster, MalformedApiRequests) {
  TestCluster c(1);
  c.start_agent(1);
  c.form(1);
  for (std::string junk :
       {std::string("GET / HTTP/1.1\r\n\r\n"), std::string(70000, '\xff'),
        std::string("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n") + std::string(100, '\x00')}) {
    UniqueFd fd(::socket(AF_INET, SOCK_STREAM, 0));
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(7400);
    ::inet_pton(AF_INET, TestCluster::address(1).c_str(), &to.sin_addr);
    ASSERT_EQ(::connect(fd.get(), reinterpret_cast<sockaddr*>(&to), sizeof to), 0);
    (void)::send(fd.get(), junk.data(), junk.size(), MSG_NOSIGNAL);
  }
  auto agent = agent_at(c, 1);
  EXPECT_EQ(agent.hello().name(), "h1");
  auto expect_code = [](const std::function<void()>& call, int code, const std::string& text) {
    try {
      call();
      ADD_FAILURE() << "accepted; expected: " << text;
    } catch (const AgentCallError& e) {
      EXPECT_EQ(e.grpc_code(), code) << e.what();
      EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
    }
  };
  api::AdmitHostRequest admit;
  expect_code([&] { agent.admit(admit); }, 9, "the join token's secret is not this cluster's");
  // High availability needs a third host, whatever the VM.
  auto ha = c.keelctl(1, {"vm", "ha", "enable", "a", "--passive", "h2"});
  EXPECT_EQ(ha.exit_code, 1) << show(ha);
  EXPECT_NE(ha.err.find("high availability needs at least 3 hosts in the cluster (it has 1)"),
            std::string::npos)
      << ha.err;
  admit.set_join_secret(tls_of(c, 1).join_secret);
  expect_code([&] { agent.admit(admit); }, 3, "must not be empty");
  admit.mutable_host()->set_name("h2");
  admit.mutable_host()->set_cluster_address("0.0.0.0");
  expect_code([&] { agent.admit(admit); }, 3, "wildcard");
  admit.mutable_host()->set_cluster_address("ff02::1");
  expect_code([&] { agent.admit(admit); }, 3, "multicast");
  admit.mutable_host()->set_name(std::string(64, 'a'));
  expect_code([&] { agent.admit(admit); }, 3, "longer than 63");
  admit.mutable_host()->set_name("h2");
  admit.mutable_host()->set_pool(std::string(2 << 20, 'p'));
  expect_code([&] { agent.admit(admit); }, 8, "");  // RESOURCE_EXHAUSTED: over 1 MiB
  // On the cluster address: TLS only, a certificate of the cluster's CA
  // for the hosts' calls, and what changes this host is for its operators
  // (its socket) alone.
  const auto own = tls_of(c, 1);
  cluster::ChannelTls no_cert;
  no_cert.enabled = true;
  no_cert.ca_cert = own.ca.cert_pem;
  auto anonymous = peer_at(1, no_cert);
  EXPECT_EQ(anonymous.hello().name(), "h1");
  EXPECT_EQ(anonymous.hello().ca_cert(), own.ca.cert_pem);
  api::VmStartRequest start;
  start.set_name("a");
  start.set_host("h1");
  expect_code([&] { anonymous.host_vm_start(start); }, 16, "only for the cluster's hosts");
  expect_code([&] { anonymous.status(); }, 16, "only for the cluster's hosts");
  api::ClusterJoinRequest join;
  expect_code([&] { anonymous.join(join); }, 7, "only on the agent's own socket");
  api::HostSetAddressRequest set;
  set.set_address("300.1.1.1");
  expect_code([&] { anonymous.set_address(set); }, 7, "only on the agent's own socket");
  api::HostRemoveRequest remove;
  remove.set_name("h1");
  expect_code([&] { anonymous.remove_host(remove); }, 7, "only on the agent's own socket");
  expect_code([&] { anonymous.token(); }, 7, "only on the agent's own socket");
  // Console calls: the operators' needs a VM of the cluster and an attach;
  // the hosts' a certificate and a VM that runs on that host.
  auto console_refusal = [&](cluster::AgentConsoleCall& call, const api::VmConsoleRequest& first,
                             int code, const std::string& text) {
    api::VmConsoleResponse response;
    call.write(first);
    EXPECT_FALSE(call.read(response)) << response.DebugString();
    expect_code([&] { call.finish(); }, code, text);
  };
  api::VmConsoleRequest console;
  console.set_name("a");
  console_refusal(*agent.vm_console(), console, 3, "the first console request attaches");
  console.mutable_attach()->set_from_start(true);
  console_refusal(*agent.vm_console(), console, 9, "no VM named 'a' in the cluster");
  console.set_name("../a");
  console_refusal(*agent.vm_console(), console, 3, "VM name");
  console.set_name("a");
  console_refusal(*anonymous.host_vm_console(), console, 16, "only for the cluster's hosts");
  auto console_keelctl = c.keelctl(1, {"vm", "console"});
  EXPECT_EQ(console_keelctl.exit_code, 2) << show(console_keelctl);
  EXPECT_NE(console_keelctl.err.find("vm console needs the VM's name"), std::string::npos)
      << console_keelctl.err;
  console_keelctl = c.keelctl(1, {"vm", "migrate", "a", "--to", "h1", "--bandwidth", "0"});
  EXPECT_EQ(console_keelctl.exit_code, 2) << show(console_keelctl);
  // Plaintext, or a certificate of another CA: no connection at all.
  expect_code([&] { peer_at(1, cluster::ChannelTls{}).hello(); }, 14, "cannot be reached");
  auto other_ca = cluster::make_cluster_ca("other");
  auto stranger = no_cert;
  auto stranger_cert = cluster::issue_host_cert(other_ca, "h1", {TestCluster::address(1)});
  stranger.cert = stranger_cert.cert_pem;
  stranger.key = stranger_cert.key_pem;
  expect_code([&] { peer_at(1, stranger).hello(); }, 14, "");
  // A host of the cluster gets the hosts' calls.
  auto host = peer_at(1, cluster::peer_channel(own));
  EXPECT_TRUE(host.status().quorum());
  console_refusal(*host.host_vm_console(), console, 9, "VM a does not run on host h1");
  console_refusal(*host.vm_console(), console, 7, "only on the agent's own socket");
  // etcd: the same, a certificate of the cluster's CA or nothing.
  cluster::EtcdClient plain({TestCluster::address(1) + ":2379"}, milliseconds(3000),
                            cluster::ChannelTls{});
  EXPECT_THROW(plain.get("/keel/cluster"), cluster::EtcdError);
  cluster::EtcdClient uncertified({TestCluster::address(1) + ":2379"}, milliseconds(3000), [&] {
    auto t = no_cert;
    t.server_name = "127.0.0.1";
    return t;
  }());
  EXPECT_THROW(uncertified.get("/keel/cluster"), cluster::EtcdError);
  EXPECT_TRUE(etcd_as(c, 1).get("/keel/cluster").has_value());
  auto r = c.keelctl(1, {"host", "set-address", "300.1.1.1"});
  EXPECT_EQ(r.exit_code, 1) << show(r);
  EXPECT_NE(r.err.find("not a numeric"), std::string::npos) << r.err;
  r = c.keelctl(1, {"host", "drain", "h9"});
  EXPECT_EQ(r.exit_code, 1) << show(r);
  EXPECT_NE(r.err.find("no host named 'h9' in the cluster"), std::string::npos) << r.err;
  r = c.keelctl(1, {"host", "drain", "h/1"});
  EXPECT_EQ(r.exit_code, 1) << show(r);
  r = c.keelctl(1, {"host", "undrain"});
  EXPECT_EQ(r.exit_code, 2) << show(r);
  EXPECT_EQ(agent.hello().name(), "h1");
  expect_whole(c, 1, 1);
}

// VMs of the cluster kept in etcd, stored on the host they were created on:
// created, listed, shown and deleted from any host, refused with reasons.
// (Starting them needs KVM: cluster_vm_test, in the box.)
TEST(Cluster, VmsAreCreatedListedAndDeletedFromAnyHost) {
  TestCluster c(3);
  c.make_pools("guest", "job=heartbeat");
  for (unsigned h = 1; h <= 3; ++h) c.start_agent(h);
  c.form(3);
  auto r = c.keelctl(
      1, {"vm", "create", "a", "--image", "guest", "--memory", "64M", "--storage-host", "h2"});
  ASSERT_EQ(r.exit_code, 0) << show(r);
  EXPECT_NE(r.out.find("on storage host h2"), std::string::npos) << r.out;
  EXPECT_TRUE(std::filesystem::exists(c.pool(2) + "/vms/a/current"));
  r = c.keelctl(3, {"vm", "create", "b", "--image", "guest", "--memory", "64M"});
  ASSERT_EQ(r.exit_code, 0) << show(r);
  EXPECT_NE(r.out.find("on storage host h3"), std::string::npos) << r.out;
  r = c.keelctl(2, {"vm", "create", "a", "--image", "guest"});
  EXPECT_EQ(r.exit_code, 1) << show(r);
  EXPECT_NE(r.err.find("a VM named 'a' exists in the cluster"), std::string::npos) << r.err;
  r = c.keelctl(1, {"vm", "create", "c", "--image", "nosuch"});
  EXPECT_EQ(r.exit_code, 1) << show(r);
  EXPECT_NE(r.err.find("nosuch"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(c.pool(1) + "/vms/c"));
  r = c.keelctl(1, {"vm", "create", "c", "--image", "guest", "--storage-host", "h9"});
  EXPECT_EQ(r.exit_code, 1) << show(r);
  EXPECT_NE(r.err.find("h9: no such host"), std::string::npos) << r.err;
  r = c.keelctl(2, {"vm", "list"});
  ASSERT_EQ(r.exit_code, 0) << show(r);
  EXPECT_NE(r.out.find("a               stopped   -         h2"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("b               stopped   -         h3"), std::string::npos) << r.out;
  r = c.keelctl(1, {"vm", "show", "b"});
  ASSERT_EQ(r.exit_code, 0) << show(r);
  EXPECT_NE(r.out.find("stored on   host h3"), std::string::npos) << r.out;
  r = c.keelctl(1, {"vm", "start", "b", "--host", "h9"});
  EXPECT_EQ(r.exit_code, 1) << show(r);
  EXPECT_NE(r.err.find("no host named 'h9'"), std::string::npos) << r.err;
  r = c.keelctl(1, {"vm", "stop", "b"});
  EXPECT_EQ(r.exit_code, 1) << show(r);
  EXPECT_NE(r.err.find("VM b is not running"), std::string::npos) << r.err;
  // The peers' API does only what is asked of this host, with its name.
  auto as_h1 = peer_at(3, cluster::peer_channel(tls_of(c, 1)));
  try {
    api::VmStartRequest start;
    start.set_name("b");
    start.set_host("h1");
    as_h1.host_vm_start(start);
    ADD_FAILURE() << "a start for host h1 accepted by h3";
  } catch (const AgentCallError& e) {
    EXPECT_EQ(e.grpc_code(), 3) << e.what();
  }
  try {
    as_h1.vm_list({});
    ADD_FAILURE() << "the operators' VM list served on the cluster address";
  } catch (const AgentCallError& e) {
    EXPECT_EQ(e.grpc_code(), 7) << e.what();
  }
  // A migration's destination holds the VM (its arrival mark, on that
  // host's lease): no other host takes it or deletes it meanwhile, and the
  // destination's agent gives the mark up once nothing arrives there.
  auto etcd = etcd_as(c, 1);
  const std::string mark_key = cluster::kIncomingPrefix + "b";
  etcd.put(mark_key, R"({"host":"h9","generation":"1"})");
  r = c.keelctl(1, {"vm", "start", "b", "--host", "h1"});
  EXPECT_EQ(r.exit_code, 1) << show(r);
  EXPECT_NE(r.err.find("VM b is arriving on host h9 (a live migration under way)"),
            std::string::npos)
      << r.err;
  r = c.keelctl(2, {"vm", "delete", "b"});
  EXPECT_EQ(r.exit_code, 1) << show(r);
  EXPECT_NE(r.err.find("VM b is arriving on host h9"), std::string::npos) << r.err;
  etcd.put(mark_key, R"({"host":"h2","generation":"1"})");
  EXPECT_TRUE(wait_until([&] { return !etcd.get(mark_key); }, milliseconds(10000)))
      << "h2 kept an arrival mark with nothing arriving";
  r = c.keelctl(1, {"vm", "delete", "a"});
  ASSERT_EQ(r.exit_code, 0) << show(r);
  EXPECT_FALSE(std::filesystem::exists(c.pool(2) + "/vms/a"));
  r = c.keelctl(3, {"vm", "show", "a"});
  EXPECT_EQ(r.exit_code, 1) << show(r);
  EXPECT_NE(r.err.find("no VM named 'a'"), std::string::npos) << r.err;
  // A host whose pool holds a VM's disk stays in the cluster.
  c.stop_agent(3);
  r = c.keelctl(1, {"host", "remove", "h3"});
  EXPECT_EQ(r.exit_code, 1) << show(r);
  EXPECT_NE(r.err.find("stores the disks of VM(s) b"), std::string::npos) << r.err;
  c.start_agent(3);
  // Without a majority: refused, and nothing is created.
  c.stop_agent(2);
  c.stop_agent(3);
  r = c.keelctl(1, {"vm", "create", "d", "--image", "guest"});
  EXPECT_EQ(r.exit_code, 1) << show(r);
  EXPECT_NE(r.err.find("no quorum (1 of 3 hosts reachable)"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(c.pool(1) + "/vms/d"));
  r = c.keelctl(1, {"vm", "delete", "b"});
  EXPECT_EQ(r.exit_code, 1) << show(r);
  EXPECT_NE(r.err.find("no quorum"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace keel::testing

int main(int argc, char** argv) {
  // Before any thread: the test's own network namespace, joined to the
  // hosts' bridge (never the machine's own network).
  keel::testing::enter_private_network();
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
