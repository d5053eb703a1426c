// keelctl metrics and events against a running test guest (label kvm, in
// control_api_test's box): the disk counters equal what the guest says it
// wrote, the vCPU, console and pause counters move with the guest's work,
// Prometheus's own promtool accepts the text format; events come in order
// across a pause, a snapshot and a live migration, a subscriber resumes
// after a disconnect, and the event log holds them all.
#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <optional>
#include <string>

#include "control/event_connection.h"
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
  for (const char* step : {"pause", "resume"}) {
    const CommandResult r = vmm.keelctl({step});
    ASSERT_EQ(r.exit_code, 0) << step << ": " << r.out << r.err << vmm.describe();
  }
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

std::vector<pb::EventType> types(const std::vector<pb::Event>& events) {
  std::vector<pb::EventType> out;
  for (const auto& e : events) out.push_back(e.type());
  return out;
}

TEST(ControlEvents, InOrderAcrossAPauseASnapshotAndAMigrationResumedAfterADisconnect) {
  ScratchDir scratch("keel-events-test");
  const std::string log = scratch / "events.ndjson";
  LiveVmm here({"--kernel", testos_bzimage(), "--memory", "64M", "--snapshot-root", scratch.path(),
                "--event-log", log, "--cmdline", "job=heartbeat interval_ms=50 count=0"});
  ASSERT_TRUE(here.wait_line("testos: beat seq=2 ")) << here.describe();

  // A subscriber from the start, which then goes away.
  pb::EventsSubscribe from_oldest;
  from_oldest.set_from_oldest(true);
  std::optional<EventConnection> first;
  first.emplace(here.socket_path(), from_oldest, seconds(10));
  const uint64_t stream = first->subscribed().stream();
  std::vector<pb::Event> seen;
  pb::Event e;
  ASSERT_TRUE(first->wait_for(e, seconds(10)));
  seen.push_back(e);
  EXPECT_EQ(e.type(), pb::EVENT_TYPE_STARTED);
  EXPECT_EQ(e.seq(), 1u);
  ASSERT_EQ(here.keelctl({"pause"}).exit_code, 0);
  ASSERT_TRUE(first->wait_for(e, seconds(10)));
  seen.push_back(e);
  first.reset();  // disconnected

  // Meanwhile: a resume and a snapshot.
  ASSERT_EQ(here.keelctl({"resume"}).exit_code, 0);
  auto snap = here.keelctl({"snapshot", scratch.path() + "/snap"}, seconds(600));
  ASSERT_EQ(snap.exit_code, 0) << show(snap);

  // Resumed after the last number seen: nothing lost, nothing twice.
  EventConnection again(
      here.socket_path(),
      [&] {
        pb::EventsSubscribe s;
        s.set_after_seq(seen.back().seq());
        return s;
      }(),
      seconds(10));
  EXPECT_EQ(again.subscribed().stream(), stream);
  for (int i = 0; i < 2 && again.wait_for(e, seconds(10)); ++i) seen.push_back(e);
  ASSERT_EQ(seen.size(), 4u);
  EXPECT_EQ(seen[3].dir(), scratch.path() + "/snap");

  // A live migration: started and finished here, started (received) there.
  LiveVmm there({"--incoming", "tcp:127.0.0.1:0"});
  const std::string to = there.incoming_address(seconds(30));
  ASSERT_FALSE(to.empty()) << there.describe();
  auto moved = here.keelctl({"migrate", to}, seconds(600));
  ASSERT_EQ(moved.exit_code, 0) << show(moved);
  while (again.wait_for(e, seconds(30))) seen.push_back(e);  // until the VMM closes it
  EXPECT_EQ(types(seen), (std::vector<pb::EventType>{
                             pb::EVENT_TYPE_STARTED, pb::EVENT_TYPE_PAUSED, pb::EVENT_TYPE_RESUMED,
                             pb::EVENT_TYPE_SNAPSHOT_TAKEN, pb::EVENT_TYPE_MIGRATION_STARTED,
                             pb::EVENT_TYPE_MIGRATION_FINISHED}));
  for (size_t i = 0; i < seen.size(); ++i) {
    EXPECT_EQ(seen[i].seq(), i + 1);
    EXPECT_EQ(seen[i].missed(), 0u);
  }
  EXPECT_GT(seen[2].duration_us(), 0u) << "a resume says how long the guest was paused";
  EXPECT_EQ(seen[4].peer(), to);
  EXPECT_EQ(here.wait_exit(seconds(60)), 0) << here.describe();

  // The destination is another process: its own stream, from 1.
  auto there_events = there.keelctl({"--json", "events"});
  ASSERT_EQ(there_events.exit_code, 0) << show(there_events);
  pb::Event received;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(
                  there_events.out.substr(0, there_events.out.find('\n')), &received)
                  .ok())
      << there_events.out;
  EXPECT_EQ(received.seq(), 1u);
  EXPECT_EQ(received.type(), pb::EVENT_TYPE_STARTED);
  EXPECT_EQ(received.detail(), "received by live migration");
  there.keelctl({"kill"});

  // The log has each event as a line, the stop's last.
  std::ifstream in(log);
  std::string line;
  std::vector<pb::Event> logged;
  while (std::getline(in, line)) {
    pb::Event l;
    ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(line, &l).ok()) << line;
    logged.push_back(l);
  }
  EXPECT_EQ(types(logged), types(seen));
}

}  // namespace
}  // namespace keel::testing
