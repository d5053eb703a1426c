// keelctl: the operator's command line for one keel-vmm control socket, and
// (pool_commands.h) for this host's pool of images and VMs.
#include <unistd.h>

#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "control/control_client.h"
#include "control/prometheus_text.h"
#include "tools/keelctl/cluster_commands.h"
#include "tools/keelctl/command_line.h"
#include "tools/keelctl/console_command.h"
#include "tools/keelctl/events_command.h"
#include "tools/keelctl/exit_codes.h"
#include "tools/keelctl/keelctl_output.h"
#include "tools/keelctl/pool_commands.h"

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
    "  migrate tcp:ADDR:PORT     live-migrate the guest to a keel-vmm waiting there\n"
    "      [--downtime-ms N]     (keel-vmm --incoming): a line per round while it runs,\n"
    "      [--bandwidth MBPS]    a summary at the end; N: the longest pause to aim for\n"
    "      [--connections N]     (default 5); MBPS: a cap in MB/s (default none)\n"
    "  migrate-status            the migration under way, or the last one\n"
    "  migrate-cancel            end the migration under way; the guest runs on here\n"
    "  replicate tcp:ADDR:PORT   keep a replica of the running guest in a keel-vmm\n"
    "      [--epoch-ms N]        waiting there (keel-vmm --replica-of), checkpointed\n"
    "      [--min-epoch-ms N]    every N ms (default 30, adapted between the bounds,\n"
    "      [--max-epoch-ms N]    default 10 and 250; an epoch with network output\n"
    "                            ends early); answers once it protects the guest\n"
    "  replica-status            the replication (or, on a passive, the copy)\n"
    "  replica-stop              end the replication; the passive drops its copy\n"
    "      [--run-on]            after a failure, or a switchover the passive did not\n"
    "                            confirm, the guest waits here: --run-on runs it on,\n"
    "                            once the passive's copy surely does not run\n"
    "  switchover                hand the guest to the passive at the next checkpoint\n"
    "                            (the answer once it runs there; this VMM then exits)\n"
    "  takeover                  on a passive: run the guest from the last epoch now\n"
    "                            (only once the active cannot run it any more)\n"
    "  console                   the guest's serial console (see below)\n"
    "  events [--follow]         what happened to the VM (paused, snapshot taken,\n"
    "      [--since N]           migration started, powered off, ...), numbered: those\n"
    "                            the VMM keeps (after number N), then with --follow\n"
    "                            each new one until it stops; --json: a line of JSON\n"
    "                            each; a gap (events the VMM no longer had) is shown\n"
    "                            (without --socket: the cluster's events, from the\n"
    "                            agent: keelctl cluster --help)\n"
    "  metrics [--prometheus]    the VMM's counters (vCPU exits and CPU time, disk and\n"
    "      [--watch]             network traffic, latency, drops, console, pauses,\n"
    "      [--interval SEC]      snapshots, migrations): name{labels} value; with\n"
    "                            --prometheus in Prometheus's text format, with --json\n"
    "                            as JSON; --watch: again every SEC (default 2) until\n"
    "                            interrupted, with each counter's rate per second\n"
    "Options (anywhere on the line):\n"
    "  --socket PATH  the control socket (default: $KEEL_API_SOCKET)\n"
    "  --json         print the VMM's answer as one line of JSON (also for refusals)\n"
    "  --wait SEC     how long to wait for the answer: default 10; for shutdown its\n"
    "                 timeout plus 10 (60 without one); for snapshot 600; for\n"
    "                 migrate 86400; for replicate 600\n"
    "  --help         this text\n"
    "\n"
    "Exit codes: 0 done; 1 the VMM refused the request or the operation failed\n"
    "  (reason on stderr); 2 bad command line; 3 cannot connect (no such socket,\n"
    "  nobody listening, no permission); 4 no answer in time, or the connection\n"
    "  broke or carried something that is not an answer.\n";

