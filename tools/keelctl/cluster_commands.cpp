#include "tools/keelctl/cluster_commands.h"

#include <google/protobuf/util/json_util.h>
#include <grpcpp/support/status_code_enum.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <iomanip>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "cluster/agent_client.h"
#include "common/size_parse.h"
#include "tools/keelctl/cluster_events_command.h"
#include "tools/keelctl/command_line.h"
#include "tools/keelctl/exit_codes.h"
#include "tools/keelctl/top_table.h"

namespace keel {

namespace agent_api = keel::agent::v1;

const char* const kClusterUsage =
    "usage: keelctl [--agent SOCKET] [--json] [--wait SEC] cluster|host ...\n"
    "\n"
    "The cluster, through this host's keel-agent, on its Unix socket (default\n"
    "$KEEL_AGENT, else /var/lib/keel/agent/agent.sock):\n"
    "  cluster init --address A             make this host the first of a new cluster;\n"
    "                                       A: its cluster address (one of its own);\n"
    "                                       prints the join token\n"
    "  cluster join --address B --peer A --token T\n"
    "                                       join the cluster of the host at cluster\n"
    "                                       address A, as this host with address B\n"
    "                                       (--token -: read T from stdin)\n"
    "  cluster token                        the token the other hosts join with\n"
    "  cluster status                       hosts, roles, addresses, who is reachable,\n"
    "                                       quorum (k of n), VMs per host\n"
    "  host remove NAME                     take a stopped host out of the cluster\n"
    "  host set-address A                   change this host's cluster address (only\n"
    "                                       while the cluster has one host)\n"
    "  host drain NAME [--bandwidth MBPS]   mark HOST drained (nothing is started,\n"
    "                                       migrated or replicated there) and move its\n"
    "                                       VMs away: HA VMs switch over, the others\n"
    "                                       live-migrate (each at most MBPS MB/s);\n"
    "                                       exit 1 if one could not move\n"
    "  host undrain NAME                    take the mark off\n"
    "  top [--once]                         every VM of the cluster: host, state, vCPUs,\n"
    "                                       memory, CPU, disk and network rates, redrawn\n"
    "                                       every 2 s (--once: one table)\n"
    "  events [--follow] [--since N]        the cluster's events (hosts joined, drained,\n"
    "                                       removed; VMs started, stopped, migrated,\n"
    "                                       failed over), numbered; --follow: then each\n"
    "                                       new one as it happens (without --socket)\n"
    "VMs of the cluster, from any host (when no --pool and no $KEEL_POOL is given):\n"
    "  vm create NAME --image IMAGE [...] [--storage-host HOST]\n"
    "                                       in the pool of HOST (default: this host\n"
    "                                       when it stores, else a storage host);\n"
    "                                       the options of a pool's vm create\n"
    "  vm start NAME [--host HOST]          on HOST, or where the agent finds the most\n"
    "                                       free memory (it says why)\n"
    "  vm stop NAME [--timeout SEC] [--force]\n"
    "  vm migrate NAME --to HOST [--downtime-ms MS] [--bandwidth MBPS]\n"
    "                                       live migration over the cluster network\n"
    "                                       (its memory at most MBPS MB/s); its disks\n"
    "                                       stay on their storage host\n"
    "  vm console NAME [--read-only] [--force] [--history N|all] [--dump] [--wait SEC]\n"
    "                                       the VM's serial console from any host (the\n"
    "                                       agents relay it; see keelctl console --help)\n"
    "  vm list | vm show NAME | vm delete NAME\n"
    "  vm ha enable NAME --passive HOST     high availability: HOST keeps a replica of\n"
    "                                       the running VM (its memory, and its disk in\n"
    "                                       HOST's pool) and takes over when the active\n"
    "                                       host or its keel-vmm fails; needs 3 hosts\n"
    "  vm ha disable NAME | vm ha status NAME\n"
    "  vm ha switchover NAME                planned: the passive runs the VM, the old\n"
    "                                       active keeps the next replica\n"
    "  --json  print the agent's answer as one line of JSON\n"
    "  --wait SEC  how long to wait for the answer (default 60; cluster join 180)\n"
    "Exit codes: 0 done; 1 refused (the reason on stderr, e.g. \"no quorum (1 of 3\n"
    "  hosts reachable)\"); 2 bad command line; 3 the agent cannot be reached;\n"
    "  4 no answer in time.\n";

namespace {

struct Usage {
  std::string message;
};

struct Line {
  std::string agent;
  bool json = false;
  double wait_s = 0;  // 0: the command's default
  std::vector<std::string> words;
  std::optional<std::string> address, peer, token;
  bool once = false;    // keelctl top --once
  bool follow = false;  // keelctl events --follow
  std::optional<uint64_t> since;
  uint64_t bandwidth_mbps = 0;  // host drain --bandwidth
};

Line parse(int argc, char** argv) try {
  Line line;
  line.agent = default_agent();
  CommandLine words(argc, argv);
  while (words.next()) {
    const std::string arg = words.word();
    auto value = [&] { return words.value(); };
    if (arg == "--agent") {
      line.agent = agent_target(value());
    } else if (arg == "--json") {
      line.json = true;
    } else if (arg == "--wait") {
      std::string v = value();
      char* end = nullptr;
      line.wait_s = std::strtod(v.c_str(), &end);
      if (*end != 0 || !(line.wait_s > 0) || line.wait_s > 86400) {
        throw Usage{"invalid value for --wait: '" + v + "'"};
      }
    } else if (arg == "--address") {
      line.address = value();
    } else if (arg == "--peer") {
      line.peer = value();
    } else if (arg == "--token") {
      // "-": from stdin (a token on the command line shows in ps).
      line.token = value();
      if (*line.token == "-") std::getline(std::cin, *line.token);
    } else if (arg == "--once") {
      line.once = true;
    } else if (arg == "--follow") {
      line.follow = true;
    } else if (arg == "--since") {
      line.since = words.number(UINT64_MAX);
    } else if (arg == "--bandwidth") {
      line.bandwidth_mbps = words.number(1000000);
      if (line.bandwidth_mbps == 0)
        throw Usage{"invalid value for --bandwidth: 0 (MB/s, 1 to 1000000)"};
    } else if (arg.rfind("--", 0) == 0) {
      throw Usage{"unknown option " + arg};
    } else {
      line.words.push_back(arg);
    }
  }
  return line;
} catch (const UsageError& e) {
  throw Usage{e.message};
}

std::string join(const std::vector<std::string>& parts, const char* sep) {
  std::string out;
  for (const auto& p : parts) out += (out.empty() ? "" : sep) + p;
  return out;
}

std::string roles(const agent_api::Host& host) {
  std::vector<std::string> out;
  for (int role : host.roles()) {
    out.push_back(role == agent_api::ROLE_COMPUTE   ? "compute"
                  : role == agent_api::ROLE_STORAGE ? "storage"
                                                    : "?");
  }
  return out.empty() ? "-" : join(out, ",");
}

std::string gib(uint64_t bytes) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(1) << bytes / double(uint64_t{1} << 30) << " GiB";
  return out.str();
}

void print_status(const agent_api::ClusterStatusResponse& s) {
  std::cout << "cluster " << s.cluster_id() << ", seen from " << s.this_host() << ": "
            << s.members() << (s.members() == 1 ? " host" : " hosts") << ", " << s.reachable()
            << " of " << s.members() << " reachable, " << (s.quorum() ? "quorum" : "NO QUORUM")
            << "\n";
  std::cout << std::left << std::setw(12) << "HOST" << std::setw(18) << "CLUSTER-ADDRESS"
            << std::setw(17) << "ROLES" << std::setw(5) << "CPUS" << std::setw(11) << "MEMORY"
            << std::setw(11) << "REACHABLE" << std::setw(7) << "ALIVE" << std::setw(9) << "ETCD"
            << "VMS\n";
  for (const auto& h : s.hosts()) {
    std::string etcd = h.learner() ? "learner" : h.leader() ? "leader" : "member";
    std::cout << std::left << std::setw(12) << h.host().name() << std::setw(18)
              << h.host().cluster_address() << std::setw(17) << roles(h.host()) << std::setw(5)
              << h.host().cpus() << std::setw(11) << gib(h.host().memory_bytes()) << std::setw(11)
              << (h.reachable() ? "yes" : "no") << std::setw(7) << (h.alive() ? "yes" : "no")
              << std::setw(9) << etcd << h.vms() << (h.host().drained() ? " (drained)" : "")
              << (h.host().unhealthy().empty() ? "" : " (unhealthy: " + h.host().unhealthy() + ")")
              << "\n";
  }
  for (const auto& note : s.notes()) std::cout << "note: " << note << "\n";
}

void print_json(const google::protobuf::Message& message) {
  std::string out;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(message, &out, options);
  std::cout << out << "\n";
}

template <class Response>
void print_notes(const Response& r) {
  for (const auto& note : r.notes()) std::cout << "note: " << note << "\n";
}

}  // namespace

