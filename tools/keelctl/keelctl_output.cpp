#include "tools/keelctl/keelctl_output.h"

#include <google/protobuf/util/json_util.h>

#include <cctype>
#include <cstdio>
#include <map>
#include <sstream>

#include "common/size_parse.h"
#include "control/prometheus_text.h"

namespace keel {

namespace control = keel::api::v1;

namespace {

// RUN_STATE_SHUTTING_DOWN -> "shutting down"
std::string enum_words(const std::string& name, const std::string& prefix) {
  std::string words = name.rfind(prefix, 0) == 0 ? name.substr(prefix.size()) : name;
  for (char& c : words) {
    c = c == '_' ? ' ' : static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return words;
}

std::string state_words(control::RunState state) {
  return enum_words(control::RunState_Name(state), "RUN_STATE_");
}

void line(std::ostringstream& out, const char* label, const std::string& value) {
  if (value.empty()) return;
  char head[16];
  std::snprintf(head, sizeof(head), "%-10s", label);
  out << head << ' ' << value << '\n';
}

std::string describe_status(const control::StatusResult& status) {
  std::ostringstream out;
  line(out, "state:",
       state_words(status.state()) +
           (status.stop_reason().empty() ? "" : " (" + status.stop_reason() + ")"));
  line(out, "vcpus:", std::to_string(status.vcpus()));
  line(out, "memory:", human_bytes(status.memory_bytes()));
  line(out, "uptime:", human_duration_ms(status.uptime_ms()));
  if (status.pauses() > 0) {
    line(out, "paused:",
         std::to_string(status.pauses()) + (status.pauses() == 1 ? " time, " : " times, ") +
             human_duration_ms(status.paused_ms_total()) + " in all");
  }
  if (status.fenced()) {
    line(out, "fenced:", "yes: the host's lease deadline passed; resume refused until it moves");
  }
  line(out, "pid:", status.pid() ? std::to_string(status.pid()) : "");
  line(out, "version:", status.vmm_version());
  line(out, "kernel:", status.kernel());
  line(out, "restored:", status.restored_from());
  line(out, "serial:", status.serial());
  if (status.devices_size() > 0) {
    out << "devices:\n";
    for (const auto& device : status.devices()) {
      char head[64];
      std::snprintf(head, sizeof(head), "  %-8s %-11s",
                    device.pci_address().empty() ? "-" : device.pci_address().c_str(),
                    device.type().c_str());
      out << head << (device.description().empty() ? "" : " " + device.description())
          << (device.error().empty() ? "" : " (stopped: " + device.error() + ")") << '\n';
      if (!device.counters().empty()) {
        // Sorted by name: a protobuf map has no order of its own.
        std::map<std::string, uint64_t> sorted(device.counters().begin(), device.counters().end());
        out << "           ";
        for (const auto& [name, value] : sorted) out << ' ' << name << '=' << value;
        out << '\n';
      }
    }
  }
  return out.str();
}

std::string rate(uint64_t bytes_per_s) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.1f MB/s", static_cast<double>(bytes_per_s) / 1e6);
  return text;
}

std::string describe_migration(const control::MigrationInfo& info) {
  std::ostringstream out;
  line(out, "migration:",
       enum_words(control::MigrationPhase_Name(info.phase()), "MIGRATION_PHASE_") +
           (info.to().empty() ? "" : " to " + info.to()));
  if (info.phase() == control::MIGRATION_PHASE_NONE) return out.str();
  if (!info.error().empty()) line(out, "error:", info.error());
  if (info.phase() == control::MIGRATION_PHASE_COMPLETED) {
    char pause[64];
    std::snprintf(pause, sizeof pause, "%.3f ms", static_cast<double>(info.downtime_us()) / 1000);
    line(out, "paused:",
         std::string(pause) + " (" + std::to_string(info.final_pages()) + " pages, " +
             human_bytes(info.final_bytes()) + " in the pause; target " +
             std::to_string(info.downtime_target_ms()) + " ms)");
  }
  line(out, "sent:",
       human_bytes(info.bytes_sent()) + " of " + human_bytes(info.memory_bytes()) + " memory, " +
           std::to_string(info.pages_sent()) + " pages + " +
           std::to_string(info.zero_pages_sent()) + " zero markers, " +
           std::to_string(info.rounds_total()) + " rounds");
  line(out, "took:", human_duration_ms(info.elapsed_ms()));
  if (info.throttle_percent() > 0)
    line(out,
         "throttle:", "vCPUs stopped " + std::to_string(info.throttle_percent()) + "% of the time");
  return out.str();
}

std::string us_as_ms(uint64_t us) {
  char text[32];
  std::snprintf(text, sizeof text, "%.3f ms", static_cast<double>(us) / 1000);
  return text;
}

std::string describe_replica(const control::ReplicaInfo& info) {
  std::ostringstream out;
  const bool passive = info.role() == control::REPLICA_ROLE_PASSIVE;
  line(out, "replica:",
       enum_words(control::ReplicaPhase_Name(info.phase()), "REPLICA_PHASE_") +
           (info.role() == control::REPLICA_ROLE_NONE ? ""
            : passive                                 ? " (passive copy of " + info.peer() + ")"
                      : " (active, passive at " + info.peer() + ")"));
  if (info.phase() == control::REPLICA_PHASE_NONE) return out.str();
  if (!info.error().empty()) line(out, "error:", info.error());
  if (info.epoch() != 0) {
    line(out, "epoch:",
         std::to_string(info.epoch()) + (passive ? " applied " : " acknowledged ") +
             human_duration_ms(info.last_ack_age_ms()) + " ago; " +
             std::to_string(info.last_epoch_pages()) + " pages in the last, which ran " +
             us_as_ms(info.last_epoch_us()));
  }
  if (passive && info.takeover_after_ms() != 0) {
    line(out, "active:",
         "last heard " + human_duration_ms(info.silent_ms()) +
             " ago; its guest surely waits after " + human_duration_ms(info.takeover_after_ms()) +
             " of silence");
  }
  if (!passive) {
    line(out, "target:", std::to_string(info.epoch_target_ms()) + " ms per epoch");
    if (info.run_permit_ms() != 0) {
      line(out, "permit:",
           "the guest runs at most " + std::to_string(info.run_permit_ms()) +
               " ms past the passive's last acknowledged epoch" +
               (info.guest_held() ? "; it waits now (replica-stop --run-on runs it on, unprotected)"
                                  : ""));
    }
    line(out, "pauses:",
         "last " + us_as_ms(info.last_pause_us()) + ", longest " + us_as_ms(info.max_pause_us()));
    char share[64];
    std::snprintf(share, sizeof share, "%.2f%% of the guest's time paused", info.paused_percent());
    line(out, "slowdown:", share);
    line(out, "sent:",
         human_bytes(info.bytes_sent()) + ", lately " + rate(info.bandwidth_bytes_per_s()));
    if (info.throttle_percent() > 0) {
      line(out, "throttle:",
           "vCPUs stopped " + std::to_string(info.throttle_percent()) +
               "% of the time (a switchover's last epoch: the guest writes as fast as it "
               "is sent)");
    }
    line(out, "took:", human_duration_ms(info.elapsed_ms()));
  }
  return out.str();
}

}  // namespace

std::string describe_migration_round(const control::MigrationRound& r) {
  char pause[32];
  std::snprintf(pause, sizeof pause, "%.3f ms",
                static_cast<double>(r.expected_downtime_us()) / 1000);
  return "round " + std::to_string(r.round()) + ": " + std::to_string(r.pages()) + " pages + " +
         std::to_string(r.zero_pages()) + " zero, " + human_bytes(r.bytes()) + " in " +
         human_duration_ms(r.duration_us() / 1000) + " at " + rate(r.bandwidth_bytes_per_s()) +
         "; guest dirtied " + rate(r.dirty_rate_bytes_per_s()) + ", " +
         std::to_string(r.dirty_pages_left()) + " pages left, expected pause " + pause +
         (r.throttle_percent() ? ", throttled " + std::to_string(r.throttle_percent()) + "%" : "") +
         "\n";
}

std::string human_duration_ms(uint64_t ms) {
  char text[48];
  if (ms < 60000) {
    std::snprintf(text, sizeof(text), "%llu.%03llu s", static_cast<unsigned long long>(ms / 1000),
                  static_cast<unsigned long long>(ms % 1000));
    return text;
  }
  const unsigned long long s = ms / 1000;
  if (s < 3600) {
    std::snprintf(text, sizeof(text), "%llum %llus", s / 60, s % 60);
  } else if (s < 86400) {
    std::snprintf(text, sizeof(text), "%lluh %llum %llus", s / 3600, s / 60 % 60, s % 60);
  } else {
    std::snprintf(text, sizeof(text), "%llud %lluh %llum", s / 86400, s / 3600 % 24, s / 60 % 60);
  }
  return text;
}

std::string describe_error(const control::Error& error) {
  std::string text = error.message().empty() ? "no reason given" : error.message();
  return text + " (" + enum_words(control::ErrorCode_Name(error.code()), "ERROR_CODE_") + ")";
}

std::string describe_result(const control::Response& response) {
  switch (response.result_case()) {
    case control::Response::kStatus:
      return describe_status(response.status());
    case control::Response::kPause:
      return "paused (stopping took " + human_duration_ms(response.pause().duration_ms()) + ")\n";
    case control::Response::kResume:
      return state_words(response.resume().state()) + "\n";
    case control::Response::kKill:
      return "killed\n";
    case control::Response::kShutdown: {
      const auto& shutdown = response.shutdown();
      if (shutdown.forced()) {
        return "the guest did not power off in time: killed after " +
               human_duration_ms(shutdown.duration_ms()) + "\n";
      }
      return "the guest powered off after " + human_duration_ms(shutdown.duration_ms()) + "\n";
    }
    case control::Response::kSnapshot: {
      const auto& snapshot = response.snapshot();
      return "snapshot in " + snapshot.dir() + ": " + human_bytes(snapshot.bytes_written()) +
             " written, guest paused " + human_duration_ms(snapshot.pause_ms()) + ", took " +
             human_duration_ms(snapshot.duration_ms()) + "\n";
    }
    case control::Response::kMigrate:
      return describe_migration(response.migrate());
    case control::Response::kMigrateStatus:
      return describe_migration(response.migrate_status());
    case control::Response::kMigrateCancel:
      return "cancelled: the guest runs on here\n";
    case control::Response::kReplicate:
      return describe_replica(response.replicate());
    case control::Response::kReplicaStatus:
      return describe_replica(response.replica_status());
    case control::Response::kReplicaStop:
      if (response.replica_stop().phase() == control::REPLICA_PHASE_FAILED)
        return "the guest the failed replication held runs on here, unprotected\n";
      return "replication ends after the epoch under way; the guest runs on here, unprotected\n";
    case control::Response::kSwitchover:
      return "switched over: the guest runs at " + response.switchover().peer() + " (paused " +
             us_as_ms(response.switchover().switchover_pause_us()) + ")\n";
    case control::Response::kTakeover:
      return "the guest runs here now, from epoch " + std::to_string(response.takeover().epoch()) +
             "\n";
    case control::Response::kConsoleAttach: {
      const auto& attach = response.console_attach();
      return std::string("attached ") + (attach.writer() ? "read-write" : "read-only") +
             " at offset " + std::to_string(attach.offset()) + "\n";
    }
    case control::Response::kMetrics:
      return readable_metrics(response.metrics());
    case control::Response::kEventsSubscribe:
      return "subscribed at event " + std::to_string(response.events_subscribe().next_seq()) + "\n";
    case control::Response::RESULT_NOT_SET:
      break;
  }
  return "done\n";
}

std::string response_json(const control::Response& response) {
  google::protobuf::util::JsonPrintOptions options;
  options.always_print_primitive_fields = true;
  options.preserve_proto_field_names = true;
  std::string json;
  const auto status = google::protobuf::util::MessageToJsonString(response, &json, options);
  if (!status.ok()) return "{\"ok\":false}";
  return json;
}

}  // namespace keel
