// A MetricsResult (proto/control.proto) put together family by family:
// each family once, its samples together, names and labels as Prometheus
// allows them. keel-vmm builds its own; keel-agent adds its VMMs' with the
// VM's and host's labels to its host's.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "common/latency_histogram.h"
#include "proto/control.pb.h"

namespace keel {

class MetricSet {
 public:
  using Labels = std::vector<std::pair<std::string, std::string>>;

  // Stamps the sample's wall-clock and monotonic time.
  MetricSet();

  // std::invalid_argument for a name or label Prometheus would refuse, or
  // a family asked for again with another type (a bug, not input). A
  // family's help is the first non-empty one given.
  void counter(const std::string& name, const std::string& help, double value,
               const Labels& labels = {});
  void gauge(const std::string& name, const std::string& help, double value,
             const Labels& labels = {});
  void histogram(const std::string& name, const std::string& help, const LatencyHistogram& h,
                 const Labels& labels = {});
  // Every family of `other` (another process's sample), each sample with
  // `labels` added first. Checked whole before any of it is taken (other
  // is input): a bad name or label, a type clash with a family here, or a
  // histogram whose buckets are not finite, ascending and cumulative
  // throws std::invalid_argument naming it, and nothing was added.
  void add(const api::v1::MetricsResult& other, const Labels& labels);

  const api::v1::MetricsResult& result() const { return result_; }

 private:
  api::v1::MetricFamily& family(const std::string& name, const std::string& help,
                                api::v1::MetricType type);
  api::v1::MetricSample& sample(const std::string& name, const std::string& help,
                                api::v1::MetricType type, const Labels& labels);
  void check(const api::v1::MetricsResult& other, const Labels& labels) const;
  static void check_labels(const std::string& name, const Labels& labels);

  api::v1::MetricsResult result_;
  std::map<std::string, int> index_;  // family name -> its place in result_
};

// Whether Prometheus takes `name` as a metric name, or as a label name.
bool valid_metric_name(const std::string& name);
bool valid_label_name(const std::string& name);

}  // namespace keel
