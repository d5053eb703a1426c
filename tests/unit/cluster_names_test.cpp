// The cluster's pure pieces: host names, cluster addresses, etcd's key
// ranges and member command line, records as JSON, VM placement.
#include <gtest/gtest.h>

#include <algorithm>

#include "cluster/cluster_keys.h"
#include "cluster/etcd_client.h"
#include "cluster/etcd_member.h"
#include "cluster/host_facts.h"
#include "cluster/vm_placement.h"
#include "proto/agent.pb.h"

namespace keel::cluster {
namespace {

TEST(HostName, TakesDnsLabels) {
  EXPECT_EQ(host_name_problem("h1"), "");
  EXPECT_EQ(host_name_problem("node-7"), "");
  EXPECT_EQ(host_name_problem(std::string(63, 'a')), "");
  EXPECT_NE(host_name_problem(""), "");
  EXPECT_NE(host_name_problem(std::string(64, 'a')), "");
  EXPECT_NE(host_name_problem("-h"), "");
  EXPECT_NE(host_name_problem("H1"), "");
  EXPECT_NE(host_name_problem("h_1"), "");
  EXPECT_NE(host_name_problem("h 1"), "");
  EXPECT_NE(host_name_problem(std::string("h\0x", 3)), "");
  EXPECT_NE(host_name_problem("h=1"), "") << "would break etcd's --initial-cluster";
}

TEST(ClusterAddress, RefusesWhatCannotBeAHostsAddress) {
  EXPECT_EQ(cluster_address_problem("10.77.0.1"), "");
  EXPECT_EQ(cluster_address_problem("fd00::1"), "");
  EXPECT_NE(cluster_address_problem("0.0.0.0").find("wildcard"), std::string::npos);
  EXPECT_NE(cluster_address_problem("127.0.0.2").find("loopback"), std::string::npos);
  EXPECT_NE(cluster_address_problem("224.0.0.1").find("multicast"), std::string::npos);
  EXPECT_NE(cluster_address_problem("255.255.255.255").find("broadcast"), std::string::npos);
  EXPECT_NE(cluster_address_problem("::").find("wildcard"), std::string::npos);
  EXPECT_NE(cluster_address_problem("::1").find("loopback"), std::string::npos);
  EXPECT_NE(cluster_address_problem("fe80::1").find("link-local"), std::string::npos);
  for (const char* bad :
       {"", "10.77.0", "10.77.0.256", "host.example", "10.0.0.1:80", " 10.0.0.1"}) {
    EXPECT_NE(cluster_address_problem(bad).find("not a numeric"), std::string::npos) << bad;
  }
}

TEST(EtcdKeys, PrefixRangeEndCoversThePrefixOnly) {
  EXPECT_EQ(prefix_range_end("/keel/hosts/"), "/keel/hosts0");
  EXPECT_EQ(prefix_range_end("a\xff"), "b");
  EXPECT_EQ(prefix_range_end("\xff\xff"), std::string(1, '\0'));
  EXPECT_EQ(endpoint_of_url("http://10.0.0.1:2379"), "10.0.0.1:2379");
  EXPECT_EQ(endpoint_of_url("http://[fd00::1]:2379/"), "[fd00::1]:2379");
}

TEST(EtcdMember, CommandLineForALan) {
  EtcdMemberSettings s;
  s.name = "h1";
  s.address = "10.77.0.1";
  s.data_dir = "/var/lib/keel/agent/etcd";
  s.initial_cluster = peer_url_line("h1", "10.77.0.1");
  s.cluster_token = "keel-1";
  auto argv = etcd_command_line(s);
  auto has = [&](const std::string& arg) {
    return std::find(argv.begin(), argv.end(), arg) != argv.end();
  };
  s.tls_dir = "/var/lib/keel/agent/tls";
  argv = etcd_command_line(s);
  EXPECT_TRUE(has("--initial-cluster=h1=https://10.77.0.1:2380"));
  EXPECT_TRUE(has("--initial-cluster-state=new"));
  EXPECT_TRUE(has("--listen-client-urls=https://10.77.0.1:2379,https://127.0.0.1:2379"));
  // Clients and peers alike show a certificate of the cluster's CA.
  EXPECT_TRUE(has("--client-cert-auth=true"));
  EXPECT_TRUE(has("--peer-client-cert-auth=true"));
  EXPECT_TRUE(has("--trusted-ca-file=/var/lib/keel/agent/tls/ca.crt"));
  EXPECT_TRUE(has("--peer-key-file=/var/lib/keel/agent/tls/host.key"));
  EXPECT_TRUE(has("--heartbeat-interval=100"));
  EXPECT_TRUE(has("--election-timeout=1000"));
  EXPECT_TRUE(has("--pre-vote=true"));
  EXPECT_EQ(peer_url("fd00::1"), "https://[fd00::1]:2380");
}

TEST(ClusterRecords, JsonRoundTripAndJunk) {
  keel::agent::v1::Host host;
  host.set_name("h1");
  host.set_cluster_address("10.77.0.1");
  host.add_roles(keel::agent::v1::ROLE_STORAGE);
  host.set_memory_bytes(uint64_t{1} << 34);
  keel::agent::v1::Host back;
  ASSERT_TRUE(from_json(to_json(host), &back));
  EXPECT_EQ(back.SerializeAsString(), host.SerializeAsString());
  EXPECT_TRUE(from_json(R"({"name":"h2","from_a_newer_agent":1})", &back));
  EXPECT_EQ(back.name(), "h2");
  for (const char* junk : {"", "{", "[]", R"({"name":7})", R"({"cpus":"many"})"}) {
    EXPECT_FALSE(from_json(junk, &back)) << junk;
    EXPECT_EQ(back.name(), "") << "a failed parse leaves the record empty";
  }
}

}  // namespace
}  // namespace keel::cluster

