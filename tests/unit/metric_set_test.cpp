// MetricSet (control/metric_set.h), LatencyHistogram and the text formats
// (control/prometheus_text.h): what Prometheus would refuse is refused
// here, another process's sample is merged with its labels, and the text
// escapes what it must.
#include "control/metric_set.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <stdexcept>

#include "common/latency_histogram.h"
#include "control/prometheus_text.h"

namespace keel {
namespace {

namespace pb = ::keel::api::v1;
using std::chrono::microseconds;
using std::chrono::milliseconds;

TEST(LatencyHistogram, BucketsHoldWhatTookAtMostTheirBound) {
  LatencyHistogram h;
  h.record(microseconds(25));          // on the first bound: in it
  h.record(microseconds(26));          // just past: the next
  h.record(milliseconds(-1));          // a clock step back: counted as 0
  h.record(std::chrono::seconds(11));  // past the last bound
  EXPECT_EQ(h.bucket(0), 2u);
  EXPECT_EQ(h.bucket(1), 1u);
  EXPECT_EQ(h.overflow(), 1u);
  EXPECT_EQ(h.count(), 4u);
  EXPECT_DOUBLE_EQ(h.sum_seconds(), 11.000051);
}

TEST(MetricSet, NamesAndLabelsPrometheusWouldRefuseAreRefused) {
  MetricSet set;
  EXPECT_THROW(set.counter("", "h", 1), std::invalid_argument);
  EXPECT_THROW(set.counter("9lives_total", "h", 1), std::invalid_argument);
  EXPECT_THROW(set.counter("keel-disk_total", "h", 1), std::invalid_argument);
  EXPECT_THROW(set.counter("ok_total", "h", 1, {{"le", "1"}}), std::invalid_argument);
  EXPECT_THROW(set.counter("ok_total", "h", 1, {{"__name__", "x"}}), std::invalid_argument);
  EXPECT_THROW(set.counter("ok_total", "h", 1, {{"a:b", "x"}}), std::invalid_argument);
  EXPECT_THROW(set.counter("ok_total", "h", 1, {{"vm", "a"}, {"vm", "b"}}), std::invalid_argument);
  set.counter("ok_total", "h", 1, {{"vm", "a"}});
  EXPECT_THROW(set.gauge("ok_total", "h", 1), std::invalid_argument) << "a type clash";
  // Nothing half-made was left behind by the refusals.
  ASSERT_EQ(set.result().families_size(), 1);
  EXPECT_EQ(set.result().families(0).samples_size(), 1);
}

TEST(MetricSet, SamplesOfOneFamilyStayTogetherAndTheFirstHelpIsKept) {
  MetricSet set;
  set.counter("a_total", "", 1, {{"x", "1"}});
  set.gauge("b", "B", 2);
  set.counter("a_total", "A", 3, {{"x", "2"}});
  ASSERT_EQ(set.result().families_size(), 2);
  EXPECT_EQ(set.result().families(0).help(), "A");
  EXPECT_EQ(set.result().families(0).samples_size(), 2);
  EXPECT_GT(set.result().time_unix_ms(), 0u);
  EXPECT_GT(set.result().monotonic_ns(), 0u);
}

TEST(MetricSet, AnotherSampleIsMergedWithItsLabelsFirstAndCheckedAsInput) {
  MetricSet vmm;
  vmm.counter("keel_disk_read_bytes_total", "Bytes", 10, {{"disk", "vda"}});
  LatencyHistogram h;
  h.record(milliseconds(1));
  vmm.histogram("keel_disk_request_duration_seconds", "Latency", h, {{"disk", "vda"}});

  MetricSet host;
  host.gauge("keel_host_vms", "VMs", 2);
  host.add(vmm.result(), {{"vm", "a"}, {"host", "h1"}});
  host.add(vmm.result(), {{"vm", "b"}, {"host", "h1"}});
  const std::string text = prometheus_text(host.result());
  EXPECT_NE(text.find("keel_disk_read_bytes_total{vm=\"a\",host=\"h1\",disk=\"vda\"} 10\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("keel_disk_request_duration_seconds_count{vm=\"b\",host=\"h1\",disk=\"vda\"} "
                      "1\n"),
            std::string::npos)
      << text;
  // One HELP and TYPE per family.
  EXPECT_EQ(text.find("# TYPE keel_disk_read_bytes_total"),
            text.rfind("# TYPE keel_disk_read_bytes_total"));

  // A VMM that labelled its own samples "vm" clashes with the agent's.
  MetricSet clash;
  clash.counter("x_total", "", 1, {{"vm", "mine"}});
  EXPECT_THROW(host.add(clash.result(), {{"vm", "a"}}), std::invalid_argument);
  pb::MetricsResult broken = vmm.result();
  broken.mutable_families(1)->mutable_samples(0)->mutable_histogram()->add_upper_bounds(99);
  EXPECT_THROW(host.add(broken, {{"vm", "c"}}), std::invalid_argument);
  pb::MetricsResult untyped = vmm.result();
  untyped.mutable_families(1)->set_type(pb::METRIC_TYPE_UNSPECIFIED);
  EXPECT_THROW(host.add(untyped, {{"vm", "d"}}), std::invalid_argument);
  pb::MetricsResult infinite = vmm.result();
  auto* h2 = infinite.mutable_families(1)->mutable_samples(0)->mutable_histogram();
  h2->set_upper_bounds(h2->upper_bounds_size() - 1, std::numeric_limits<double>::infinity());
  EXPECT_THROW(host.add(infinite, {{"vm", "e"}}), std::invalid_argument);
  pb::MetricsResult twice = vmm.result();
  *twice.add_families() = twice.families(0);
  twice.mutable_families(2)->set_type(pb::METRIC_TYPE_GAUGE);
  EXPECT_THROW(host.add(twice, {{"vm", "f"}}), std::invalid_argument);
  // A refusal took nothing: the good families before the bad one too.
  EXPECT_EQ(prometheus_text(host.result()), text);
}

TEST(PrometheusText, ValuesAndEscapes) {
  EXPECT_EQ(metric_value(0), "0");
  EXPECT_EQ(metric_value(134217728), "134217728");
  EXPECT_EQ(metric_value(0.1), "0.1");
  EXPECT_EQ(metric_value(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(metric_value(-std::numeric_limits<double>::infinity()), "-Inf");
  EXPECT_EQ(metric_value(std::nan("")), "NaN");
  MetricSet set;
  set.gauge("g", "a \\ b\nc \"q\"", 1, {{"tap", "a\"b\\c\nd"}});
  EXPECT_EQ(prometheus_text(set.result()),
            "# HELP g a \\\\ b\\nc \"q\"\n"
            "# TYPE g gauge\n"
            "g{tap=\"a\\\"b\\\\c\\nd\"} 1\n");
}

TEST(PrometheusText, ReadableLinesShowRatesAgainstAnEarlierSample) {
  pb::MetricsResult before, now;
  for (auto* m : {&before, &now}) {
    auto* f = m->add_families();
    f->set_name("c_total");
    f->set_type(pb::METRIC_TYPE_COUNTER);
    f->add_samples();
  }
  before.set_monotonic_ns(1'000'000'000);
  now.set_monotonic_ns(3'000'000'000);
  now.mutable_families(0)->mutable_samples(0)->set_value(50);
  EXPECT_EQ(readable_metrics(now, &before), "c_total 50  (25/s)\n");
  EXPECT_EQ(readable_metrics(now), "c_total 50\n");
}

}  // namespace
}  // namespace keel
