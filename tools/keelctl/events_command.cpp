#include "tools/keelctl/events_command.h"

#include <google/protobuf/util/json_util.h>

#include <ctime>
#include <iostream>

#include "control/event_connection.h"

namespace keel {

namespace pb = ::keel::api::v1;

std::string utc_time(uint64_t unix_ns) {
  const std::time_t seconds = static_cast<std::time_t>(unix_ns / 1000000000);
  std::tm tm{};
  ::gmtime_r(&seconds, &tm);
  char text[40];
  const size_t n = std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(text + n, sizeof text - n, ".%03lluZ",
                static_cast<unsigned long long>(unix_ns / 1000000 % 1000));
  return text;
}

std::string type_words(std::string name, const std::string& prefix) {
  if (name.rfind(prefix, 0) == 0) name.erase(0, prefix.size());
  for (char& c : name) c = c == '_' ? '-' : static_cast<char>(std::tolower(c));
  return name;
}

std::string took_text(uint64_t duration_us) {
  char took[40];
  std::snprintf(took, sizeof took, "  took=%.3fms", static_cast<double>(duration_us) / 1000);
  return took;
}

namespace {

std::string describe(const pb::Event& e) {
  std::string line;
  if (e.missed() != 0) line += "-- " + std::to_string(e.missed()) + " events missed --\n";
  line += std::to_string(e.seq()) + "  " + utc_time(e.time_unix_ns()) + "  " +
          type_words(pb::EventType_Name(e.type()), "EVENT_TYPE_");
  if (!e.detail().empty()) line += "  " + e.detail();
  if (!e.device().empty()) line += "  device=" + e.device();
  if (e.duration_us() != 0) line += took_text(e.duration_us());
  if (!e.peer().empty()) line += "  peer=" + e.peer();
  if (!e.dir().empty()) line += "  dir=" + e.dir();
  return line + "\n";
}

// The types a VMM's last event has.
bool ends_the_machine(pb::EventType type) {
  switch (type) {
    case pb::EVENT_TYPE_POWERED_OFF:
    case pb::EVENT_TYPE_REBOOTED:
    case pb::EVENT_TYPE_GUEST_PANIC:
    case pb::EVENT_TYPE_CRASHED:
    case pb::EVENT_TYPE_KILLED:
    case pb::EVENT_TYPE_STOPPED:
    case pb::EVENT_TYPE_MIGRATION_FINISHED:
      return true;
    default:
      return false;
  }
}

}  // namespace

int print_events(const std::string& socket, bool json, bool follow, std::optional<uint64_t> since) {
  pb::EventsSubscribe subscribe;
  if (since) {
    subscribe.set_after_seq(*since);
  } else {
    subscribe.set_from_oldest(true);
  }
  try {
    EventConnection events(socket, subscribe, std::chrono::seconds(10));
    // Without --follow: what there was when subscribing.
    const uint64_t last = events.subscribed().next_seq() - 1;
    google::protobuf::util::JsonPrintOptions options;
    options.preserve_proto_field_names = true;
    uint64_t seen = since.value_or(0);
    pb::Event event;
    bool stopped = false;  // the last event said the machine stopped
    while (follow || seen < last) {
      if (!events.wait_for(event, std::chrono::hours(1))) {
        if (follow && events.open()) continue;  // a quiet hour
        if (stopped) return 0;
        std::cerr << "keelctl: events: the VMM closed the stream before its stop was told\n";
        return 4;
      }
      stopped = ends_the_machine(event.type());
      if (json) {
        std::string line;
        (void)google::protobuf::util::MessageToJsonString(event, &line, options);
        std::cout << line << '\n';
      } else {
        std::cout << describe(event);
      }
      std::cout.flush();
      seen = event.seq();
    }
    return 0;
  } catch (const RequestRefused& e) {
    std::cerr << "keelctl: events: " << e.what() << '\n';
    return 1;
  } catch (const ControlClientError& e) {
    std::cerr << "keelctl: " << e.what() << '\n';
    return e.kind() == ControlClientError::Kind::kConnect ? 3 : 4;
  }
}

}  // namespace keel
