// Machine, its metrics (the control socket's Metrics), read on
// the event loop from the counters the vCPUs, devices and console keep.
// Names follow Prometheus's conventions: the unit in the name, counters
// ending in _total; labels name the vCPU, the disk (vda, vdb, ... as the
// guest sees them) or the network device (its tap).
#include <map>
#include <string>

#include "common/log.h"
#include "control/metric_set.h"
#include "vmm/machine.h"

namespace keel {

namespace pb = ::keel::api::v1;

namespace {

double seconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

struct Mapped {
  const char* name;
  const char* help;
  bool gauge = false;
  const char* label = nullptr;  // an extra label's value, under `label_name`
  const char* label_name = nullptr;
};

// What each device's named counters (keelctl status shows them) are as
// metrics. A counter missing here still appears, as keel_<kind>_<name>_total.
const std::map<std::string, Mapped>& disk_counters() {
  static const std::map<std::string, Mapped> m = {
      {"requests", {"keel_disk_completed_requests_total", "Requests completed to the guest"}},
      {"read_bytes", {"keel_disk_read_bytes_total", "Bytes read by the guest"}},
      {"written_bytes", {"keel_disk_written_bytes_total", "Bytes written by the guest"}},
      {"errors", {"keel_disk_errors_total", "Requests answered with an error (IOERR, UNSUPP)"}},
      {"in_flight", {"keel_disk_requests_in_flight", "Requests taken and not yet completed", true}},
      {"read_ops", {"keel_disk_requests_total", "Requests taken, by kind", false, "read", "op"}},
      {"write_ops", {"keel_disk_requests_total", "", false, "write", "op"}},
      {"flush_ops", {"keel_disk_requests_total", "", false, "flush", "op"}},
      {"get_id_ops", {"keel_disk_requests_total", "", false, "get_id", "op"}},
      {"discard_ops", {"keel_disk_requests_total", "", false, "discard", "op"}},
      {"write_zeroes_ops", {"keel_disk_requests_total", "", false, "write_zeroes", "op"}},
      {"direct_ops",
       {"keel_disk_submissions_total", "io_uring submissions, by descriptor", false, "direct",
        "path"}},
      {"buffered_ops", {"keel_disk_submissions_total", "", false, "buffered", "path"}},
      {"resubmissions",
       {"keel_disk_resubmissions_total", "Short transfers, EAGAIN and EINVAL fallbacks"}},
      {"queued_when_full",
       {"keel_disk_ring_full_waits_total", "Requests that waited for io_uring ring space"}},
      {"nbd_connected", {"keel_disk_nbd_connected", "1 while the NBD export is connected", true}},
      {"nbd_reconnects", {"keel_disk_nbd_reconnects_total", "NBD connections made again"}},
      {"nbd_resent", {"keel_disk_nbd_resent_requests_total", "NBD requests sent again"}},
      {"nbd_timeouts", {"keel_disk_nbd_timeouts_total", "NBD requests that timed out"}},
  };
  return m;
}

const std::map<std::string, Mapped>& net_counters() {
  static const std::map<std::string, Mapped> m = {
      {"tx_frames", {"keel_net_transmitted_frames_total", "Frames the guest sent"}},
      {"tx_bytes", {"keel_net_transmitted_bytes_total", "Frame bytes the guest sent"}},
      {"rx_frames", {"keel_net_received_frames_total", "Frames given to the guest"}},
      {"rx_bytes", {"keel_net_received_bytes_total", "Frame bytes given to the guest"}},
      {"tx_errors",
       {"keel_net_dropped_frames_total", "Frames dropped, by reason", false, "tx_refused_by_tap",
        "reason"}},
      {"rx_too_big", {"keel_net_dropped_frames_total", "", false, "rx_too_big", "reason"}},
      {"tx_would_block",
       {"keel_net_transmit_blocked_total", "Sends that found the tap full (the frame waited)"}},
      {"rx_out_of_buffers",
       {"keel_net_receive_buffers_exhausted_total",
        "Times the guest's receive queue ran dry (frames waited in the tap)"}},
      {"tap_errors", {"keel_net_tap_errors_total", "Tap reads that failed for good"}},
      {"tx_held", {"keel_net_held_frames_total", "Frames held for a replica's acknowledgement"}},
      {"tx_held_full",
       {"keel_net_held_store_full_total", "Times the held frames filled their store"}},
      {"tx_held_now", {"keel_net_held_frames", "Frames held now", true}},
  };
  return m;
}

const std::map<std::string, Mapped>& rng_counters() {
  static const std::map<std::string, Mapped> m = {
      {"bytes", {"keel_rng_bytes_total", "Random bytes given to the guest"}},
  };
  return m;
}

void add_counters(MetricSet& set, const std::string& kind, const MetricSet::Labels& labels,
                  const virtio::VirtioDevice::Counters& counters,
                  const std::map<std::string, Mapped>& table) {
  for (const auto& [name, value] : counters) {
    auto it = table.find(name);
    if (it == table.end()) {
      set.counter("keel_" + kind + "_" + name + "_total", "See keelctl status", double(value),
                  labels);
      continue;
    }
    const Mapped& m = it->second;
    MetricSet::Labels with = labels;
    if (m.label != nullptr) with.emplace_back(m.label_name, m.label);
    // One entry of a family carries its help; MetricSet keeps it.
    if (m.gauge) {
      set.gauge(m.name, m.help, double(value), with);
    } else {
      set.counter(m.name, m.help, double(value), with);
    }
  }
}

}  // namespace

pb::MetricsResult Machine::metrics() const {
  MetricSet set;
  const auto now = std::chrono::steady_clock::now();
  const bool paused = vcpus_->pause_requested();

  set.gauge("keel_vm_vcpus", "vCPUs of the VM", config_.cpus());
  set.gauge("keel_vm_memory_bytes", "Guest memory", double(config_.memory()));
  set.gauge("keel_vm_running", "1 while the guest's vCPUs run (not paused, held or stopping)",
            !paused && !replica_held_ && !vcpus_->stopping() ? 1 : 0);
  set.counter("keel_vm_pauses_total", "Pauses asked for through the control socket", pauses_);
  set.counter("keel_vm_paused_seconds_total", "Time paused by those pauses",
              seconds(paused_total_ +
                      (paused_at_ ? now - *paused_at_ : std::chrono::steady_clock::duration{})));

  // Per vCPU.
  const auto activity = vcpus_->activity();
  for (size_t i = 0; i < activity.size(); ++i) {
    const std::string vcpu = std::to_string(i);
    for (size_t r = 0; r < VcpuSet::kExitReasons.size(); ++r) {
      set.counter("keel_vcpu_exits_total",
                  "Returns from KVM_RUN, by exit reason (signal: a kick from the VMM)",
                  double(activity[i].exits[r]),
                  {{"vcpu", vcpu}, {"reason", VcpuSet::kExitReasons[r]}});
    }
    if (activity[i].cpu_time) {
      set.counter("keel_vcpu_cpu_seconds_total",
                  "CPU time of the vCPU's thread: the guest's time plus exit handling, "
                  "not the time it sat halted",
                  std::chrono::duration<double>(*activity[i].cpu_time).count(), {{"vcpu", vcpu}});
    }
  }

  // Devices, in the slot order status() shows.
  const auto& functions = devices_->virtio_functions();
  size_t f = 0;
  for (int d = 0; d < config_.disks_size() && f < functions.size(); ++d, ++f) {
    const MetricSet::Labels labels{{"disk", "vd" + std::string(1, char('a' + d % 26)) +
                                                (d >= 26 ? std::to_string(d / 26) : "")}};
    add_counters(set, "disk", labels, functions[f]->counters(), disk_counters());
    if (auto latency = functions[f]->request_latency()) {
      set.histogram("keel_disk_request_duration_seconds",
                    "From taking a request to the disk's completion", *latency, labels);
    }
    set.counter("keel_device_msi_dropped_total", "Interrupts KVM refused (the guest's bad MSI)",
                double(functions[f]->msi_dropped()), labels);
  }
  for (int n = 0; n < config_.nets_size() && f < functions.size(); ++n, ++f) {
    const MetricSet::Labels labels{{"net", config_.nets(n).tap()}};
    add_counters(set, "net", labels, functions[f]->counters(), net_counters());
    set.counter("keel_device_msi_dropped_total", "", double(functions[f]->msi_dropped()), labels);
  }
  if (config_.rng() && f < functions.size()) {
    add_counters(set, "rng", {}, functions[f]->counters(), rng_counters());
  }

  const GuestConsole::Counters console = console_.counters();
  set.counter("keel_console_output_bytes_total", "Bytes the guest printed on COM1",
              double(console.bytes_out));
  set.counter("keel_console_input_bytes_total", "Bytes given to the guest on COM1",
              double(console.bytes_in));
  set.gauge("keel_console_input_queued_bytes", "Input accepted, waiting for the guest",
            double(console.input_queued));
  set.counter("keel_console_log_dropped_bytes_total",
              "Output the console log lost (its reader too slow or gone, or the file full)",
              double(console.log_dropped));
  set.counter("keel_console_viewer_missed_bytes_total",
              "Output viewers skipped because they read too slowly", double(console.client_missed));
  set.gauge("keel_console_clients", "Console clients attached", double(console.clients));
  set.counter("keel_console_takeovers_total", "Forced writer takeovers", double(console.takeovers));

  set.counter("keel_snapshots_total", "Snapshots written", double(snapshots_.written));
  set.counter("keel_snapshot_failures_total", "Snapshots that failed", double(snapshots_.failed));
  set.counter("keel_snapshot_pause_seconds_total", "Time the guest was paused for snapshots",
              seconds(snapshots_.paused));
  set.counter("keel_snapshot_written_bytes_total", "Bytes written by snapshots",
              double(snapshots_.bytes));
  set.counter("keel_log_suppressed_total",
              "Log lines and device events the rate limits held back (a guest repeating itself)",
              double(log::suppressed_total()));
  if (extension_ != nullptr) extension_->add_metrics(set);
  return set.result();
}

}  // namespace keel
