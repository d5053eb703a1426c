#include "control/metric_set.h"

#include <chrono>
#include <cmath>
#include <stdexcept>

namespace keel {

namespace pb = ::keel::api::v1;

namespace {

bool name_char(char c, bool first, bool colon) {
  const bool letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
  return letter || (colon && c == ':') || (!first && c >= '0' && c <= '9');
}

bool valid_name(const std::string& name, bool colon) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    if (!name_char(name[i], i == 0, colon)) return false;
  }
  return true;
}

}  // namespace

bool valid_metric_name(const std::string& name) {
  return valid_name(name, true);
}

// Names starting "__" are Prometheus's own.
bool valid_label_name(const std::string& name) {
  return valid_name(name, false) && name.rfind("__", 0) != 0;
}

MetricSet::MetricSet() {
  using namespace std::chrono;
  result_.set_time_unix_ms(static_cast<uint64_t>(
      duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count()));
  result_.set_monotonic_ns(static_cast<uint64_t>(
      duration_cast<nanoseconds>(steady_clock::now().time_since_epoch()).count()));
}

pb::MetricFamily& MetricSet::family(const std::string& name, const std::string& help,
                                    pb::MetricType type) {
  if (!valid_metric_name(name)) throw std::invalid_argument("invalid metric name '" + name + "'");
  if (type == pb::METRIC_TYPE_UNSPECIFIED || !pb::MetricType_IsValid(type)) {
    throw std::invalid_argument("metric " + name + " has no type");
  }
  auto [it, made] = index_.emplace(name, result_.families_size());
  if (made) {
    pb::MetricFamily* f = result_.add_families();
    f->set_name(name);
    f->set_help(help);
    f->set_type(type);
    return *f;
  }
  pb::MetricFamily& f = *result_.mutable_families(it->second);
  if (f.help().empty()) f.set_help(help);
  if (f.type() != type) {
    throw std::invalid_argument("metric " + name + " given as " + pb::MetricType_Name(type) +
                                " and as " + pb::MetricType_Name(f.type()));
  }
  return f;
}

void MetricSet::check_labels(const std::string& name, const Labels& labels) {
  for (size_t i = 0; i < labels.size(); ++i) {
    const std::string& label = labels[i].first;
    if (!valid_label_name(label) || label == "le") {
      throw std::invalid_argument("metric " + name + ": invalid label name '" + label + "'");
    }
    for (size_t j = 0; j < i; ++j) {
      if (labels[j].first == label) {
        throw std::invalid_argument("metric " + name + ": label '" + label + "' given twice");
      }
    }
  }
}

pb::MetricSample& MetricSet::sample(const std::string& name, const std::string& help,
                                    pb::MetricType type, const Labels& labels) {
  check_labels(name, labels);
  pb::MetricSample* s = family(name, help, type).add_samples();
  for (const auto& [label, value] : labels) {
    pb::MetricLabel* l = s->add_labels();
    l->set_name(label);
    l->set_value(value);
  }
  return *s;
}

void MetricSet::counter(const std::string& name, const std::string& help, double value,
                        const Labels& labels) {
  sample(name, help, pb::METRIC_TYPE_COUNTER, labels).set_value(value);
}

void MetricSet::gauge(const std::string& name, const std::string& help, double value,
                      const Labels& labels) {
  sample(name, help, pb::METRIC_TYPE_GAUGE, labels).set_value(value);
}

void MetricSet::histogram(const std::string& name, const std::string& help,
                          const LatencyHistogram& h, const Labels& labels) {
  pb::MetricHistogram* out =
      sample(name, help, pb::METRIC_TYPE_HISTOGRAM, labels).mutable_histogram();
  uint64_t below = 0;
  for (size_t i = 0; i < LatencyHistogram::kBoundsSeconds.size(); ++i) {
    below += h.bucket(i);
    out->add_upper_bounds(LatencyHistogram::kBoundsSeconds[i]);
    out->add_bucket_counts(below);
  }
  out->set_count(h.count());
  out->set_sum(h.sum_seconds());
}

// All of `other` is checked before any of it is taken: a refusal leaves
// this set as it was.
void MetricSet::check(const pb::MetricsResult& other, const Labels& labels) const {
  std::map<std::string, pb::MetricType> types;  // other's own, which must agree too
  for (const pb::MetricFamily& f : other.families()) {
    if (!valid_metric_name(f.name())) {
      throw std::invalid_argument("invalid metric name '" + f.name() + "'");
    }
    if (f.type() == pb::METRIC_TYPE_UNSPECIFIED || !pb::MetricType_IsValid(f.type())) {
      throw std::invalid_argument("metric " + f.name() + " has no type");
    }
    auto it = index_.find(f.name());
    const auto [seen, fresh] = types.emplace(f.name(), f.type());
    if ((it != index_.end() && result_.families(it->second).type() != f.type()) ||
        (!fresh && seen->second != f.type())) {
      throw std::invalid_argument("metric " + f.name() + " given as two types");
    }
    for (const pb::MetricSample& s : f.samples()) {
      Labels all = labels;
      for (const pb::MetricLabel& l : s.labels()) all.emplace_back(l.name(), l.value());
      check_labels(f.name(), all);
      if (f.type() != pb::METRIC_TYPE_HISTOGRAM) continue;
      // Finite bounds going up, counts cumulative and within the total.
      const pb::MetricHistogram& h = s.histogram();
      if (h.upper_bounds_size() != h.bucket_counts_size()) {
        throw std::invalid_argument("metric " + f.name() + ": histogram bounds and counts differ");
      }
      for (int i = 0; i < h.upper_bounds_size(); ++i) {
        const bool ordered = i == 0 || (h.upper_bounds(i) > h.upper_bounds(i - 1) &&
                                        h.bucket_counts(i) >= h.bucket_counts(i - 1));
        if (!std::isfinite(h.upper_bounds(i)) || !ordered || h.bucket_counts(i) > h.count()) {
          throw std::invalid_argument("metric " + f.name() + ": histogram buckets out of order");
        }
      }
    }
  }
}

void MetricSet::add(const pb::MetricsResult& other, const Labels& labels) {
  check(other, labels);
  for (const pb::MetricFamily& f : other.families()) {
    for (const pb::MetricSample& s : f.samples()) {
      Labels all = labels;
      for (const pb::MetricLabel& l : s.labels()) all.emplace_back(l.name(), l.value());
      pb::MetricSample& copy = sample(f.name(), f.help(), f.type(), all);
      copy.set_value(s.value());
      if (f.type() == pb::METRIC_TYPE_HISTOGRAM) *copy.mutable_histogram() = s.histogram();
    }
  }
}

}  // namespace keel