// The agent's socket: "unix:PATH" for gRPC.
std::string agent_target(const std::string& socket) {
  return socket.rfind("unix:", 0) == 0 ? socket : "unix:" + socket;
}

std::string default_agent() {
  const char* env = std::getenv("KEEL_AGENT");
  return agent_target(env && *env ? env : "/var/lib/keel/agent/agent.sock");
}

int exit_of(const std::string& what, const cluster::AgentCallError& e) {
  std::cerr << "keelctl: " << what << ": " << e.what() << "\n";
  if (e.unreachable()) return kNoConnection;
  if (e.grpc_code() == grpc::StatusCode::DEADLINE_EXCEEDED) return kNoAnswer;
  return kRefused;
}

bool is_cluster_command(int argc, char** argv) {
  // `events` is the cluster's unless a VMM's socket is named (and no
  // agent is: --agent chooses the cluster).
  const char* env = std::getenv("KEEL_API_SOCKET");
  bool socket = env && *env, agent = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    socket = socket || arg == "--socket" || arg.rfind("--socket=", 0) == 0;
    agent = agent || arg == "--agent" || arg.rfind("--agent=", 0) == 0;
  }
  if (agent) socket = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--agent" || arg == "--wait" || arg == "--socket" || arg == "--since" ||
        arg == "--bandwidth") {
      ++i;
      continue;
    }
    if (arg.rfind("--", 0) == 0) continue;
    return arg == "cluster" || arg == "host" || arg == "top" || (arg == "events" && !socket);
  }
  return false;
}

