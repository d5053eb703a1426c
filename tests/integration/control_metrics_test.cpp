// keelctl metrics against a running test guest (label kvm, in
// control_api_test's box): the disk counters equal what the guest says it
// wrote, the vCPU, console and pause counters move with the guest's work,
// and Prometheus's own promtool accepts the text format.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <optional>
#include <string>

#include "proto/control.pb.h"
#include "tests/support/keelctl_result.h"
#include "tests/support/live_vmm.h"
#include "tests/support/scratch_dir.h"
#include "tests/support/vmm_run.h"

namespace keel::testing {
namespace {

namespace pb = ::keel::api::v1;
using std::chrono::seconds;

using Labels = std::map<std::string, std::string>;

// The sample of `name` whose labels include `labels`.
const pb::MetricSample* find_sample(const pb::MetricsResult& m, const std::string& name,
                                    const Labels& labels = {}) {
  for (const auto& f : m.families()) {
    if (f.name() != name) continue;
    for (const auto& s : f.samples()) {
      size_t matched = 0;
      for (const auto& l : s.labels()) {
        auto it = labels.find(l.name());
        if (it != labels.end() && it->second == l.value()) ++matched;
      }
      if (matched == labels.size()) return &s;
    }
  }
  return nullptr;
}

double value(const pb::MetricsResult& m, const std::string& name, const Labels& labels = {}) {
  const pb::MetricSample* s = find_sample(m, name, labels);
  EXPECT_NE(s, nullptr) << "no sample " << name;
  return s ? s->value() : -1;
}

pb::MetricsResult metrics(const LiveVmm& vmm) {
  auto r = vmm.keelctl({"--json", "metrics"});
  EXPECT_EQ(r.exit_code, 0) << show(r);
  return parse_json(r).metrics();
}

TEST(ControlMetrics, DiskCountersMatchWhatTheGuestWroteAndPromtoolAcceptsThem) {
  ScratchDir scratch("keel-metrics-test");
  const std::string image = scratch / "disk.img";
  std::ofstream(image).close();
  std::filesystem::resize_file(image, 16 << 20);
  LiveVmm vmm({"--kernel", testos_bzimage(), "--memory", "64M", "--disk", "path=" + image,
               "--cmdline", "job=disk mode=write mib=4 seed=7 linger=1"});
  const auto done = vmm.wait_line("testos: disk OK mode=write");
  ASSERT_TRUE(done) << vmm.describe();
  ASSERT_TRUE(vmm.wait_line("testos: disk lingering", done->index)) << vmm.describe();
  const uint64_t sectors = field_u64(done->text, "sectors");
  const uint64_t flushed = field_u64(done->text, "flush");
  ASSERT_EQ(sectors, 4u * 2048);

  const pb::MetricsResult m = metrics(vmm);
  const Labels vda{{"disk", "vda"}};
  EXPECT_EQ(value(m, "keel_disk_written_bytes_total", vda), double(sectors * 512));
  EXPECT_EQ(value(m, "keel_disk_errors_total", vda), 0);
  EXPECT_EQ(value(m, "keel_disk_requests_in_flight", vda), 0);
  const double writes = value(m, "keel_disk_requests_total", {{"disk", "vda"}, {"op", "write"}});
  const double flushes = value(m, "keel_disk_requests_total", {{"disk", "vda"}, {"op", "flush"}});
  const double reads = value(m, "keel_disk_requests_total", {{"disk", "vda"}, {"op", "read"}});
  const double ids = value(m, "keel_disk_requests_total", {{"disk", "vda"}, {"op", "get_id"}});
  EXPECT_GE(writes, 1);
  EXPECT_EQ(flushes, double(flushed));
  // Every request taken was completed; those the disk did are timed.
  EXPECT_EQ(value(m, "keel_disk_completed_requests_total", vda), writes + flushes + reads + ids);
  const pb::MetricSample* latency = find_sample(m, "keel_disk_request_duration_seconds", vda);
  ASSERT_NE(latency, nullptr);
  EXPECT_EQ(double(latency->histogram().count()), writes + flushes + reads);
  EXPECT_GT(latency->histogram().sum(), 0);
  // The guest printed through COM1's port: I/O exits, and at least the
  // bytes of the lines the test read.
  EXPECT_GT(value(m, "keel_vcpu_exits_total", {{"vcpu", "0"}, {"reason", "io"}}), 0);
  EXPECT_GT(value(m, "keel_vcpu_cpu_seconds_total", {{"vcpu", "0"}}), 0);
  size_t printed = 0;
  for (const auto& line : vmm.console()) printed += line.size() + 1;
  EXPECT_GE(value(m, "keel_console_output_bytes_total"), double(printed));
  EXPECT_EQ(value(m, "keel_vm_running"), 1);

  // A pause is counted, with its time.
  ASSERT_EQ(vmm.keelctl({"pause"}).exit_code, 0);
  ASSERT_EQ(vmm.keelctl({"resume"}).exit_code, 0);
  const pb::MetricsResult after = metrics(vmm);
  EXPECT_EQ(value(after, "keel_vm_pauses_total"), 1);
  EXPECT_GT(value(after, "keel_vm_paused_seconds_total"), 0);
  EXPECT_GE(value(after, "keel_vcpu_exits_total", {{"vcpu", "0"}, {"reason", "signal"}}), 1)
      << "a pause kicks the vCPU out of KVM_RUN";

  // Prometheus's own checker takes the text format.
  auto text = vmm.keelctl({"metrics", "--prometheus"});
  ASSERT_EQ(text.exit_code, 0) << show(text);
  EXPECT_NE(text.out.find("keel_disk_written_bytes_total{disk=\"vda\"} " +
                          std::to_string(sectors * 512) + "\n"),
            std::string::npos)
      << text.out;
  const std::string file = scratch / "metrics.txt";
  std::ofstream(file) << text.out;
  auto check = run_command({"sh", "-c", "promtool check metrics < '" + file + "'"}, seconds(60));
  EXPECT_EQ(check.exit_code, 0) << "promtool (apt-get install prometheus; tools/setup does)\n"
                                << check.out << check.err;

  auto stop = vmm.keelctl({"shutdown", "--timeout", "60"});
  EXPECT_EQ(stop.exit_code, 0) << show(stop);
  EXPECT_EQ(vmm.wait_exit(seconds(60)), 0) << vmm.describe();
}

}  // namespace
}  // namespace keel::testing
