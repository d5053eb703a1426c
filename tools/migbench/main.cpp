// keel-migbench: live-migration pause figures of Keel, side by side with
// QEMU's on the same machine in the same run. See kUsage.
#include <google/protobuf/util/json_util.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "common/size_parse.h"
#include "tools/migbench/bench_network.h"
#include "tools/migbench/ha_runs.h"
#include "tools/migbench/migration_peers.h"

namespace {

using namespace keel::migbench;

const char* const kUsage =
    "usage: keel-migbench [--guest testos|linux] [--memory SIZE] [--cpus N] [--dirty-mib N]\n"
    "                     [--dirty-rate MBPS] [--downtime-ms N] [--bandwidth MBPS] [--runs N]\n"
    "                     [--net] [--peer none|qemu] [--where auto|direct|box] [--json]\n"
    "                     [--trace] [--ha] [--only NAMES]\n"
    "\n"
    "Boots the guest (a heartbeat line every millisecond; with --dirty-mib also the\n"
    "memory dirtier), migrates it between two keel-vmm processes over loopback\n"
    "--runs times (a fresh pair each run), and prints each run and the medians:\n"
    "  outside  the longest stretch without a heartbeat line, by this program's\n"
    "           clock as it reads both VMMs' consoles: the pause the world saw\n"
    "  network  with --net: the longest stretch without an answer to the UDP echo this\n"
    "           program sends the guest every millisecond\n"
    "  vmm      the pause the VMMs count (source vCPUs stopped to destination's running;\n"
    "           QEMU: its downtime)\n"
    "  stall    the guest's own view: its longest clock step between two beats\n"
    "  offset   the guest clock's drift from this program's over the run (negative:\n"
    "           behind)\n"
    "  total, sent, rounds, throttle (the most auto-converge applied)\n"
    "--peer qemu runs the same guest file and workload under QEMU with KVM\n"
    "(qemu-system-x86_64, PVH boot), migrated over QMP with QEMU's defaults, and again\n"
    "tuned (downtime-limit set to --downtime-ms, multifd with 4 channels).\n"
    "\n"
    "  --guest G          testos (default): the test guest; linux: Debian's cloud kernel\n"
    "                     with the Linux guest image's initramfs (build it first:\n"
    "                     cmake --build build --target linux-guest-image), its\n"
    "                     keel-heartbeat and keel-dirtier; always in the KVM test host\n"
    "                     where /dev/kvm is PVM\n"
    "  --memory SIZE      guest RAM (default 1G)\n"
    "  --cpus N           vCPUs (default 1)\n"
    "  --dirty-mib N      memory the dirtier rewrites, round and round (default 0: idle)\n"
    "  --dirty-rate MBPS  its rate in MB/s (default 0: as fast as it can)\n"
    "  --downtime-ms N    the pause to aim for (default 5)\n"
    "  --bandwidth MBPS   cap the migration link at MBPS MB/s for every peer (default:\n"
    "                     none), to see a guest that dirties faster throttled\n"
    "  --net              the idle test guest echoes UDP on a virtio-net card: this program\n"
    "                     moves into a network namespace of its own with a bridge\n"
    "                     (10.0.3.1/24) and two taps, the source's and the\n"
    "                     destination's, and watches the guest through the network too\n"
    "                     (needs root); with --guest linux (and --ha) only\n"
    "                     keel-ha-echo's guest has a card\n"
    "  --runs N           runs per VMM (default 5)\n"
    "  --where W          auto (default): directly where /dev/kvm runs the test guest\n"
    "                     (and, with --peer qemu, QEMU: not on PVM), else inside the\n"
    "                     KVM test host (tools/kvm-run); KEEL_KVM_MODE=direct|box\n"
    "                     forces auto's choice; the first line says which\n"
    "  --json             one JSON object instead of the table\n"
    "  --ha               also high availability's figures in the same runs (keel-vmm\n"
    "                     --replica-of): keel-switch replicates the guest, protects it\n"
    "                     2 s, then switches over (columns as for a migration; outside\n"
    "                     includes its epochs' pauses before the handover, and a\n"
    "                     last line compares the handover's stretch alone, the\n"
    "                     source's last beat to the destination's first, with the\n"
    "                     migration's);\n"
    "                     keel-failover replicates the same way, kills the active\n"
    "                     keel-vmm and at once tells the passive to take over;\n"
    "                     keel-frozen stops it (SIGSTOP, as a dead host) and tells\n"
    "                     the passive once its stream ended by the silence (the\n"
    "                     detection, the run permit and its margin: 750 ms):\n"
    "                     total = the kill to the passive's first beat, outside = the\n"
    "                     last beat to that one, vmm = the takeover's answer, stall =\n"
    "                     the guest's progress rolled back to its last epoch; rounds =\n"
    "                     epochs acknowledged, sent = replication bytes; with\n"
    "                     --dirty-mib also keel-overhead: the dirtier's rate over 4 s\n"
    "                     alone, then replicated, in the same guest, the share of time\n"
    "                     paused for checkpoints and the replication's bandwidth\n"
    "                     with --net also keel-ha-echo: requests one at a time for\n"
    "                     3 s alone, then 3 s protected (answers held until their\n"
    "                     epoch's ack): per second and median round trip; the test\n"
    "                     guest's are UDP echoes, the Linux guest's keel-ledger's on\n"
    "                     one TCP connection (each answered once its record is\n"
    "                     flushed to a 16 MiB disk replicated to the passive's image)\n"
    "  --only NAMES       only these runs (their names in the vmm column, comma-separated:\n"
    "                     keel,keel-switch,...), still interleaved; the summary lines\n"
    "                     then compare only what ran\n"
    "  --trace            after each run, on stderr: the lines around its pause on this\n"
    "                     program's clock, both consoles and both VMMs' stderr (keel-vmm's\n"
    "                     pause steps: KEEL_LOG=debug is set for it), to see where a pause\n"
    "                     went; the logging costs some of the pause it shows\n";

struct Options {
  Workload workload;
  int runs = 5;
  bool qemu = false;
  bool ha = false;
  bool json = false;
  std::string where = "auto";
  std::set<std::string> only;  // --only: these runs' names (empty: all)
};

uint64_t number(const std::string& text, const std::string& option) {
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size())
    throw std::invalid_argument("invalid value for " + option + ": '" + text + "'");
  return v;
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
      return argv[++i];
    };
    if (a == "--help" || a == "-h") {
      std::cout << kUsage;
      std::exit(0);
    } else if (a == "--guest") {
      const std::string g = value();
      if (g != "testos" && g != "linux") throw std::invalid_argument("--guest: testos or linux");
      o.workload.guest = g == "linux" ? Guest::kLinux : Guest::kTestos;
    } else if (a == "--memory") {
      o.workload.memory_mib = keel::parse_size(value()) >> 20;
    } else if (a == "--cpus") {
      o.workload.cpus = static_cast<uint32_t>(number(value(), a));
    } else if (a == "--dirty-mib") {
      o.workload.dirty_mib = number(value(), a);
    } else if (a == "--dirty-rate") {
      o.workload.dirty_rate = number(value(), a);
    } else if (a == "--bandwidth") {
      o.workload.bandwidth_mbps = number(value(), a);
    } else if (a == "--downtime-ms") {
      o.workload.downtime_ms = static_cast<uint32_t>(number(value(), a));
    } else if (a == "--runs") {
      o.runs = static_cast<int>(number(value(), a));
    } else if (a == "--peer") {
      const std::string p = value();
      if (p != "none" && p != "qemu") throw std::invalid_argument("--peer: none or qemu");
      o.qemu = p == "qemu";
    } else if (a == "--where") {
      o.where = value();
      if (o.where != "auto" && o.where != "direct" && o.where != "box")
        throw std::invalid_argument("--where: auto, direct or box");
    } else if (a == "--json") {
      o.json = true;
    } else if (a == "--net") {
      o.workload.net = true;
    } else if (a == "--trace") {
      o.workload.trace = true;
    } else if (a == "--ha") {
      o.ha = true;
    } else if (a == "--only") {
      std::stringstream names(value());
      for (std::string name; std::getline(names, name, ',');) o.only.insert(name);
    } else {
      throw std::invalid_argument("unknown option " + a);
    }
  }
  if (o.runs < 1) throw std::invalid_argument("--runs must be at least 1");
  if (o.workload.dirty_mib >= o.workload.memory_mib)
    throw std::invalid_argument("--dirty-mib must be below --memory");
  if (o.workload.net && o.workload.dirty_mib != 0)
    throw std::invalid_argument("--net: only with the idle guest (no --dirty-mib)");
  if (o.workload.net && o.workload.guest == Guest::kLinux && !o.ha) {
    throw std::invalid_argument(
        "--net with --guest linux: only with --ha (its TCP run; the migration's network view "
        "is the test guest's UDP echo)");
  }
  return o;
}

