// A MetricsResult in Prometheus's text exposition format (version 0.0.4,
// what a /metrics endpoint serves and `promtool check metrics` reads), and
// as lines for a person.
#pragma once

#include <string>

#include "proto/control.pb.h"

namespace keel {

// "# HELP", "# TYPE", then each sample; a histogram as its _bucket lines
// (le="+Inf" last), _sum and _count. Families in the order given.
std::string prometheus_text(const api::v1::MetricsResult& metrics);

// One line per sample, name{labels} value; a histogram as its count, mean
// and the buckets its median and 99th percentile fall in. With `before` (an
// earlier sample of the same process), each counter's rate per second
// since then follows it.
std::string readable_metrics(const api::v1::MetricsResult& metrics,
                             const api::v1::MetricsResult* before = nullptr);

// A double as Prometheus writes it: the shortest text that reads back the
// same, +Inf, -Inf, NaN.
std::string metric_value(double value);

}  // namespace keel