// keelctl top: every VM of the cluster, a row each, redrawn every 2 s
// (--once: one table, its rates over 2 s). The rows come from each host's
// metrics (the agents ask each other), so a host that does not answer is
// named under the table, its VMs missing.
int run_top(const Line& line) {
  cluster::AgentClient agent(line.agent, std::chrono::seconds(15));
  const bool terminal = ::isatty(STDOUT_FILENO) == 1 && !line.once;
  std::vector<keel::api::v1::MetricsResult> before;
  for (int round = 0;; ++round) {
    const agent_api::ClusterMetricsResponse answer = agent.cluster_metrics();
    std::vector<keel::api::v1::MetricsResult> now;
    for (const auto& h : answer.hosts()) now.push_back(h.metrics());
    if (!line.once || round > 0) {
      if (terminal) std::cout << "\033[H\033[2J";
      std::cout << top_table(top_rows(now, before));
      for (const auto& u : answer.unanswered()) std::cout << "not answering: " << u << "\n";
      std::cout << std::flush;
      if (line.once) return kDone;
    }
    before = std::move(now);
    std::this_thread::sleep_for(std::chrono::seconds(2));
  }
}

int run_cluster_command(int argc, char** argv) {
  Line line;
  try {
    line = parse(argc, argv);
    if (!line.words.empty() && line.words[0] == "events") {
      if (line.words.size() != 1) throw Usage{"events takes no argument"};
      return print_cluster_events(line.agent, line.json, line.follow, line.since);
    }
    if (line.follow || line.since) throw Usage{"--follow and --since belong to events"};
    if (!line.words.empty() && line.words[0] == "top") {
      if (line.words.size() != 1) throw Usage{"top takes no argument"};
      try {
        return run_top(line);
      } catch (const cluster::AgentCallError& e) {
        return exit_of("top", e);
      }
    }
    if (line.words.size() < 2)
      throw Usage{
          "say what to do: cluster init|join|token|status, host "
          "remove|set-address|drain|undrain"};
  } catch (const Usage& u) {
    std::cerr << "keelctl: " << u.message << "\n" << kClusterUsage;
    return kBadCommandLine;
  }
  const std::string what = line.words[0] + " " + line.words[1];
  auto want_args = [&](size_t n) {
    if (line.words.size() != 2 + n)
      throw Usage{what + " takes " + std::to_string(n) + " argument(s)"};
  };
  // A join waits for the admission (etcd's own 5 s between member changes),
  // the new member's start and catching up, then its promotion.
  // A drain waits for each of its VMs' moves in turn.
  const double wait_s = line.wait_s > 0          ? line.wait_s
                        : what == "cluster join" ? 180
                        : what == "host drain"   ? 3600
                                                 : 60;
  try {
    cluster::AgentClient agent(line.agent,
                               std::chrono::milliseconds(static_cast<int64_t>(wait_s * 1000)));
    if (what == "cluster init") {
      want_args(0);
      if (!line.address || line.peer || line.token) {
        throw Usage{"cluster init takes --address A (only)"};
      }
      agent_api::ClusterInitRequest r;
      r.set_address(*line.address);
      auto out = agent.init(r);
      if (line.json) return print_json(out), kDone;
      std::cout << "cluster " << out.cluster_id() << " formed: this host is its first\n";
      print_notes(out);
      std::cout << "other hosts join with: keelctl cluster join --address B --peer "
                << *line.address << " --token " << out.join_token() << "\n";
    } else if (what == "cluster join") {
      want_args(0);
      if (!line.address || !line.peer || !line.token) {
        throw Usage{
            "cluster join takes --address B --peer A --token T (keelctl cluster token "
            "on a host of the cluster prints T)"};
      }
      agent_api::ClusterJoinRequest r;
      r.set_address(*line.address);
      r.set_peer(*line.peer);
      r.set_token(*line.token);
      auto out = agent.join(r);
      if (line.json) return print_json(out), kDone;
      std::cout << "joined cluster " << out.cluster_id() << ": " << out.hosts() << " hosts\n";
      print_notes(out);
    } else if (what == "cluster token") {
      want_args(0);
      auto out = agent.token();
      if (line.json) return print_json(out), kDone;
      std::cout << out.join_token() << "\n";
    } else if (what == "cluster status") {
      want_args(0);
      auto out = agent.status();
      if (line.json) return print_json(out), kDone;
      print_status(out);
    } else if (what == "host remove") {
      want_args(1);
      agent_api::HostRemoveRequest r;
      r.set_name(line.words[2]);
      auto out = agent.remove_host(r);
      if (line.json) return print_json(out), kDone;
      std::cout << "host " << line.words[2] << " removed: " << out.hosts() << " hosts left\n";
      print_notes(out);
    } else if (what == "host drain" || what == "host undrain") {
      want_args(1);
      agent_api::HostDrainRequest r;
      r.set_name(line.words[2]);
      r.set_undrain(what == "host undrain");
      r.set_bandwidth_mbps(line.bandwidth_mbps);
      auto out = agent.drain_host(r);
      if (line.json) print_json(out);
      bool all_moved = true;
      for (const auto& vm : out.vms()) all_moved = all_moved && vm.error().empty();
      if (line.json) return all_moved ? kDone : kRefused;
      if (r.undrain()) {
        std::cout << "host " << r.name() << " is no longer drained\n";
        return kDone;
      }
      for (const auto& vm : out.vms()) {
        if (vm.error().empty()) {
          std::cout << vm.name() << ": " << vm.action() << " to host " << vm.to() << " (paused "
                    << std::fixed << std::setprecision(1) << vm.pause_us() / 1000.0 << " ms)\n";
        } else {
          std::cout << vm.name() << ": NOT MOVED, runs on host " << r.name() << ": " << vm.error()
                    << "\n";
        }
      }
      std::cout << "host " << r.name()
                << " is drained: " << (all_moved ? "it runs no VM" : "some VMs still run there")
                << "\n";
      return all_moved ? kDone : kRefused;
    } else if (what == "host set-address") {
      want_args(1);
      agent_api::HostSetAddressRequest r;
      r.set_address(line.words[2]);
      auto out = agent.set_address(r);
      if (line.json) return print_json(out), kDone;
      std::cout << "this host's cluster address is now " << line.words[2] << "\n";
    } else {
      throw Usage{"unknown command '" + what + "'"};
    }
    return kDone;
  } catch (const Usage& u) {
    std::cerr << "keelctl: " << u.message << "\n" << kClusterUsage;
    return kBadCommandLine;
  } catch (const cluster::AgentCallError& e) {
    return exit_of(what, e);
  }
}

