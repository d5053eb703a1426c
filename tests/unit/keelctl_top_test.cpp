// keelctl top's table (tools/keelctl/top_table.h) from two samples of two
// hosts, built as keel-agent builds them: each VM's samples labelled.
#include <gtest/gtest.h>

#include "control/metric_set.h"
#include "tools/keelctl/top_table.h"

namespace keel {
namespace {

namespace pb = ::keel::api::v1;

// One host's /metrics: its VMs, each as its keel-vmm reports itself.
struct Vm {
  std::string name;
  bool running = true, migrating = false;
  double cpu_seconds = 0, disk_read = 0, net_sent = 0;
};
pb::MetricsResult host_sample(const std::string& host, uint64_t monotonic_ns,
                              const std::vector<Vm>& vms) {
  MetricSet set;
  set.gauge("keel_cluster_quorum", "", 1, {{"host", host}});
  for (const Vm& vm : vms) {
    MetricSet vmm;
    vmm.gauge("keel_vm_vcpus", "", 2);
    vmm.gauge("keel_vm_memory_bytes", "", 512.0 * 1024 * 1024);
    vmm.gauge("keel_vm_running", "", vm.running ? 1 : 0);
    vmm.gauge("keel_migration_in_progress", "", vm.migrating ? 1 : 0);
    vmm.counter("keel_vcpu_cpu_seconds_total", "", vm.cpu_seconds / 2, {{"vcpu", "0"}});
    vmm.counter("keel_vcpu_cpu_seconds_total", "", vm.cpu_seconds / 2, {{"vcpu", "1"}});
    vmm.counter("keel_disk_read_bytes_total", "", vm.disk_read, {{"disk", "vda"}});
    vmm.counter("keel_net_transmitted_bytes_total", "", vm.net_sent, {{"net", "tap0"}});
    set.add(vmm.result(), {{"vm", vm.name}, {"host", host}});
  }
  pb::MetricsResult out = set.result();
  out.set_monotonic_ns(monotonic_ns);
  return out;
}

TEST(KeelctlTop, RowsPerVmWithRatesTakenPerHost) {
  // The hosts' clocks differ; each rate uses its own host's.
  const std::vector<pb::MetricsResult> before{
      host_sample("h2", 1'000'000'000, {{"a", true, false, 10, 1000, 0}}),
      host_sample("h3", 50'000'000'000, {{"b", true, false, 4, 0, 100}})};
  const std::vector<pb::MetricsResult> now{
      host_sample("h2", 3'000'000'000, {{"a", true, false, 11, 5096, 0}}),
      host_sample("h3", 51'000'000'000,
                  {{"b", false, true, 4.25, 0, 1124}, {"c", false, false, 0, 0, 0}})};
  auto rows = top_rows(now, before);
  ASSERT_EQ(rows.size(), 3u);
  const TopRow& a = rows[0];
  EXPECT_EQ(a.vm, "a");
  EXPECT_EQ(a.host, "h2");
  EXPECT_EQ(a.state, "running");
  EXPECT_EQ(a.vcpus, 2u);
  EXPECT_EQ(a.memory_bytes, 512u << 20);
  EXPECT_DOUBLE_EQ(a.cpu_percent, 50);  // 1 CPU second in 2 s
  EXPECT_DOUBLE_EQ(a.disk_read, 2048);  // 4096 bytes in 2 s
  const TopRow& b = rows[1];
  EXPECT_EQ(b.state, "migrating");
  EXPECT_DOUBLE_EQ(b.cpu_percent, 25);
  EXPECT_DOUBLE_EQ(b.net_sent, 1024);
  const TopRow& c = rows[2];
  EXPECT_EQ(c.state, "paused");
  EXPECT_DOUBLE_EQ(c.cpu_percent, 0) << "no sample before: no rate";

  const std::string table = top_table(rows);
  EXPECT_NE(table.find("VM               HOST     STATE"), std::string::npos) << table;
  EXPECT_NE(table.find("a                h2       running       2   50.0  512.0 MiB"),
            std::string::npos)
      << table;
  EXPECT_NE(table.find("b                h3       migrating"), std::string::npos) << table;
  // Without an earlier sample: rows, no rates.
  auto first = top_rows(now, {});
  ASSERT_EQ(first.size(), 3u);
  EXPECT_DOUBLE_EQ(first[0].cpu_percent, 0);
}

// A VMM that restarted between samples (its counters began again) gives no
// negative rate.
TEST(KeelctlTop, ACounterThatBeganAgainGivesNoRate) {
  const std::vector<pb::MetricsResult> before{
      host_sample("h2", 1'000'000'000, {{"a", true, false, 100, 1 << 20, 0}})};
  const std::vector<pb::MetricsResult> now{
      host_sample("h2", 2'000'000'000, {{"a", true, false, 1, 10, 0}})};
  auto rows = top_rows(now, before);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_DOUBLE_EQ(rows[0].cpu_percent, 0);
  EXPECT_DOUBLE_EQ(rows[0].disk_read, 0);
}

}  // namespace
}  // namespace keel
