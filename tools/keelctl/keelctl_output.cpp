#include "tools/keelctl/keelctl_output.h"

#include <google/protobuf/util/json_util.h>

#include <cctype>
#include <cstdio>
#include <map>
#include <sstream>

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

}  // namespace

std::string human_bytes(uint64_t bytes) {
  static const char* const units[] = {"bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  size_t unit = 0;
  double value = static_cast<double>(bytes);
  while (value >= 1024 && unit + 1 < std::size(units)) {
    value /= 1024;
    ++unit;
  }
  char text[32];
  if (unit == 0) {
    std::snprintf(text, sizeof(text), "%llu bytes", static_cast<unsigned long long>(bytes));
  } else if (value == static_cast<double>(static_cast<uint64_t>(value))) {
    std::snprintf(text, sizeof(text), "%.0f %s", value, units[unit]);
  } else {
    std::snprintf(text, sizeof(text), "%.1f %s", value, units[unit]);
  }
  return text;
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