namespace {

void print_vm_row(const agent_api::VmRow& row) {
  const auto& vm = row.vm();
  std::cout << std::left << std::setw(16) << vm.name() << std::setw(10)
            << (row.running() ? "running" : "stopped") << std::setw(10)
            << (row.running() ? row.owner().host() : "-") << std::setw(10) << vm.storage_host()
            << std::setw(16) << vm.image() << vm.cpus() << " vCPU, "
            << human_bytes(vm.memory_bytes()) << "\n";
}

void print_vm(const agent_api::VmRow& row) {
  const auto& vm = row.vm();
  std::cout << "vm " << vm.name() << "\n"
            << "  state       "
            << (row.running()
                    ? "running on host " + row.owner().host() + " since " + row.owner().since()
                    : std::string("stopped"))
            << "\n";
  if (row.has_vmm()) {
    std::cout << "  keel-vmm    " << row.vmm().state();
    if (row.vmm().pid() != 0) {
      std::cout << " (pid " << row.vmm().pid() << ", up " << row.vmm().uptime_ms() / 1000 << " s)";
    }
    std::cout << "\n";
  }
  std::cout << "  stored on   host " << vm.storage_host() << "\n"
            << "  image       " << vm.image() << "\n"
            << "  size        " << vm.cpus() << " vCPU, " << human_bytes(vm.memory_bytes()) << "\n"
            << "  created     " << vm.created_at() << "\n"
            << "  last host   " << (vm.last_host().empty() ? "-" : vm.last_host()) << "\n"
            << "  generation  " << vm.generation() << "\n";
}

void print_ha(const agent_api::VmHaStatus& s) {
  std::cout << "vm " << s.name() << " high availability\n"
            << "  state       " << s.state() << (s.detail().empty() ? "" : ": " + s.detail())
            << "\n"
            << "  active      " << (s.active().empty() ? "-" : s.active()) << "\n"
            << "  passive     " << (s.passive().empty() ? "-" : s.passive()) << "\n";
  if (s.epoch() != 0) {
    std::cout << std::fixed << std::setprecision(1) << "  epoch       " << s.epoch() << " ("
              << s.last_epoch_us() / 1000.0 << " ms long, aiming at " << s.epoch_target_ms()
              << " ms; acknowledged " << s.last_ack_age_ms() << " ms ago)\n"
              << "  bandwidth   " << human_bytes(s.bandwidth_bytes_per_s()) << "/s\n"
              << "  slowdown    " << s.paused_percent() << "% of the guest's time paused"
              << " (last pause " << s.last_pause_us() / 1000.0 << " ms)\n";
  }
  if (!s.last_event().empty()) std::cout << "  last event  " << s.last_event() << "\n";
}

}  // namespace

