#include "tools/keelctl/top_table.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <tuple>
#include <utility>

namespace keel {

namespace pb = ::keel::api::v1;

namespace {

using Key = std::pair<std::string, std::string>;  // host, vm

std::string label(const pb::MetricSample& s, const std::string& name) {
  for (const auto& l : s.labels()) {
    if (l.name() == name) return l.value();
  }
  return {};
}

// Per (host, vm): the sum of a family's samples.
std::map<Key, double> sums(const pb::MetricsResult& m, const std::string& family) {
  std::map<Key, double> out;
  for (const auto& f : m.families()) {
    if (f.name() != family) continue;
    for (const auto& s : f.samples()) {
      const std::string vm = label(s, "vm");
      if (!vm.empty()) out[{label(s, "host"), vm}] += s.value();
    }
  }
  return out;
}

// The host a sample is from (its own samples carry host="...").
std::string host_of(const pb::MetricsResult& m) {
  for (const auto& f : m.families()) {
    for (const auto& s : f.samples()) {
      std::string h = label(s, "host");
      if (!h.empty()) return h;
    }
  }
  return {};
}

std::string size_text(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024 && u < 4) {
    bytes /= 1024;
    ++u;
  }
  char text[32];
  std::snprintf(text, sizeof text, u == 0 ? "%.0f %s" : "%.1f %s", bytes, units[u]);
  return text;
}

}  // namespace

std::vector<TopRow> top_rows(const std::vector<pb::MetricsResult>& now,
                             const std::vector<pb::MetricsResult>& before) {
  std::map<std::string, const pb::MetricsResult*> earlier;
  for (const auto& m : before) earlier[host_of(m)] = &m;
  std::vector<TopRow> rows;
  for (const auto& m : now) {
    const auto running = sums(m, "keel_vm_running");
    const auto migrating = sums(m, "keel_migration_in_progress");
    const auto vcpus = sums(m, "keel_vm_vcpus");
    const auto memory = sums(m, "keel_vm_memory_bytes");
    const pb::MetricsResult* was = nullptr;
    if (auto it = earlier.find(host_of(m)); it != earlier.end()) was = it->second;
    const double seconds = was && m.monotonic_ns() > was->monotonic_ns()
                               ? static_cast<double>(m.monotonic_ns() - was->monotonic_ns()) / 1e9
                               : 0;
    // A counter's rate for one VM: 0 without an earlier sample of it, or
    // across a restart of its VMM (the counter began again).
    auto rate = [&](const std::string& family, const Key& key) {
      if (seconds == 0) return 0.0;
      const auto a = sums(*was, family), b = sums(m, family);
      auto ia = a.find(key);
      auto ib = b.find(key);
      if (ia == a.end() || ib == b.end() || ib->second < ia->second) return 0.0;
      return (ib->second - ia->second) / seconds;
    };
    for (const auto& [key, value] : running) {
      TopRow row;
      row.host = key.first;
      row.vm = key.second;
      auto mig = migrating.find(key);
      row.state = mig != migrating.end() && mig->second > 0 ? "migrating"
                  : value > 0                               ? "running"
                                                            : "paused";
      if (auto v = vcpus.find(key); v != vcpus.end()) row.vcpus = static_cast<uint32_t>(v->second);
      if (auto b = memory.find(key); b != memory.end())
        row.memory_bytes = static_cast<uint64_t>(b->second);
      row.cpu_percent = 100 * rate("keel_vcpu_cpu_seconds_total", key);
      row.disk_read = rate("keel_disk_read_bytes_total", key);
      row.disk_written = rate("keel_disk_written_bytes_total", key);
      row.net_received = rate("keel_net_received_bytes_total", key);
      row.net_sent = rate("keel_net_transmitted_bytes_total", key);
      rows.push_back(std::move(row));
    }
  }
  return rows;
}

std::string top_table(std::vector<TopRow> rows) {
  std::sort(rows.begin(), rows.end(), [](const TopRow& a, const TopRow& b) {
    return std::tie(a.host, a.vm) < std::tie(b.host, b.vm);
  });
  std::string out;
  char line[256];
  std::snprintf(line, sizeof line, "%-16s %-8s %-9s %5s %6s %10s %11s %11s %11s %11s\n", "VM",
                "HOST", "STATE", "VCPUS", "CPU%", "MEMORY", "DISK READ/s", "DISK WRIT/s",
                "NET RX/s", "NET TX/s");
  out += line;
  for (const auto& r : rows) {
    std::snprintf(line, sizeof line, "%-16s %-8s %-9s %5u %6.1f %10s %11s %11s %11s %11s\n",
                  r.vm.c_str(), r.host.c_str(), r.state.c_str(), r.vcpus, r.cpu_percent,
                  size_text(static_cast<double>(r.memory_bytes)).c_str(),
                  size_text(r.disk_read).c_str(), size_text(r.disk_written).c_str(),
                  size_text(r.net_received).c_str(), size_text(r.net_sent).c_str());
    out += line;
  }
  return out;
}

}  // namespace keel
