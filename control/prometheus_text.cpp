#include "control/prometheus_text.h"

#include <charconv>
#include <cmath>
#include <map>

namespace keel {

namespace pb = ::keel::api::v1;

namespace {

// HELP text escapes backslash and newline; label values also the quote.
std::string escaped(const std::string& text, bool quote) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (quote && c == '"') {
      out += "\\\"";
    } else {
      out += c;
    }
  }
  return out;
}

std::string label_text(const pb::MetricSample& s, const std::string& le = {}) {
  std::string out;
  for (const pb::MetricLabel& l : s.labels()) {
    out += out.empty() ? "{" : ",";
    out += l.name() + "=\"" + escaped(l.value(), true) + "\"";
  }
  if (!le.empty()) out += (out.empty() ? "{" : ",") + std::string("le=\"") + le + "\"";
  if (!out.empty()) out += "}";
  return out;
}

const char* type_name(pb::MetricType type) {
  switch (type) {
    case pb::METRIC_TYPE_COUNTER:
      return "counter";
    case pb::METRIC_TYPE_GAUGE:
      return "gauge";
    case pb::METRIC_TYPE_HISTOGRAM:
      return "histogram";
    default:
      return "untyped";
  }
}

// A bucket's bound as Prometheus's Go client writes it (%g's choice of
// notation, shortest digits): the same `le` value whoever exports it.
std::string bound_text(double bound) {
  if (std::isinf(bound)) return bound > 0 ? "+Inf" : "-Inf";
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, bound, std::chars_format::general);
  return ec == std::errc() ? std::string(buf, end) : "NaN";
}

// The upper bound of the bucket the q-th quantile falls in ("+Inf" past
// the last bound); "-" when nothing was counted.
std::string quantile_bucket(const pb::MetricHistogram& h, double q) {
  if (h.count() == 0) return "-";
  const double rank = q * static_cast<double>(h.count());
  for (int i = 0; i < h.bucket_counts_size() && i < h.upper_bounds_size(); ++i) {
    if (static_cast<double>(h.bucket_counts(i)) >= rank) {
      return "<=" + bound_text(h.upper_bounds(i));
    }
  }
  return ">" + bound_text(h.upper_bounds_size() ? h.upper_bounds(h.upper_bounds_size() - 1) : 0);
}

}  // namespace

std::string metric_value(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, value);
  return ec == std::errc() ? std::string(buf, end) : "NaN";
}

std::string prometheus_text(const pb::MetricsResult& metrics) {
  std::string out;
  for (const pb::MetricFamily& f : metrics.families()) {
    out += "# HELP " + f.name() + " " + escaped(f.help(), false) + "\n";
    out += "# TYPE " + f.name() + " " + type_name(f.type()) + "\n";
    for (const pb::MetricSample& s : f.samples()) {
      if (f.type() != pb::METRIC_TYPE_HISTOGRAM) {
        out += f.name() + label_text(s) + " " + metric_value(s.value()) + "\n";
        continue;
      }
      const pb::MetricHistogram& h = s.histogram();
      for (int i = 0; i < h.upper_bounds_size() && i < h.bucket_counts_size(); ++i) {
        out += f.name() + "_bucket" + label_text(s, bound_text(h.upper_bounds(i))) + " " +
               std::to_string(h.bucket_counts(i)) + "\n";
      }
      out += f.name() + "_bucket" + label_text(s, "+Inf") + " " + std::to_string(h.count()) + "\n";
      out += f.name() + "_sum" + label_text(s) + " " + metric_value(h.sum()) + "\n";
      out += f.name() + "_count" + label_text(s) + " " + std::to_string(h.count()) + "\n";
    }
  }
  return out;
}

std::string readable_metrics(const pb::MetricsResult& metrics, const pb::MetricsResult* before) {
  // The earlier sample's counters by name and labels.
  std::map<std::string, double> earlier;
  double seconds = 0;
  if (before != nullptr) {
    for (const pb::MetricFamily& f : before->families()) {
      if (f.type() != pb::METRIC_TYPE_COUNTER) continue;
      for (const pb::MetricSample& s : f.samples()) earlier[f.name() + label_text(s)] = s.value();
    }
    seconds = static_cast<double>(metrics.monotonic_ns() - before->monotonic_ns()) * 1e-9;
  }
  std::string out;
  for (const pb::MetricFamily& f : metrics.families()) {
    for (const pb::MetricSample& s : f.samples()) {
      const std::string name = f.name() + label_text(s);
      if (f.type() == pb::METRIC_TYPE_HISTOGRAM) {
        const pb::MetricHistogram& h = s.histogram();
        out += name + " count=" + std::to_string(h.count());
        if (h.count() != 0) {
          out += " mean=" + metric_value(h.sum() / static_cast<double>(h.count())) + " p50" +
                 quantile_bucket(h, 0.5) + " p99" + quantile_bucket(h, 0.99);
        }
        out += "\n";
        continue;
      }
      out += name + " " + metric_value(s.value());
      auto it = earlier.find(name);
      if (it != earlier.end() && seconds > 0) {
        out += "  (" + metric_value(std::round((s.value() - it->second) / seconds * 100) / 100) +
               "/s)";
      }
      out += "\n";
    }
  }
  return out;
}

}  // namespace keel