namespace keel::cluster {
namespace {

PlacementCandidate host(const std::string& name, uint64_t mib, uint32_t cpus, uint64_t used_mib,
                        uint32_t vcpus_used, const std::string& unfit = "") {
  return {name, mib << 20, cpus, used_mib << 20, vcpus_used, unfit};
}

TEST(VmPlacement, TheMostFreeMemoryThenTheLeastVcpusPerCpu) {
  auto p = place_vm(512 << 20, 1,
                    {host("h1", 4096, 4, 3072, 2), host("h2", 4096, 4, 1024, 6),
                     host("h3", 8192, 8, 0, 0, "its agent is not alive")});
  EXPECT_EQ(p.host, "h2");
  EXPECT_NE(p.reason.find("the most free memory (3072 MiB)"), std::string::npos) << p.reason;
  EXPECT_NE(p.reason.find("h3: its agent is not alive"), std::string::npos) << p.reason;
  // Equal free memory: fewer vCPUs per CPU wins (h1: 3 on 2 CPUs, h2: 5 on 8).
  p = place_vm(256 << 20, 1, {host("h1", 2048, 2, 1024, 2), host("h2", 2048, 8, 1024, 4)});
  EXPECT_EQ(p.host, "h2");
}

TEST(VmPlacement, NoneFitsSaysWhyForEachHost) {
  auto p = place_vm(2048ull << 20, 1,
                    {host("h1", 4096, 4, 3072, 2), host("h2", 0, 0, 0, 0, "not a compute host")});
  EXPECT_EQ(p.host, "");
  EXPECT_NE(p.reason.find("h1: 1024 MiB of memory free, the VM needs 2048 MiB"), std::string::npos)
      << p.reason;
  EXPECT_NE(p.reason.find("h2: not a compute host"), std::string::npos) << p.reason;
  EXPECT_EQ(place_vm(1, 1, {}).reason, "no host can run it (no hosts)");
}

}  // namespace
}  // namespace keel::cluster