int run_cluster_vm(const ClusterVmCommand& c) {
  const std::string what = "vm " + c.verb;
  double wait_s = c.wait_s > 0 ? c.wait_s : 60;
  if (c.verb == "stop" && c.wait_s <= 0) wait_s += c.timeout_s > 0 ? c.timeout_s : 60;
  if (c.verb == "migrate" && c.wait_s <= 0) wait_s = 1900;  // the agent's own limit, and more
  try {
    cluster::AgentClient agent(c.agent ? agent_target(*c.agent) : default_agent(),
                               std::chrono::milliseconds(static_cast<int64_t>(wait_s * 1000)));
    if (c.verb == "create") {
      const auto& spec = *c.spec;
      agent_api::VmCreateRequest r;
      r.set_name(spec.name);
      r.set_image(spec.image);
      r.set_cpus(spec.cpus);
      r.set_memory_bytes(spec.memory_bytes);
      r.set_disk_bytes(spec.disk_bytes);
      r.set_hostname(spec.hostname);
      r.set_address(spec.address);
      r.set_gateway(spec.gateway);
      for (const auto& key : spec.ssh_keys) r.add_ssh_keys(key);
      if (spec.user_data) {
        r.set_user_data_given(true);
        r.set_user_data(*spec.user_data);
      }
      r.set_tap(spec.tap);
      r.set_storage_host(c.storage_host);
      auto out = agent.vm_create(r);
      if (c.json) return print_json(out), kDone;
      std::cout << "created " << out.vm().name() << " from " << out.vm().image()
                << " on storage host " << out.vm().storage_host() << "\n";
    } else if (c.verb == "start") {
      agent_api::VmStartRequest r;
      r.set_name(c.name);
      r.set_host(c.host);
      auto out = agent.vm_start(r);
      if (c.json) return print_json(out), kDone;
      std::cout << "started " << c.name << " on host " << out.host() << " (" << out.reason()
                << "; keel-vmm " << out.pid() << ", socket " << out.socket() << " there)\n";
    } else if (c.verb == "stop") {
      agent_api::VmStopRequest r;
      r.set_name(c.name);
      r.set_timeout_ms(static_cast<uint32_t>(c.timeout_s * 1000));
      r.set_force(c.force);
      auto out = agent.vm_stop(r);
      if (c.json) return print_json(out), kDone;
      std::cout << "stopped " << c.name << " on host " << out.host() << "\n";
    } else if (c.verb == "migrate") {
      agent_api::VmMigrateRequest r;
      r.set_name(c.name);
      r.set_to(c.to);
      r.set_downtime_ms(c.downtime_ms);
      r.set_bandwidth_mbps(c.bandwidth_mbps);
      auto out = agent.vm_migrate(r);
      if (c.json) return print_json(out), kDone;
      std::cout << "migrated " << c.name << " from " << out.from() << " to " << out.to()
                << ": paused " << std::fixed << std::setprecision(1) << out.downtime_us() / 1000.0
                << " ms, " << out.elapsed_ms() << " ms in all, " << (out.bytes_sent() >> 20)
                << " MiB in " << out.rounds() << " rounds\n";
    } else if (c.verb == "ha") {
      agent_api::VmHaRequest r;
      r.set_name(c.name);
      r.set_action(c.ha_action == "enable"    ? agent_api::HA_ACTION_ENABLE
                   : c.ha_action == "disable" ? agent_api::HA_ACTION_DISABLE
                   : c.ha_action == "status"  ? agent_api::HA_ACTION_STATUS
                                              : agent_api::HA_ACTION_SWITCHOVER);
      r.set_passive(c.passive);
      auto out = agent.vm_ha(r);
      if (c.json) return print_json(out), kDone;
      if (c.ha_action == "switchover") {
        std::cout << "switched " << c.name << " over to host " << out.status().active()
                  << ": paused " << std::fixed << std::setprecision(1)
                  << out.switchover_pause_us() / 1000.0 << " ms\n";
      } else {
        print_ha(out.status());
      }
    } else if (c.verb == "list" || c.verb == "show") {
      agent_api::VmListRequest r;
      r.set_name(c.name);
      auto out = agent.vm_list(r);
      if (c.json) return print_json(out), kDone;
      if (!out.current()) {
        std::cerr << "keelctl: no quorum: shown is what this host last knew\n";
      }
      if (c.verb == "show") {
        print_vm(out.vms(0));
      } else {
        for (const auto& row : out.vms()) print_vm_row(row);
      }
    } else if (c.verb == "delete") {
      agent_api::VmDeleteRequest r;
      r.set_name(c.name);
      auto out = agent.vm_delete(r);
      if (c.json) return print_json(out), kDone;
      std::cout << "deleted " << c.name << " (from host " << out.storage_host() << ")\n";
    } else {
      std::cerr << "keelctl: vm " << c.verb << " needs a pool (--pool PATH or $KEEL_POOL)\n";
      return kBadCommandLine;
    }
    return kDone;
  } catch (const cluster::AgentCallError& e) {
    return exit_of(what, e);
  }
}

}  // namespace keel