using keel::kBadCommandLine, keel::kDone, keel::kNoAnswer, keel::kNoConnection, keel::kRefused;

struct Command {
  std::string socket;
  bool json = false;
  std::optional<double> wait_s;
  std::optional<double> timeout_s;
  std::optional<uint64_t> downtime_ms, bandwidth_mbps, connections;
  std::optional<uint64_t> epoch_ms, min_epoch_ms, max_epoch_ms;
  bool run_on = false;
  bool prometheus = false, watch = false, follow = false;
  std::optional<uint64_t> since;
  std::optional<double> interval_s;
  std::string name;
  std::vector<std::string> arguments;
  bool help = false;
};

Command parse_command_line(int argc, char** argv) {
  Command command;
  if (const char* socket = std::getenv("KEEL_API_SOCKET")) command.socket = socket;
  std::vector<std::string> positional;
  keel::CommandLine line(argc, argv);
  while (line.next()) {
    const std::string& arg = line.word();
    if (arg == "--help" || arg == "-h") {
      command.help = true;
    } else if (arg == "--socket") {
      command.socket = line.value();
    } else if (arg == "--json") {
      command.json = true;
    } else if (arg == "--wait") {
      command.wait_s = line.seconds();
    } else if (arg == "--timeout") {
      command.timeout_s = line.seconds();
    } else if (arg == "--downtime-ms") {
      command.downtime_ms = line.number(60000);
    } else if (arg == "--bandwidth") {
      command.bandwidth_mbps = line.number(1000000);
    } else if (arg == "--connections") {
      command.connections = line.number(64);
    } else if (arg == "--epoch-ms") {
      command.epoch_ms = line.number(10000);
    } else if (arg == "--min-epoch-ms") {
      command.min_epoch_ms = line.number(10000);
    } else if (arg == "--max-epoch-ms") {
      command.max_epoch_ms = line.number(10000);
    } else if (arg == "--run-on") {
      command.run_on = true;
    } else if (arg == "--follow") {
      command.follow = true;
    } else if (arg == "--since") {
      command.since = line.number(UINT64_MAX);
    } else if (arg == "--prometheus") {
      command.prometheus = true;
    } else if (arg == "--watch") {
      command.watch = true;
    } else if (arg == "--interval") {
      command.interval_s = line.seconds();
      if (*command.interval_s < 0.1) throw keel::UsageError{"--interval must be at least 0.1 s"};
    } else if (line.is_option()) {
      throw keel::UsageError{"unknown option " + arg};
    } else {
      positional.push_back(arg);
    }
  }
  if (command.help) return command;
  if (positional.empty()) throw keel::UsageError{"no command given"};
  command.name = positional.front();
  command.arguments.assign(positional.begin() + 1, positional.end());
  if (command.socket.empty()) throw keel::UsageError{"no socket: give --socket PATH"};
  const bool takes_dir = command.name == "snapshot";
  const bool takes_address = command.name == "migrate" || command.name == "replicate";
  if (command.name != "migrate" &&
      (command.downtime_ms || command.bandwidth_mbps || command.connections)) {
    throw keel::UsageError{"--downtime-ms, --bandwidth and --connections belong to migrate"};
  }
  if (command.name != "replicate" &&
      (command.epoch_ms || command.min_epoch_ms || command.max_epoch_ms)) {
    throw keel::UsageError{"--epoch-ms, --min-epoch-ms and --max-epoch-ms belong to replicate"};
  }
  if (command.name != "replica-stop" && command.run_on)
    throw keel::UsageError{"--run-on belongs to replica-stop"};
  if (command.name != "metrics" && (command.prometheus || command.watch || command.interval_s))
    throw keel::UsageError{"--prometheus, --watch and --interval belong to metrics"};
  if (command.name != "events" && (command.follow || command.since))
    throw keel::UsageError{"--follow and --since belong to events"};
  if (command.prometheus && command.json)
    throw keel::UsageError{"--prometheus and --json: choose one"};
  for (const char* known : {"status", "pause", "resume", "shutdown", "kill", "snapshot", "migrate",
                            "migrate-status", "migrate-cancel", "replicate", "replica-status",
                            "replica-stop", "switchover", "takeover", "metrics", "events"}) {
    if (command.name == known) {
      if (takes_dir && command.arguments.size() != 1) {
        throw keel::UsageError{"snapshot needs one directory"};
      }
      if (takes_address && command.arguments.size() != 1) {
        throw keel::UsageError{command.name + " needs one address (tcp:ADDR:PORT)"};
      }
      if (!takes_dir && !takes_address && !command.arguments.empty()) {
        throw keel::UsageError{command.name + " takes no argument ('" + command.arguments.front() +
                               "')"};
      }
      if (command.timeout_s && command.name != "shutdown") {
        throw keel::UsageError{"--timeout belongs to shutdown"};
      }
      return command;
    }
  }
  throw keel::UsageError{"unknown command '" + command.name + "'"};
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
  } else if (command.name == "migrate") {
    auto* migrate = request.mutable_migrate();
    migrate->set_to(command.arguments.front());
    migrate->set_downtime_ms(static_cast<uint32_t>(command.downtime_ms.value_or(0)));
    migrate->set_bandwidth_mbps(command.bandwidth_mbps.value_or(0));
    migrate->set_connections(static_cast<uint32_t>(command.connections.value_or(0)));
  } else if (command.name == "migrate-status") {
    request.mutable_migrate_status();
  } else if (command.name == "migrate-cancel") {
    request.mutable_migrate_cancel();
  } else if (command.name == "replicate") {
    auto* replicate = request.mutable_replicate();
    replicate->set_to(command.arguments.front());
    replicate->set_epoch_ms(static_cast<uint32_t>(command.epoch_ms.value_or(0)));
    replicate->set_min_epoch_ms(static_cast<uint32_t>(command.min_epoch_ms.value_or(0)));
    replicate->set_max_epoch_ms(static_cast<uint32_t>(command.max_epoch_ms.value_or(0)));
  } else if (command.name == "replica-status") {
    request.mutable_replica_status();
  } else if (command.name == "replica-stop") {
    request.mutable_replica_stop()->set_run_held(command.run_on);
  } else if (command.name == "takeover") {
    request.mutable_takeover();
  } else if (command.name == "metrics") {
    request.mutable_metrics();
  } else if (command.name == "switchover") {
    request.mutable_switchover();
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
  } else if (command.name == "snapshot" || command.name == "replicate" ||
             command.name == "switchover") {
    seconds = 600;
  } else if (command.name == "migrate") {
    seconds = 86400;
  }
  return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
}

