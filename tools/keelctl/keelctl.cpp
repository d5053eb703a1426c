// keelctl: the operator's command line for one keel-vmm control socket.
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "control/control_client.h"
#include "tools/keelctl/keelctl_output.h"

namespace {

namespace control = keel::api::v1;

const char* const kUsage =
    "usage: keelctl --socket PATH [--json] [--wait SEC] COMMAND\n"
    "\n"
    "Talks to one keel-vmm through its control socket (keel-vmm --api-socket PATH).\n"
    "Commands:\n"
    "  status                    state, vCPUs, memory, devices, uptime\n"
    "  pause                     stop the guest's vCPUs\n"
    "  resume                    let a paused guest run again\n"
    "  shutdown [--timeout SEC]  press the ACPI power button; kill the guest if it has\n"
    "                            not powered off after SEC seconds (default: the VMM's)\n"
    "  kill                      stop the guest at once\n"
    "  snapshot DIR              pause, write the guest's state and memory into DIR\n"
    "                            (below keel-vmm's --snapshot-root; created; must be\n"
    "                            empty), resume\n"
    "Options (anywhere on the line):\n"
    "  --socket PATH  the control socket (default: $KEEL_API_SOCKET)\n"
    "  --json         print the VMM's answer as one line of JSON (also for refusals)\n"
    "  --wait SEC     how long to wait for the answer: default 10; for shutdown its\n"
    "                 timeout plus 10 (60 without one); for snapshot 600\n"
    "  --help         this text\n"
    "\n"
    "Exit codes: 0 done; 1 the VMM refused the request or the operation failed\n"
    "  (reason on stderr); 2 bad command line; 3 cannot connect (no such socket,\n"
    "  nobody listening, no permission); 4 no answer in time, or the connection\n"
    "  broke or carried something that is not an answer.\n";

enum Exit { kDone = 0, kRefused = 1, kBadCommandLine = 2, kNoConnection = 3, kNoAnswer = 4 };

struct UsageError {
  std::string message;
};

struct Command {
  std::string socket;
  bool json = false;
  std::optional<double> wait_s;
  std::optional<double> timeout_s;
  std::string name;
  std::vector<std::string> arguments;
  bool help = false;
};

double parse_seconds(const std::string& text, const std::string& option) {
  double value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || !(value >= 0) || value > 86400 * 7) {
    throw UsageError{"invalid value for " + option + ": '" + text + "' (expected seconds)"};
  }
  return value;
}

Command parse_command_line(int argc, char** argv) {
  Command command;
  if (const char* socket = std::getenv("KEEL_API_SOCKET")) command.socket = socket;
  std::vector<std::string> positional;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    std::optional<std::string> inline_value;
    if (arg.rfind("--", 0) == 0) {
      const size_t eq = arg.find('=');
      if (eq != std::string::npos) {
        inline_value = arg.substr(eq + 1);
        arg.resize(eq);
      }
    }
    auto value = [&]() -> std::string {
      if (inline_value) return *inline_value;
      if (i + 1 >= argc) throw UsageError{arg + " needs a value"};
      return argv[++i];
    };
    if (arg == "--help" || arg == "-h") {
      command.help = true;
    } else if (arg == "--socket") {
      command.socket = value();
    } else if (arg == "--json") {
      command.json = true;
    } else if (arg == "--wait") {
      command.wait_s = parse_seconds(value(), arg);
    } else if (arg == "--timeout") {
      command.timeout_s = parse_seconds(value(), arg);
    } else if (arg.size() > 1 && arg[0] == '-') {
      throw UsageError{"unknown option " + arg};
    } else {
      positional.push_back(arg);
    }
  }
  if (command.help) return command;
  if (positional.empty()) throw UsageError{"no command given"};
  command.name = positional.front();
  command.arguments.assign(positional.begin() + 1, positional.end());
  if (command.socket.empty()) throw UsageError{"no socket: give --socket PATH"};
  const bool takes_dir = command.name == "snapshot";
  for (const char* known : {"status", "pause", "resume", "shutdown", "kill", "snapshot"}) {
    if (command.name == known) {
      if (takes_dir && command.arguments.size() != 1) {
        throw UsageError{"snapshot needs one directory"};
      }
      if (!takes_dir && !command.arguments.empty()) {
        throw UsageError{command.name + " takes no argument ('" + command.arguments.front() + "')"};
      }
      if (command.timeout_s && command.name != "shutdown") {
        throw UsageError{"--timeout belongs to shutdown"};
      }
      return command;
    }
  }
  throw UsageError{"unknown command '" + command.name + "'"};
}

control::Request make_request(const Command& command) {
  control::Request request;
  if (command.name == "status") {
    request.mutable_status();
  } else if (command.name == "pause") {
    request.mutable_pause();
  } else if (command.name == "resume") {
    request.mutable_resume();
  } else if (command.name == "shutdown") {
    auto* shutdown = request.mutable_shutdown();
    if (command.timeout_s) {
      // At least 1 ms: 0 would mean "the VMM's default".
      shutdown->set_timeout_ms(
          std::max<uint32_t>(1, static_cast<uint32_t>(*command.timeout_s * 1000)));
    }
  } else if (command.name == "kill") {
    request.mutable_kill();
  } else if (command.name == "snapshot") {
    // The VMM runs elsewhere: a relative directory means one under ours.
    request.mutable_snapshot()->set_dir(
        std::filesystem::absolute(command.arguments.front()).lexically_normal().string());
  }
  return request;
}

std::chrono::milliseconds answer_wait(const Command& command) {
  double seconds = 10;
  if (command.wait_s) {
    seconds = *command.wait_s;
  } else if (command.name == "shutdown") {
    seconds = command.timeout_s ? *command.timeout_s + 10 : 60;
  } else if (command.name == "snapshot") {
    seconds = 600;
  }
  return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
}

int run(const Command& command) {
  const control::Request request = make_request(command);
  const auto wait = answer_wait(command);
  control::Response response;
  try {
    keel::ControlClient client(command.socket, std::min(wait, std::chrono::milliseconds(10000)));
    response = client.call(request, wait);
  } catch (const keel::ControlClientError& e) {
    std::cerr << "keelctl: " << e.what() << '\n';
    return e.kind() == keel::ControlClientError::Kind::kConnect ? kNoConnection : kNoAnswer;
  }
  if (command.json) std::cout << keel::response_json(response) << '\n';
  if (!response.ok()) {
    std::cerr << "keelctl: " << command.name << ": " << keel::describe_error(response.error())
              << '\n';
    return kRefused;
  }
  if (!command.json) std::cout << keel::describe_result(response);
  return kDone;
}

}  // namespace

int main(int argc, char** argv) {
  Command command;
  try {
    command = parse_command_line(argc, argv);
  } catch (const UsageError& e) {
    std::cerr << "keelctl: " << e.message << "\n" << kUsage;
    return kBadCommandLine;
  }
  if (command.help) {
    std::cout << kUsage;
    return kDone;
  }
  try {
    return run(command);
  } catch (const std::exception& e) {
    std::cerr << "keelctl: " << e.what() << '\n';
    return kNoAnswer;
  }
}
