// keelctl top's table: a row per VM from each host's /metrics sample (the
// agent's MetricsResult, every VM's samples labelled vm and host), with
// rates from the host's sample before (each host has its own clock, so
// rates are taken per host).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "proto/control.pb.h"

namespace keel {

struct TopRow {
  std::string vm, host;
  std::string state;  // running, paused, migrating
  uint32_t vcpus = 0;
  uint64_t memory_bytes = 0;
  // Per second since the sample before (0 without one): CPU in percent of
  // one core, bytes.
  double cpu_percent = 0;
  double disk_read = 0, disk_written = 0;
  double net_received = 0, net_sent = 0;
};

// `now` and `before`: one sample per host (matched by the host label).
std::vector<TopRow> top_rows(const std::vector<keel::api::v1::MetricsResult>& now,
                             const std::vector<keel::api::v1::MetricsResult>& before);
// Sorted by host, then VM; sizes and rates in binary units.
std::string top_table(std::vector<TopRow> rows);

}  // namespace keel