// While a migration runs: its rounds, a line each, from a second
// connection (the first waits for the migration's answer); finish() prints
// the rounds not printed yet from that answer.
class MigrationProgress {
 public:
  explicit MigrationProgress(const std::string& socket)
      : thread_([this, socket] { follow(socket); }) {}
  ~MigrationProgress() { stop(); }

  void finish(const control::MigrationInfo& info) {
    stop();
    print(info, true);
  }

 private:
  void stop() {
    {
      std::lock_guard guard(mutex_);
      done_ = true;
    }
    changed_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

  // A round is printed once the next harvest has measured what the guest
  // wrote meanwhile (or, at the end, as it is).
  void print(const control::MigrationInfo& info, bool all) {
    for (const auto& round : info.rounds()) {
      if (round.round() < printed_) continue;
      if (!all && round.round() + 1 >= info.rounds_total() && round.dirty_rate_bytes_per_s() == 0 &&
          round.expected_downtime_us() == 0)
        break;
      std::cout << keel::describe_migration_round(round) << std::flush;
      printed_ = round.round() + 1;
    }
  }

  void follow(const std::string& socket) {
    try {
      keel::ControlClient client(socket, std::chrono::seconds(10));
      std::unique_lock lock(mutex_);
      while (!done_) {
        lock.unlock();
        control::Request request;
        request.mutable_migrate_status();
        const control::Response response = client.call(request, std::chrono::seconds(10));
        lock.lock();
        if (done_ || !response.ok()) break;
        print(response.migrate_status(), false);
        changed_.wait_for(lock, std::chrono::milliseconds(100), [this] { return done_; });
      }
    } catch (const std::exception&) {
      // Progress is a courtesy: the answer on the first connection is what counts.
    }
  }

  std::mutex mutex_;
  std::condition_variable changed_;
  bool done_ = false;
  uint32_t printed_ = 0;
  std::thread thread_;
};

// keelctl metrics --watch: a sample every interval on one connection, until
// interrupted (or the VMM goes away: exit 4).
int watch_metrics(const Command& command) {
  const auto interval =
      std::chrono::milliseconds(static_cast<int64_t>(command.interval_s.value_or(2) * 1000));
  const bool terminal = ::isatty(STDOUT_FILENO) == 1;
  std::optional<control::MetricsResult> before;
  try {
    keel::ControlClient client(command.socket, std::chrono::seconds(10));
    for (auto next = std::chrono::steady_clock::now();; next += interval) {
      const control::Response response = client.call(make_request(command), answer_wait(command));
      if (!response.ok()) {
        std::cerr << "keelctl: metrics: " << keel::describe_error(response.error()) << '\n';
        return kRefused;
      }
      if (command.json) {
        std::cout << keel::response_json(response) << '\n';
      } else if (command.prometheus) {
        std::cout << keel::prometheus_text(response.metrics()) << '\n';
      } else {
        if (terminal) std::cout << "\033[H\033[2J";  // one screen, redrawn
        std::cout << keel::readable_metrics(response.metrics(), before ? &*before : nullptr)
                  << (terminal ? "" : "\n");
      }
      std::cout << std::flush;
      before = response.metrics();
      std::this_thread::sleep_until(next + interval);
    }
  } catch (const keel::ControlClientError& e) {
    std::cerr << "keelctl: " << e.what() << '\n';
    return e.kind() == keel::ControlClientError::Kind::kConnect ? kNoConnection : kNoAnswer;
  }
}

int run(const Command& command) {
  if (command.watch) return watch_metrics(command);
  if (command.name == "events") {
    return keel::print_events(command.socket, command.json, command.follow, command.since);
  }
  const control::Request request = make_request(command);
  const auto wait = answer_wait(command);
  control::Response response;
  std::optional<MigrationProgress> progress;
  try {
    keel::ControlClient client(command.socket, std::min(wait, std::chrono::milliseconds(10000)));
    if (command.name == "migrate" && !command.json) progress.emplace(command.socket);
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
  if (progress && response.has_migrate()) progress->finish(response.migrate());
  if (command.prometheus) {
    std::cout << keel::prometheus_text(response.metrics());
  } else if (!command.json) {
    std::cout << keel::describe_result(response);
  }
  return kDone;
}

}  // namespace

int main(int argc, char** argv) {
  if (keel::is_console_command(argc, argv)) return keel::run_console_command(argc, argv);
  if (keel::is_pool_command(argc, argv)) return keel::run_pool_command(argc, argv);
  if (keel::is_cluster_command(argc, argv)) return keel::run_cluster_command(argc, argv);
  Command command;
  try {
    command = parse_command_line(argc, argv);
  } catch (const keel::UsageError& e) {
    std::cerr << "keelctl: " << e.message << "\n" << kUsage;
    return kBadCommandLine;
  }
  if (command.help) {
    std::cout << kUsage << "\n"
              << keel::kConsoleUsage << "\n"
              << keel::kPoolUsage << "\n"
              << keel::kClusterUsage;
    return kDone;
  }
  try {
    return run(command);
  } catch (const std::exception& e) {
    std::cerr << "keelctl: " << e.what() << '\n';
    return kNoAnswer;
  }
}
