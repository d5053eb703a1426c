#include "tools/migbench/migration_peers.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <optional>
#include <thread>

#include "control/control_client.h"
#include "tools/migbench/bench_network.h"
#include "tools/migbench/pause_trace.h"
#include "tools/migbench/qmp_client.h"
#include "tools/migbench/udp_echo_observer.h"

namespace keel::migbench {

namespace pb = ::keel::api::v1;
using std::chrono::milliseconds;
using std::chrono::seconds;

namespace {
// A QEMU migration still under way after this is counted as failed (QEMU
// 7.2's multifd sometimes never completes in the KVM test host).
constexpr auto kQemuMigrationLimit = seconds(120);
// Beats the destination must show after the move before the run counts:
// the window in which a late stall would show. Short: after it the source
// VMM tears down its memory, and on a small machine that only adds noise.
constexpr uint64_t kSettleMs = 100;
}  // namespace

uint16_t free_port() {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&a), &len) != 0)
    throw std::runtime_error("no free loopback port");
  return ntohs(a.sin_port);
}

double ms(Clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

uint64_t field(const std::string& line, const std::string& key) {
  const size_t at = line.find(" " + key + "=");
  return at == std::string::npos ? 0 : std::stoull(line.substr(at + key.size() + 2));
}

std::string scratch_dir(const Workload& w, const std::string& name) {
  const std::string dir = w.scratch + "/" + name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

// The destination shows beats again for a while after the move.
void settle(TimedConsole& destination, const Workload& w) {
  destination.wait_lines(w.beat_prefix(), kSettleMs / w.beat_ms, seconds(60));
}

std::string Workload::cmdline() const {
  const auto n = [](uint64_t v) { return std::to_string(v); };
  if (guest == Guest::kLinux) {
    // keel-guest-init's jobs: the heartbeat alone, or with the dirtier
    // (for a day: the bench ends it).
    std::string line = "console=ttyS0 panic=-1 keel.interval_ms=" + n(beat_ms) + " keel.count=0";
    if (dirty_mib == 0) return line + " keel.job=heartbeat";
    return line + " keel.job=heartbeat+dirtier keel.mib=" + n(dirty_mib) +
           " keel.rate_mbps=" + n(dirty_rate) + " keel.seconds=86400";
  }
  const std::string beats = "interval_ms=" + n(beat_ms);
  if (udp_echo())
    return "job=net mode=echo ip=" + kGuestAddress + " port=" + n(kEchoPort) + " " + beats;
  if (dirty_mib == 0) return "job=heartbeat count=0 " + beats;
  return "job=dirtier mib=" + n(dirty_mib) + " rate_mbps=" + n(dirty_rate) + " seconds=86400 " +
         beats;
}

std::string Workload::beat_prefix() const {
  return guest == Guest::kLinux ? "keel-guest: beat " : "testos: beat ";
}

std::string Workload::ready_line() const {
  const std::string prefix = guest == Guest::kLinux ? "keel-guest: " : "testos: ";
  return prefix + (dirty_mib == 0 ? "beat seq=200 " : "dirtier pass=1 ");
}

std::chrono::seconds Workload::warm_up_limit() const {
  return guest == Guest::kLinux ? seconds(600) : seconds(120);
}

std::vector<std::string> Workload::keel_boot_args() const {
  if (guest == Guest::kLinux) {
    return {"--kernel", linux_images + "/vmlinuz-cloud", "--initrd",
            linux_images + "/initramfs-cloud.cpio.gz"};
  }
  return {"--kernel", testos_bzimage};
}

std::vector<std::string> Workload::qemu_boot_args() const {
  if (guest == Guest::kLinux) {
    return {"-kernel", linux_images + "/vmlinuz-cloud", "-initrd",
            linux_images + "/initramfs-cloud.cpio.gz"};
  }
  return {"-kernel", testos_elf};  // PVH
}

const char* peer_name(Peer peer) {
  switch (peer) {
    case Peer::kKeel:
      return "keel";
    case Peer::kQemuDefault:
      return "qemu-default";
    case Peer::kQemuTuned:
      return "qemu-tuned";
    case Peer::kKeelSwitchover:
      return "keel-switch";
    case Peer::kKeelFailover:
      return "keel-failover";
    case Peer::kKeelFrozen:
      return "keel-frozen";
    case Peer::kKeelOverhead:
      return "keel-overhead";
    case Peer::kKeelEcho:
      return "keel-ha-echo";
  }
  return "?";
}

void beat_figures(const std::vector<TimedLine>& source, const std::vector<TimedLine>& destination,
                  const std::string& beat_prefix, Clock::time_point from, Clock::time_point to,
                  RunFigures& f) {
  struct Beat {
    Clock::time_point at;
    uint64_t t_us;
    bool at_source;
  };
  std::map<uint64_t, Beat> beats;  // by sequence number, the first arrival
  for (const auto* lines : {&source, &destination}) {
    for (const auto& l : *lines) {
      if (l.text.rfind(beat_prefix, 0) != 0) continue;
      beats.emplace(field(l.text, "seq"), Beat{l.at, field(l.text, "t_us"), lines == &source});
    }
  }
  const Beat* previous = nullptr;
  const Beat* first = nullptr;
  const Beat* last = nullptr;
  for (const auto& [seq, beat] : beats) {
    if (beat.at < from) {
      previous = &beat;
      continue;
    }
    if (beat.at > to) break;
    if (!first) first = previous ? previous : &beat;
    if (previous) {
      f.outside_pause_ms = std::max(f.outside_pause_ms, ms(beat.at - previous->at));
      if (previous->at_source && !beat.at_source) f.handover_pause_ms = ms(beat.at - previous->at);
      f.guest_stall_ms =
          std::max(f.guest_stall_ms, static_cast<double>(beat.t_us - previous->t_us) / 1000.0);
    }
    previous = &beat;
    last = &beat;
  }
  bool arrived = false;
  for (const auto& [seq, beat] : beats) arrived = arrived || (!beat.at_source && beat.at >= from);
  // A guest that printed nothing where it went measures no pause: a
  // failed run, not a zero.
  if (!arrived) f.error = "no beat from the destination after the handover";
  if (first && last && last != first) {
    f.clock_offset_ms =
        static_cast<double>(last->t_us - first->t_us) / 1000.0 - ms(last->at - first->at);
  }
}

namespace {

// A line the guest was printing when it stopped on the source ends on the
// destination: the outside has it whole when its end arrives there (else a
// pause that splits a beat line would count one beat longer).
std::vector<TimedLine> destination_lines(const TimedConsole& source,
                                         const TimedConsole& destination) {
  std::vector<TimedLine> lines = destination.lines();
  const std::string head = source.unfinished();
  if (!head.empty() && !lines.empty()) lines.front().text = head + lines.front().text;
  return lines;
}

// The beat figures, and with --trace the lines around the pause.
void pause_figures(const Workload& w, Peer peer, int run, const TimedConsole& source,
                   const TimedConsole& destination, Clock::time_point begin,
                   Clock::time_point settled, RunFigures& f) {
  std::vector<TimedLine> arrived = destination_lines(source, destination);
  beat_figures(source.lines(), arrived, w.beat_prefix(), begin, settled, f);
  if (!w.trace) return;
  std::fprintf(stderr, "trace: %s run %d\n", peer_name(peer), run);
  print_pause_trace(
      stderr, {source.lines(), std::move(arrived), source.error_lines(), destination.error_lines()},
      w.beat_prefix(), begin, milliseconds(10));
}

}  // namespace

// For a run that failed early: how the process ended (if it did), its
// stderr and its last console lines.
std::string what_happened(TimedConsole& console) {
  std::string out;
  if (auto code = console.wait_exit(std::chrono::milliseconds(0)))
    out += "exited with status " + std::to_string(*code) + "; ";
  else
    out += "still running (now killed); ";
  out += "stderr: '" + console.errors() + "'; last lines:";
  const auto lines = console.lines();
  for (size_t i = lines.size() > 5 ? lines.size() - 5 : 0; i < lines.size(); ++i)
    out += " | " + lines[i].text;
  return out;
}

namespace {

// --net: watching the guest through UDP echoes once it answers (its ARP
// reply and the bridge's learning take the first few).
bool start_observer(std::optional<UdpEchoObserver>& observer, TimedConsole& source, RunFigures& f) {
  observer.emplace(kBridgeAddress, kGuestAddress, kEchoPort);
  if (observer->wait_answering(seconds(30))) return true;
  f.error = "the guest did not answer UDP echoes within 30 s: " + what_happened(source);
  return false;
}

}  // namespace

RunFigures run_keel(const Workload& w, int run) {
  RunFigures f;
  const std::string dir = scratch_dir(w, "keel-" + std::to_string(run));
  const std::string src_sock = dir + "/source.sock", dst_sock = dir + "/destination.sock";
  std::vector<std::string> source_args{w.keel_vmm};
  for (const auto& a : w.keel_boot_args()) source_args.push_back(a);
  source_args.insert(source_args.end(),
                     {"--memory", std::to_string(w.memory_mib) + "M", "--cpus",
                      std::to_string(w.cpus), "--cmdline", w.cmdline(), "--api-socket", src_sock});
  if (w.udp_echo())
    source_args.insert(source_args.end(), {"--net", "tap=" + kSourceTap + ",mac=" + kGuestMac});
  TimedConsole source(source_args);
  if (!source.wait_line(w.ready_line(), w.warm_up_limit())) {
    f.error = "the source guest did not warm up: " + what_happened(source);
    return f;
  }
  std::optional<UdpEchoObserver> observer;
  if (w.udp_echo() && !start_observer(observer, source, f)) return f;
  const std::string to = "tcp:127.0.0.1:" + std::to_string(free_port());
  std::vector<std::string> destination_args{w.keel_vmm, "--incoming", to, "--api-socket", dst_sock};
  if (w.udp_echo())
    destination_args.insert(destination_args.end(), {"--net", "tap=" + kDestinationTap});
  TimedConsole destination(destination_args);
  if (!destination.wait_error("waiting for a migration", seconds(60))) {
    f.error = "the destination did not start: " + destination.errors();
    return f;
  }
  pb::Request request;
  request.mutable_migrate()->set_to(to);
  request.mutable_migrate()->set_downtime_ms(w.downtime_ms);
  request.mutable_migrate()->set_bandwidth_mbps(w.bandwidth_mbps);
  ControlClient client(src_sock, seconds(10));
  const auto begin = Clock::now();
  const pb::Response response = client.call(request, seconds(3600));
  const auto end = Clock::now();
  if (!response.ok()) {
    f.error = "keel migration failed: " + response.error().message();
    return f;
  }
  settle(destination, w);
  const pb::MigrationInfo& info = response.migrate();
  f.vmm_pause_ms = static_cast<double>(info.downtime_us()) / 1000.0;
  f.total_ms = ms(end - begin);
  f.bytes = info.bytes_sent();
  f.rounds = info.rounds_total();
  for (const auto& r : info.rounds())
    f.throttle_percent = std::max(f.throttle_percent, r.throttle_percent());
  source.wait_exit(seconds(60));
  const auto settled = Clock::now();
  pause_figures(w, Peer::kKeel, run, source, destination, begin, settled, f);
  if (observer) f.network_pause_ms = longest_silence_ms(observer->answers(), begin, settled);
  pb::Request kill;
  kill.mutable_kill();
  try {
    ControlClient(dst_sock, seconds(10)).call(kill, seconds(10));
  } catch (const std::exception&) {
  }
  destination.wait_exit(seconds(60));
  f.ok = f.error.empty();
  return f;
}

RunFigures run_qemu(const Workload& w, bool tuned, int run) {
  RunFigures f;
  const std::string dir =
      scratch_dir(w, std::string(tuned ? "qemu-tuned-" : "qemu-") + std::to_string(run));
  auto qemu = [&](const std::string& qmp, bool incoming) {
    std::vector<std::string> argv{"qemu-system-x86_64",
                                  "-accel",
                                  "kvm",
                                  "-machine",
                                  "q35",
                                  "-cpu",
                                  "host",
                                  "-smp",
                                  std::to_string(w.cpus),
                                  "-m",
                                  std::to_string(w.memory_mib),
                                  "-nodefaults",
                                  "-no-user-config",
                                  "-display",
                                  "none",
                                  "-serial",
                                  "stdio",
                                  "-no-reboot",
                                  "-append",
                                  w.cmdline(),
                                  "-qmp",
                                  "unix:" + qmp + ",server=on,wait=off"};
    for (const auto& a : w.qemu_boot_args()) argv.push_back(a);
    if (incoming) argv.insert(argv.end(), {"-incoming", "defer"});
    if (w.udp_echo()) {
      const std::string& tap = incoming ? kDestinationTap : kSourceTap;
      argv.insert(argv.end(),
                  {"-netdev", "tap,id=n0,ifname=" + tap + ",script=no,downscript=no", "-device",
                   "virtio-net-pci,netdev=n0,disable-legacy=on,mac=" + kGuestMac});
    }
    return argv;
  };
  TimedConsole source(qemu(dir + "/source.qmp", false));
  if (!source.wait_line(w.ready_line(), w.warm_up_limit())) {
    f.error = "the QEMU source guest did not warm up: " + what_happened(source);
    return f;
  }
  std::optional<UdpEchoObserver> observer;
  if (w.udp_echo() && !start_observer(observer, source, f)) return f;
  TimedConsole destination(qemu(dir + "/destination.qmp", true));
  const std::string to = "tcp:127.0.0.1:" + std::to_string(free_port());
  try {
    QmpClient src(dir + "/source.qmp", seconds(60));
    QmpClient dst(dir + "/destination.qmp", seconds(60));
    // A capped link is the environment, not a tuning: both QEMU runs get it.
    if (w.bandwidth_mbps) {
      src.execute("migrate-set-parameters",
                  "{\"max-bandwidth\":" + std::to_string(w.bandwidth_mbps * 1000000) + "}");
    }
    if (tuned) {
      for (QmpClient* q : {&src, &dst}) {
        q->execute("migrate-set-capabilities",
                   R"({"capabilities":[{"capability":"multifd","state":true}]})");
        q->execute("migrate-set-parameters", R"({"multifd-channels":4})");
      }
      src.execute("migrate-set-parameters",
                  "{\"downtime-limit\":" + std::to_string(w.downtime_ms) + "}");
    }
    dst.execute("migrate-incoming", "{\"uri\":\"" + to + "\"}");
    const auto begin = Clock::now();
    src.execute("migrate", "{\"uri\":\"" + to + "\"}");
    google::protobuf::Struct info;
    for (;;) {
      info = src.execute("query-migrate");
      const std::string status = text_field(info, "status");
      if (status == "completed") break;
      if (status == "failed" || status == "cancelled")
        throw std::runtime_error("QEMU migration " + status + ": " +
                                 text_field(info, "error-desc"));
      std::this_thread::sleep_for(milliseconds(5));  // QEMU's own progress: polled
    }
    const auto end = Clock::now();
    settle(destination, w);
    f.vmm_pause_ms = number_field(info, "downtime");
    f.total_ms = ms(end - begin);
    if (auto ram = info.fields().find("ram"); ram != info.fields().end()) {
      f.bytes = static_cast<uint64_t>(number_field(ram->second.struct_value(), "transferred"));
      f.rounds =
          static_cast<uint32_t>(number_field(ram->second.struct_value(), "dirty-sync-count"));
    }
    f.throttle_percent = static_cast<uint32_t>(number_field(info, "cpu-throttle-percentage"));
    const auto settled = Clock::now();
    pause_figures(w, tuned ? Peer::kQemuTuned : Peer::kQemuDefault, run, source, destination, begin,
                  settled, f);
    if (observer) f.network_pause_ms = longest_silence_ms(observer->answers(), begin, settled);
    for (QmpClient* q : {&src, &dst}) {
      try {
        q->execute("quit");
      } catch (const std::exception&) {
        // QEMU closes the socket as it quits.
      }
    }
  } catch (const std::exception& e) {
    f.error = e.what();
    return f;
  }
  source.wait_exit(seconds(60));
  destination.wait_exit(seconds(60));
  f.ok = f.error.empty();
  return f;
}

}  // namespace keel::migbench