// The runs the options ask for, in the order they take turns; --only
// keeps those it names (each must be one of them).
std::vector<Peer> runs_to_make(const Options& o) {
  std::vector<Peer> peers{Peer::kKeel};
  if (o.ha)
    peers.insert(peers.end(), {Peer::kKeelSwitchover, Peer::kKeelFailover, Peer::kKeelFrozen});
  if (o.ha && o.workload.dirty_mib != 0) peers.push_back(Peer::kKeelOverhead);
  if (o.ha && o.workload.net) peers.push_back(Peer::kKeelEcho);
  if (o.qemu) peers.insert(peers.end(), {Peer::kQemuDefault, Peer::kQemuTuned});
  if (o.only.empty()) return peers;
  std::vector<Peer> chosen;
  for (Peer p : peers)
    if (o.only.count(peer_name(p))) chosen.push_back(p);
  if (chosen.size() != o.only.size()) {
    std::string names;
    for (Peer p : peers) names += std::string(names.empty() ? "" : ", ") + peer_name(p);
    throw std::invalid_argument("--only: each name must be one of the runs these options make (" +
                                names + ")");
  }
  return chosen;
}

bool exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

std::string kvm_kind() {
  if (!exists("/dev/kvm")) return "none";
  if (exists("/sys/module/kvm_pvm")) return "PVM";
  return "hardware";
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

struct Row {
  Peer peer;
  int run;  // 0: the median
  RunFigures f;
};

RunFigures medians(const std::vector<RunFigures>& runs) {
  RunFigures m;
  auto take = [&](auto field) {
    std::vector<double> v;
    for (const auto& r : runs)
      if (r.ok) v.push_back(static_cast<double>(field(r)));
    return median(v);
  };
  m.ok = true;
  m.outside_pause_ms = take([](const RunFigures& r) { return r.outside_pause_ms; });
  m.handover_pause_ms = take([](const RunFigures& r) { return r.handover_pause_ms; });
  m.network_pause_ms = take([](const RunFigures& r) { return r.network_pause_ms; });
  m.vmm_pause_ms = take([](const RunFigures& r) { return r.vmm_pause_ms; });
  m.guest_stall_ms = take([](const RunFigures& r) { return r.guest_stall_ms; });
  m.clock_offset_ms = take([](const RunFigures& r) { return r.clock_offset_ms; });
  m.total_ms = take([](const RunFigures& r) { return r.total_ms; });
  m.detect_ms = take([](const RunFigures& r) { return r.detect_ms; });
  m.bytes = static_cast<uint64_t>(take([](const RunFigures& r) { return r.bytes; }));
  m.rounds = static_cast<uint32_t>(take([](const RunFigures& r) { return r.rounds; }));
  m.throttle_percent =
      static_cast<uint32_t>(take([](const RunFigures& r) { return r.throttle_percent; }));
  m.rate_alone_mbs = take([](const RunFigures& r) { return r.rate_alone_mbs; });
  m.rate_replicated_mbs = take([](const RunFigures& r) { return r.rate_replicated_mbs; });
  m.paused_percent = take([](const RunFigures& r) { return r.paused_percent; });
  m.replication_mbs = take([](const RunFigures& r) { return r.replication_mbs; });
  m.echo_alone_rps = take([](const RunFigures& r) { return r.echo_alone_rps; });
  m.echo_alone_ms = take([](const RunFigures& r) { return r.echo_alone_ms; });
  m.echo_protected_rps = take([](const RunFigures& r) { return r.echo_protected_rps; });
  m.echo_protected_ms = take([](const RunFigures& r) { return r.echo_protected_ms; });
  return m;
}

std::string row_text(const Row& r, bool net) {
  char line[256];
  if (!r.f.ok) {
    std::snprintf(line, sizeof line, "%-13s %-6d FAILED: ", peer_name(r.peer), r.run);
    return line + r.f.error;  // whole: its stderr and last lines say why
  }
  if (r.peer == Peer::kKeelOverhead) {
    std::snprintf(line, sizeof line,
                  "%-13s %-6s dirtier %.1f MB/s alone, %.1f MB/s replicated (%.3f), %.2f%% "
                  "paused, longest pause %.2f ms, epoch target %.0f ms, replication %.1f MB/s",
                  peer_name(r.peer), r.run ? std::to_string(r.run).c_str() : "median",
                  r.f.rate_alone_mbs, r.f.rate_replicated_mbs,
                  r.f.rate_alone_mbs > 0 ? r.f.rate_replicated_mbs / r.f.rate_alone_mbs : 0.0,
                  r.f.paused_percent, r.f.vmm_pause_ms, r.f.total_ms, r.f.replication_mbs);
    return line;
  }
  if (r.peer == Peer::kKeelEcho) {
    std::snprintf(line, sizeof line,
                  "%-13s %-6s %s one at a time: alone %.0f/s, median %.2f ms; protected "
                  "%.0f/s, median %.2f ms (+%.2f ms); last epoch %.1f ms, %.2f%% paused",
                  peer_name(r.peer), r.run ? std::to_string(r.run).c_str() : "median",
                  net ? "UDP echo" : "TCP keel-ledger requests", r.f.echo_alone_rps,
                  r.f.echo_alone_ms, r.f.echo_protected_rps, r.f.echo_protected_ms,
                  r.f.echo_protected_ms - r.f.echo_alone_ms, r.f.total_ms, r.f.paused_percent);
    return line;
  }
  char network[16] = "-";
  if (net) std::snprintf(network, sizeof network, "%.2f", r.f.network_pause_ms);
  std::snprintf(line, sizeof line, "%-13s %-6s %9.2f %8s %8.2f %8.2f %8.2f %9.0f %9.1f %6u %8u%%",
                peer_name(r.peer), r.run ? std::to_string(r.run).c_str() : "median",
                r.f.outside_pause_ms, network, r.f.vmm_pause_ms, r.f.guest_stall_ms,
                r.f.clock_offset_ms, r.f.total_ms, static_cast<double>(r.f.bytes) / (1 << 20),
                r.f.rounds, r.f.throttle_percent);
  return line;
}

std::string json_figures(const RunFigures& f) {
  std::ostringstream o;
  o << "{\"ok\":" << (f.ok ? "true" : "false") << ",\"outside_pause_ms\":" << f.outside_pause_ms
    << ",\"handover_pause_ms\":" << f.handover_pause_ms
    << ",\"network_pause_ms\":" << f.network_pause_ms << ",\"vmm_pause_ms\":" << f.vmm_pause_ms
    << ",\"guest_stall_ms\":" << f.guest_stall_ms << ",\"clock_offset_ms\":" << f.clock_offset_ms
    << ",\"total_ms\":" << f.total_ms << ",\"detect_ms\":" << f.detect_ms
    << ",\"bytes\":" << f.bytes << ",\"rounds\":" << f.rounds
    << ",\"throttle_percent\":" << f.throttle_percent << ",\"rate_alone_mbs\":" << f.rate_alone_mbs
    << ",\"rate_replicated_mbs\":" << f.rate_replicated_mbs
    << ",\"paused_percent\":" << f.paused_percent << ",\"replication_mbs\":" << f.replication_mbs
    << ",\"echo_alone_rps\":" << f.echo_alone_rps << ",\"echo_alone_ms\":" << f.echo_alone_ms
    << ",\"echo_protected_rps\":" << f.echo_protected_rps
    << ",\"echo_protected_ms\":" << f.echo_protected_ms;
  if (!f.ok) {
    std::string e;
    for (char c : f.error) {
      if (c == '"' || c == '\\') e.push_back('\\');
      e.push_back(c == '\n' ? ' ' : c);
    }
    o << ",\"error\":\"" << e << "\"";
  }
  o << "}";
  return o.str();
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  try {
    o = parse(argc, argv);
    runs_to_make(o);
  } catch (const std::exception& e) {
    std::cerr << "keel-migbench: " << e.what() << "\n" << kUsage;
    return 2;
  }
  const std::string kind = kvm_kind();
  const bool in_box =
      std::getenv("KEEL_KVM_WHERE") && std::string(std::getenv("KEEL_KVM_WHERE")) == "box";
  bool direct = o.where == "direct" || in_box;
  // PVM runs only PVM-aware guest kernels: testos, not Debian's, nor QEMU.
  const bool linux = o.workload.guest == Guest::kLinux;
  if (o.where == "auto" && !in_box) {
    // KEEL_KVM_MODE forces the choice as it does for tools/kvm-run (the
    // test suite's box mode); else the KVM this machine has decides.
    const char* env = std::getenv("KEEL_KVM_MODE");
    const std::string mode = env ? env : "auto";
    if (mode != "auto" && mode != "direct" && mode != "box") {
      std::cerr << "keel-migbench: KEEL_KVM_MODE must be auto, direct or box (is '" << mode
                << "')\n";
      return 2;
    }
    direct = mode == "auto" ? kind == "hardware" || (kind == "PVM" && !o.qemu && !linux)
                            : mode == "direct";
  }
  if (!direct) {
    // The whole run moves into the KVM test host: both VMMs, both peers.
    std::vector<std::string> args{KEEL_SOURCE_DIR "/tools/kvm-run",
                                  "--need",
                                  "kvm",
                                  "--build",
                                  KEEL_BUILD_DIR,
                                  "--",
                                  "/proc/self/exe"};
    args[args.size() - 1] = std::filesystem::canonical("/proc/self/exe").string();
    for (int i = 1; i < argc; ++i) args.push_back(argv[i]);
    args.insert(args.end(), {"--where", "direct"});
    ::setenv("KEEL_KVM_MODE", "box", 1);
    std::vector<char*> c;
    for (auto& a : args) c.push_back(a.data());
    c.push_back(nullptr);
    std::cerr << "keel-migbench: /dev/kvm here: " << kind
              << "; running inside the KVM test host (tools/kvm-run)\n";
    ::execv(c[0], c.data());
    std::perror("keel-migbench: exec tools/kvm-run");
    return 1;
  }

  Workload& w = o.workload;
  if (w.trace) ::setenv("KEEL_LOG", "debug", 1);  // keel-vmm's pause steps
  if (w.net) {
    try {
      enter_bench_network();
    } catch (const std::exception& e) {
      std::cerr << "keel-migbench: " << e.what() << "\n";
      return 1;
    }
  }
  w.keel_vmm = KEEL_BUILD_DIR "/keel-vmm/keel-vmm";
  w.testos_bzimage = KEEL_BUILD_DIR "/guest-images/testos/testos.bzImage";
  w.testos_elf = KEEL_BUILD_DIR "/guest-images/testos/testos.elf";
  w.linux_images = KEEL_BUILD_DIR "/guest-images/linux";
  if (linux && !exists(w.linux_images + "/vmlinuz-cloud")) {
    std::cerr << "keel-migbench: --guest linux: no " << w.linux_images
              << "/vmlinuz-cloud; build the Linux guest image first: cmake --build "
              << KEEL_BUILD_DIR << " --target linux-guest-image\n";
    return 1;
  }
  std::string scratch = "/tmp/keel-migbench-XXXXXX";
  if (!::mkdtemp(scratch.data())) {
    std::perror("keel-migbench: mkdtemp");
    return 1;
  }
  w.scratch = scratch;
  const std::string where =
      in_box ? "inside the KVM test host (box)" : "directly on /dev/kvm (" + kind + ")";
  const std::string load =
      w.dirty_mib == 0
          ? std::string(w.udp_echo() ? "idle, echoing UDP" : "idle")
          : "dirtying " + std::to_string(w.dirty_mib) + " MiB at " +
                (w.dirty_rate ? std::to_string(w.dirty_rate) + " MB/s" : std::string("full speed"));
  const std::string link =
      w.bandwidth_mbps ? ", link capped at " + std::to_string(w.bandwidth_mbps) + " MB/s" : "";
  if (!o.json) {
    std::printf("keel-migbench: %s, %llu MiB, %u vCPU, %s, %d runs, target %u ms%s, %s\n",
                linux ? "linux" : "testos", static_cast<unsigned long long>(w.memory_mib), w.cpus,
                load.c_str(), o.runs, w.downtime_ms, link.c_str(), where.c_str());
    std::printf("%-13s %-6s %9s %8s %8s %8s %8s %9s %9s %6s %9s\n", "vmm", "run", "outside-ms",
                "network-ms", "vmm-ms", "stall-ms", "offset-ms", "total-ms", "sent-MiB", "rounds",
                "throttle");
    std::fflush(stdout);
  }
  const std::vector<Peer> peers = runs_to_make(o);
  std::vector<Row> rows;
  std::map<Peer, std::vector<RunFigures>> by_peer;
  int failures = 0;
  // Interleaved (keel, qemu, qemu tuned, keel, ...): a noisy spell hits all.
  for (int run = 1; run <= o.runs; ++run) {
    for (Peer p : peers) {
      RunFigures f;
      try {
        switch (p) {
          case Peer::kKeel:
            f = run_keel(w, run);
            break;
          case Peer::kKeelSwitchover:
            f = run_keel_switchover(w, run);
            break;
          case Peer::kKeelFailover:
            f = run_keel_failover(w, run, false);
            break;
          case Peer::kKeelFrozen:
            f = run_keel_failover(w, run, true);
            break;
          case Peer::kKeelOverhead:
            f = run_keel_overhead(w, run);
            break;
          case Peer::kKeelEcho:
            f = run_keel_echo(w, run);
            break;
          default:
            f = run_qemu(w, p == Peer::kQemuTuned, run);
        }
      } catch (const std::exception& e) {
        f.error = e.what();
      }
      failures += !f.ok;
      by_peer[p].push_back(f);
      rows.push_back({p, run, f});
      if (!o.json) {
        std::printf("%s\n", row_text(rows.back(), w.udp_echo()).c_str());
        std::fflush(stdout);
      }
    }
  }
  std::filesystem::remove_all(scratch);
  if (o.json) {
    std::ostringstream out;
    out << "{\"where\":\"" << (in_box ? "box" : "direct") << "\",\"kvm\":\"" << kind
        << "\",\"guest\":\"" << (linux ? "linux" : "testos") << "\",\"memory_mib\":" << w.memory_mib
        << ",\"cpus\":" << w.cpus << ",\"dirty_mib\":" << w.dirty_mib
        << ",\"dirty_rate_mbps\":" << w.dirty_rate << ",\"downtime_target_ms\":" << w.downtime_ms
        << ",\"bandwidth_mbps\":" << w.bandwidth_mbps << ",\"runs\":[";
    for (size_t i = 0; i < rows.size(); ++i) {
      out << (i ? "," : "") << "{\"vmm\":\"" << peer_name(rows[i].peer)
          << "\",\"run\":" << rows[i].run << ",\"figures\":" << json_figures(rows[i].f) << "}";
    }
    out << "],\"medians\":{";
    bool first = true;
    for (Peer p : peers) {
      out << (first ? "" : ",") << "\"" << peer_name(p)
          << "\":" << json_figures(medians(by_peer[p]));
      first = false;
    }
    out << "}}";
    std::cout << out.str() << "\n";
  } else {
    for (Peer p : peers)
      std::printf("%s\n", row_text({p, 0, medians(by_peer[p])}, w.udp_echo()).c_str());
    const auto ran = [&](Peer p) {
      return std::find(peers.begin(), peers.end(), p) != peers.end();
    };
    const RunFigures keel = medians(by_peer[Peer::kKeel]);
    if (ran(Peer::kKeel) && ran(Peer::kKeelSwitchover)) {
      const RunFigures sw = medians(by_peer[Peer::kKeelSwitchover]);
      std::printf("outside pause, keel-switch / keel (migration): %.3f\n",
                  keel.outside_pause_ms > 0 ? sw.outside_pause_ms / keel.outside_pause_ms : 0.0);
      std::printf(
          "handover pause (the source's last beat to the destination's first), keel-switch / "
          "keel (migration): %.2f / %.2f ms = %.3f\n",
          sw.handover_pause_ms, keel.handover_pause_ms,
          keel.handover_pause_ms > 0 ? sw.handover_pause_ms / keel.handover_pause_ms : 0.0);
    }
    if (ran(Peer::kKeelFailover)) {
      const RunFigures fo = medians(by_peer[Peer::kKeelFailover]);
      std::printf(
          "failover, the active killed to the guest beating on the passive: %.2f ms "
          "(takeover answered in %.2f ms; %.0f ms of the guest's progress rolled back)\n",
          fo.total_ms, fo.vmm_pause_ms, fo.guest_stall_ms);
    }
    if (ran(Peer::kKeelFrozen)) {
      const RunFigures fr = medians(by_peer[Peer::kKeelFrozen]);
      std::printf(
          "failover, the active frozen (SIGSTOP, as a dead host) to the guest beating on the "
          "passive: %.2f ms (detected: the passive's stream ended %.2f ms after the fault; "
          "takeover answered in %.2f ms)\n",
          fr.total_ms, fr.detect_ms, fr.vmm_pause_ms);
    }
    for (Peer p : {Peer::kQemuDefault, Peer::kQemuTuned}) {
      if (ran(Peer::kKeel) && ran(p)) {
        const RunFigures q = medians(by_peer[p]);
        std::printf("outside pause, keel / %s: %.3f\n", peer_name(p),
                    q.outside_pause_ms > 0 ? keel.outside_pause_ms / q.outside_pause_ms : 0.0);
        if (w.udp_echo()) {
          std::printf("network pause, keel / %s: %.3f\n", peer_name(p),
                      q.network_pause_ms > 0 ? keel.network_pause_ms / q.network_pause_ms : 0.0);
        }
      }
    }
  }
  return failures == 0 ? 0 : 1;
}
