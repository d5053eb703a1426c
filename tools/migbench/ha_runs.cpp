#include "tools/migbench/ha_runs.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <functional>
#include <optional>
#include <stdexcept>
#include <thread>

#include "common/unique_fd.h"
#include "control/control_client.h"
#include "tools/migbench/bench_network.h"
#include "tools/migbench/pause_trace.h"

namespace keel::migbench {

namespace pb = ::keel::api::v1;
using std::chrono::seconds;

namespace {

// Protected this long before the fault: epochs under way, as in service.
constexpr auto kProtected = std::chrono::milliseconds(2000);

struct Pair {
  std::string active_sock, passive_sock;
  std::optional<TimedConsole> active, passive;
};

pb::Response call(const std::string& socket, pb::Request request, std::chrono::seconds wait) {
  return ControlClient(socket, seconds(10)).call(request, wait);
}

// A run's guest beyond the workload's: its command line instead, and
// more arguments for each keel-vmm.
struct GuestExtras {
  std::string cmdline;  // empty: the workload's
  std::vector<std::string> active, passive;
};

// --net: the active on one tap of the bridge, the passive on the other
// (the copy announces the MAC when it takes over).
GuestExtras network_cards() {
  return {{},
          {"--net", "tap=" + kSourceTap + ",mac=" + kGuestMac},
          {"--net", "tap=" + kDestinationTap}};
}

// The guest warmed up on the active (`warmed` runs then), a passive
// waiting, the replication protecting it (for kProtected when `stay`); an
// error message, or empty.
std::string replicate(const Workload& w, int run, const char* kind, Pair& p, RunFigures& f,
                      const std::function<void()>& warmed = {}, bool stay = true,
                      GuestExtras extras = {}) {
  const std::string dir = scratch_dir(w, std::string(kind) + "-" + std::to_string(run));
  p.active_sock = dir + "/active.sock";
  p.passive_sock = dir + "/passive.sock";
  if (w.udp_echo()) extras = network_cards();
  std::vector<std::string> args{w.keel_vmm};
  for (const auto& a : w.keel_boot_args()) args.push_back(a);
  args.insert(args.end(),
              {"--memory", std::to_string(w.memory_mib) + "M", "--cpus", std::to_string(w.cpus),
               "--cmdline", extras.cmdline.empty() ? w.cmdline() : extras.cmdline, "--api-socket",
               p.active_sock});
  args.insert(args.end(), extras.active.begin(), extras.active.end());
  p.active.emplace(args);
  if (!p.active->wait_line(w.ready_line(), w.warm_up_limit()))
    return "the guest did not warm up: " + what_happened(*p.active);
  if (warmed) {
    try {
      warmed();
    } catch (const std::exception& e) {
      return std::string(e.what()) + " (alone); the active " + what_happened(*p.active);
    }
  }
  const std::string to = "tcp:127.0.0.1:" + std::to_string(free_port());
  std::vector<std::string> passive{w.keel_vmm, "--replica-of", to, "--api-socket", p.passive_sock};
  passive.insert(passive.end(), extras.passive.begin(), extras.passive.end());
  p.passive.emplace(passive);
  if (!p.passive->wait_error("waiting for a replica stream", seconds(60)))
    return "the passive did not start: " + p.passive->errors();
  pb::Request replicate;
  replicate.mutable_replicate()->set_to(to);
  pb::Response started;
  try {
    started = call(p.active_sock, replicate, seconds(3600));
  } catch (const std::exception& e) {
    return std::string("replicate: ") + e.what() + "; the active " + what_happened(*p.active) +
           "; the passive " + what_happened(*p.passive);
  }
  if (!started.ok()) return "replicate failed: " + started.error().message();
  if (!stay) return "";
  // Waiting out the protected stretch is the point of the run here.
  std::this_thread::sleep_for(kProtected);
  pb::Request status;
  status.mutable_replica_status();
  const pb::Response now = call(p.active_sock, status, seconds(10));
  if (now.replica_status().phase() != pb::REPLICA_PHASE_PROTECTED)
    return "not protected after " + std::to_string(kProtected.count()) +
           " ms: " + now.replica_status().error();
  f.bytes = now.replica_status().bytes_sent();
  f.rounds = static_cast<uint32_t>(now.replica_status().epoch());
  return "";
}

// The dirtier's rate in MB/s over at least kWindow of whole passes, from
// the next pass line at or after index `from`; 0 when none came.
double dirty_rate(TimedConsole& console, size_t from) {
  constexpr auto kWindow = std::chrono::seconds(4);
  const std::string pass = "testos: dirtier pass=";
  if (!console.wait_line(pass, seconds(120), from)) return 0;
  auto lines = console.lines();
  size_t start = from;
  while (lines[start].text.rfind(pass, 0) != 0) ++start;
  const Clock::time_point t0 = lines[start].at;
  uint64_t mib = 0;
  for (size_t i = start + 1;; ++i) {
    if (i >= lines.size()) {
      if (!console.wait_line(pass, seconds(120), i)) return 0;
      lines = console.lines();
    }
    if (lines[i].text.rfind(pass, 0) != 0) continue;
    mib += field(lines[i].text, "mib");
    if (lines[i].at - t0 >= kWindow)
      return static_cast<double>(mib) * 1048576.0 / 1e6 / (ms(lines[i].at - t0) / 1000.0);
  }
}

struct EchoFigures {
  double per_second = 0, median_ms = 0;
};

// UDP echo requests to the guest one at a time for `how_long`, each
// waited for (up to 1 s) before the next: how many came back per second,
// and the median round trip. Every frame the guest sends while protected
// waits for its epoch's acknowledgement (output commit), so the round
// trip grows by about half an epoch plus the acknowledgement's time.
EchoFigures ping_pong(std::chrono::milliseconds how_long) {
  UniqueFd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!s.valid()) throw std::runtime_error(std::string("echo socket: ") + std::strerror(errno));
  sockaddr_in from{}, to{};
  from.sin_family = to.sin_family = AF_INET;
  to.sin_port = htons(static_cast<uint16_t>(kEchoPort));
  ::inet_pton(AF_INET, kBridgeAddress.c_str(), &from.sin_addr);
  ::inet_pton(AF_INET, kGuestAddress.c_str(), &to.sin_addr);
  if (::bind(s.get(), reinterpret_cast<const sockaddr*>(&from), sizeof from) != 0 ||
      ::connect(s.get(), reinterpret_cast<const sockaddr*>(&to), sizeof to) != 0) {
    throw std::runtime_error(std::string("echo socket: ") + std::strerror(errno));
  }
  std::vector<double> rtts;
  const auto begin = Clock::now(), end = begin + how_long;
  for (uint64_t seq = 1; Clock::now() < end; ++seq) {
    const auto sent = Clock::now();
    if (::send(s.get(), &seq, sizeof seq, 0) != sizeof seq) {
      // No route yet (ARP): as a lost request, a moment later.
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      continue;
    }
    const auto give_up = sent + std::chrono::seconds(1);
    while (Clock::now() < give_up) {
      pollfd p{s.get(), POLLIN, 0};
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(give_up - Clock::now());
      if (::poll(&p, 1, static_cast<int>(std::max<int64_t>(0, left.count())) + 1) <= 0) continue;
      uint64_t back = 0;
      if (::recv(s.get(), &back, sizeof back, MSG_DONTWAIT) != sizeof back) continue;
      if (back != seq) continue;  // a late answer to an earlier request
      rtts.push_back(ms(Clock::now() - sent));
      break;
    }
  }
  EchoFigures out;
  out.per_second = static_cast<double>(rtts.size()) / (ms(Clock::now() - begin) / 1000.0);
  if (!rtts.empty()) {
    std::sort(rtts.begin(), rtts.end());
    out.median_ms = rtts[rtts.size() / 2];
  }
  return out;
}

// keel-ledger's port in the Linux guest (--ha --net), and the size of the
// disk it writes its records to (16 MiB: 32768 records round and round).
constexpr unsigned kLedgerPort = 7070;
constexpr off_t kLedgerDiskBytes = 16 << 20;

// A TCP connection to the Linux guest's keel-ledger, within `limit` (the
// guest's address answers once its card is up).
UniqueFd connect_ledger(std::chrono::seconds limit) {
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(static_cast<uint16_t>(kLedgerPort));
  ::inet_pton(AF_INET, kGuestAddress.c_str(), &to.sin_addr);
  const auto give_up = Clock::now() + limit;
  for (;;) {
    UniqueFd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!s.valid()) throw std::runtime_error(std::string("ledger socket: ") + std::strerror(errno));
    // A guest that answers ARP but drops the SYN: each try gives up soon.
    const timeval try_for{2, 0};
    ::setsockopt(s.get(), SOL_SOCKET, SO_SNDTIMEO, &try_for, sizeof try_for);
    if (::connect(s.get(), reinterpret_cast<const sockaddr*>(&to), sizeof to) == 0) {
      // The requests are single lines, each sent only once the last was
      // answered: nothing for Nagle to gather.
      int one = 1;
      ::setsockopt(s.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      return s;
    }
    if (Clock::now() > give_up) {
      throw std::runtime_error("no connection to the guest's keel-ledger at " + kGuestAddress +
                               ":" + std::to_string(kLedgerPort) + ": " + std::strerror(errno));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

// keel-ledger's requests one at a time for `how_long` on connection `fd`:
// "rec N", answered "ack N boot=B" only once record N is written and
// flushed to the guest's disk. Throws when an answer does not come within
// 5 s, is not the one asked for, or comes from another boot than `boot`
// (set by the first answer).
EchoFigures ledger_requests(int fd, uint64_t& next, std::string& boot,
                            std::chrono::milliseconds how_long) {
  std::vector<double> rtts;
  std::string have;
  const auto begin = Clock::now(), end = begin + how_long;
  while (Clock::now() < end) {
    const uint64_t seq = next++;
    const std::string request = "rec " + std::to_string(seq) + "\n";
    const auto sent = Clock::now();
    if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) !=
        static_cast<ssize_t>(request.size())) {
      throw std::runtime_error(std::string("ledger: sending rec ") + std::to_string(seq) + ": " +
                               std::strerror(errno));
    }
    const auto give_up = sent + std::chrono::seconds(5);
    size_t newline;
    while ((newline = have.find('\n')) == std::string::npos) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(give_up - Clock::now());
      pollfd p{fd, POLLIN, 0};
      if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count()) + 1) <= 0)
        throw std::runtime_error("ledger: no answer to rec " + std::to_string(seq) + " within 5 s");
      char buf[256];
      const ssize_t got = ::recv(fd, buf, sizeof buf, 0);
      if (got <= 0) {
        throw std::runtime_error("ledger: the connection ended awaiting rec " +
                                 std::to_string(seq) +
                                 (got < 0 ? ": " + std::string(std::strerror(errno)) : ""));
      }
      have.append(buf, static_cast<size_t>(got));
    }
    rtts.push_back(ms(Clock::now() - sent));
    const std::string answer = have.substr(0, newline);
    have.erase(0, newline + 1);
    const std::string want = "ack " + std::to_string(seq) + " boot=";
    if (answer.rfind(want, 0) != 0)
      throw std::runtime_error("ledger: asked rec " + std::to_string(seq) + ", got '" + answer +
                               "'");
    if (boot.empty()) boot = answer.substr(want.size());
    if (answer.substr(want.size()) != boot)
      throw std::runtime_error("ledger: the guest rebooted (" + answer + ", was boot=" + boot +
                               ")");
  }
  EchoFigures out;
  out.per_second = static_cast<double>(rtts.size()) / (ms(Clock::now() - begin) / 1000.0);
  std::sort(rtts.begin(), rtts.end());
  if (!rtts.empty()) out.median_ms = rtts[rtts.size() / 2];
  return out;
}

// The VMM at `socket` told to kill its guest (gone already: fine), and
// waited for.
void kill_vmm(const std::string& socket, TimedConsole& vmm) {
  pb::Request kill;
  kill.mutable_kill();
  try {
    call(socket, kill, seconds(10));
  } catch (const std::exception&) {
  }
  vmm.wait_exit(seconds(60));
}

// The replication ended on purpose (the passive drops its copy), then
// the active's guest killed.
void end_replication(Pair& p) {
  pb::Request stop;
  stop.mutable_replica_stop();
  call(p.active_sock, stop, seconds(10));
  p.passive->wait_exit(seconds(60));
  kill_vmm(p.active_sock, *p.active);
}

void end_passive(Pair& p) {
  kill_vmm(p.passive_sock, *p.passive);
}

}  // namespace

RunFigures run_keel_switchover(const Workload& w, int run) {
  RunFigures f;
  Pair p;
  if (std::string why = replicate(w, run, "switchover", p, f); !why.empty()) {
    f.error = why;
    return f;
  }
  pb::Request switchover;
  switchover.mutable_switchover();
  const auto begin = Clock::now();
  pb::Response done;
  try {
    done = call(p.active_sock, switchover, seconds(600));
  } catch (const std::exception& e) {
    f.error = std::string(e.what()) + "; the active " + what_happened(*p.active) +
              "; the passive " + what_happened(*p.passive);
    return f;
  }
  const auto end = Clock::now();
  if (!done.ok()) {
    f.error = "switchover failed: " + done.error().message() + "; the passive " +
              what_happened(*p.passive);
    return f;
  }
  settle(*p.passive, w);
  f.vmm_pause_ms = static_cast<double>(done.switchover().switchover_pause_us()) / 1000.0;
  f.total_ms = ms(end - begin);
  f.bytes = done.switchover().bytes_sent();
  f.rounds = static_cast<uint32_t>(done.switchover().epoch());
  f.throttle_percent = done.switchover().throttle_percent();
  p.active->wait_exit(seconds(60));
  const auto settled = Clock::now();
  std::vector<TimedLine> arrived = p.passive->lines();
  const std::string head = p.active->unfinished();
  if (!head.empty() && !arrived.empty()) arrived.front().text = head + arrived.front().text;
  beat_figures(p.active->lines(), arrived, w.beat_prefix(), begin, settled, f);
  if (w.trace) {
    std::fprintf(stderr, "trace: keel-switch run %d\n", run);
    print_pause_trace(
        stderr,
        {p.active->lines(), std::move(arrived), p.active->error_lines(), p.passive->error_lines()},
        w.beat_prefix(), begin, std::chrono::milliseconds(10));
  }
  end_passive(p);
  f.ok = f.error.empty();
  return f;
}

RunFigures run_keel_failover(const Workload& w, int run, bool frozen) {
  RunFigures f;
  Pair p;
  if (std::string why = replicate(w, run, frozen ? "frozen" : "failover", p, f); !why.empty()) {
    f.error = why;
    return f;
  }
  const auto fault = Clock::now();
  if (frozen) {
    // A dead or cut-off host, as its passive sees it: not a word more, and
    // no socket closed. The passive's stream ends once the silence passed
    // the active's run permit and its margin: the detection.
    p.active->signal(SIGSTOP);
    pb::Request status;
    status.mutable_replica_status();
    for (;;) {
      const pb::ReplicaInfo info = call(p.passive_sock, status, seconds(10)).replica_status();
      if (info.phase() == pb::REPLICA_PHASE_FAILED) break;
      if (Clock::now() - fault > seconds(60)) {
        f.error = "the passive's stream did not end within 60 s of the active's silence";
        p.active->wait_exit(std::chrono::milliseconds(0));
        return f;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));  // a look every 5 ms
    }
    f.detect_ms = ms(Clock::now() - fault);
  }
  p.active->wait_exit(std::chrono::milliseconds(0));  // SIGKILL: no word to anyone
  pb::Request takeover;
  takeover.mutable_takeover();
  const auto asked = Clock::now();
  const pb::Response took = call(p.passive_sock, takeover, seconds(60));
  const auto answered = Clock::now();
  if (!took.ok()) {
    f.error = "takeover failed: " + took.error().message();
    return f;
  }
  const size_t before = 0;
  if (!p.passive->wait_line(w.beat_prefix(), seconds(60), before)) {
    f.error = "no beat from the passive after the takeover: " + what_happened(*p.passive);
    return f;
  }
  settle(*p.passive, w);
  const std::vector<TimedLine> active = p.active->lines();
  const std::vector<TimedLine> passive = p.passive->lines();
  const TimedLine* last = nullptr;
  for (const auto& l : active)
    if (l.text.rfind(w.beat_prefix(), 0) == 0 && l.text.find(" t_us=") != std::string::npos)
      last = &l;
  const TimedLine* first = nullptr;
  for (const auto& l : passive) {
    if (l.text.rfind(w.beat_prefix(), 0) == 0) {
      first = &l;
      break;
    }
  }
  if (!last || !first) {
    f.error = "no beats to measure";
    return f;
  }
  f.total_ms = ms(first->at - fault);
  f.outside_pause_ms = ms(first->at - last->at);
  f.vmm_pause_ms = ms(answered - asked);
  const uint64_t last_seq = field(last->text, "seq");
  const uint64_t first_seq = field(first->text, "seq");
  // The guest went back to its last acknowledged epoch: beats printed
  // again, in milliseconds of its progress.
  f.guest_stall_ms =
      last_seq >= first_seq ? static_cast<double>((last_seq - first_seq + 1) * w.beat_ms) : 0.0;
  end_passive(p);
  f.ok = true;
  return f;
}

RunFigures run_keel_overhead(const Workload& w, int run) {
  RunFigures f;
  if (w.dirty_mib == 0) {
    f.error = "the overhead run needs the dirtier (--dirty-mib)";
    return f;
  }
  Pair p;
  const std::string why = replicate(
      w, run, "overhead", p, f,
      [&] { f.rate_alone_mbs = dirty_rate(*p.active, p.active->lines().size()); }, false);
  if (!why.empty()) {
    f.error = why;
    return f;
  }
  const size_t from = p.active->lines().size();
  pb::Request status;
  status.mutable_replica_status();
  const pb::ReplicaInfo before = call(p.active_sock, status, seconds(10)).replica_status();
  const auto begin = Clock::now();
  f.rate_replicated_mbs = dirty_rate(*p.active, from);
  const pb::ReplicaInfo after = call(p.active_sock, status, seconds(10)).replica_status();
  const double seconds_run = ms(Clock::now() - begin) / 1000.0;
  if (after.phase() != pb::REPLICA_PHASE_PROTECTED) {
    f.error = "the replication ended: " + after.error();
    return f;
  }
  f.paused_percent = after.paused_percent();
  f.replication_mbs =
      static_cast<double>(after.bytes_sent() - before.bytes_sent()) / 1e6 / seconds_run;
  f.rounds = static_cast<uint32_t>(after.epoch());
  f.bytes = after.bytes_sent();
  f.vmm_pause_ms = static_cast<double>(after.max_pause_us()) / 1000.0;
  f.total_ms = static_cast<double>(after.epoch_target_ms());
  end_replication(p);
  f.ok = f.rate_alone_mbs > 0 && f.rate_replicated_mbs > 0;
  if (!f.ok) f.error = "no dirtier passes to measure";
  return f;
}

RunFigures run_keel_echo(const Workload& w, int run) {
  constexpr auto kEach = std::chrono::milliseconds(3000);
  RunFigures f;
  if (!w.net) {
    f.error = "the echo run needs the network (--net)";
    return f;
  }
  Pair p;
  EchoFigures alone, protected_;
  std::string why;
  if (w.guest == Guest::kLinux) {
    // keel-ledger on one connection, before the replication and while
    // protected; the active's disk replicated into the passive's image.
    const std::string disks = scratch_dir(w, "tcp-disks-" + std::to_string(run));
    for (const char* name : {"/active.img", "/passive.img"}) {
      UniqueFd image(::open((disks + name).c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
      if (!image.valid() || ::ftruncate(image.get(), kLedgerDiskBytes) != 0)
        throw std::runtime_error(disks + name + ": " + std::strerror(errno));
    }
    GuestExtras extras = network_cards();
    extras.cmdline = "console=ttyS0 panic=-1 keel.interval_ms=" + std::to_string(w.beat_ms) +
                     " keel.count=0 keel.job=heartbeat+ledger keel.ip=" + kGuestAddress +
                     "/24 keel.net_port=" + std::to_string(kLedgerPort);
    extras.active.insert(extras.active.end(), {"--disk", "path=" + disks + "/active.img"});
    extras.passive.insert(extras.passive.end(), {"--disk", "path=" + disks + "/passive.img"});
    UniqueFd ledger;
    uint64_t next = 1;
    std::string boot;
    why = replicate(
        w, run, "echo", p, f,
        [&] {
          if (!p.active->wait_line("keel-guest: ledger listening ", seconds(60)))
            throw std::runtime_error("keel-ledger did not start: " + what_happened(*p.active));
          ledger = connect_ledger(seconds(30));
          alone = ledger_requests(ledger.get(), next, boot, kEach);
        },
        true, extras);
    if (why.empty()) {
      try {
        protected_ = ledger_requests(ledger.get(), next, boot, kEach);
      } catch (const std::exception& e) {
        why = std::string(e.what()) + " (protected); the active " + what_happened(*p.active) +
              "; the passive " + what_happened(*p.passive);
      }
    }
  } else {
    why = replicate(w, run, "echo", p, f, [&] { alone = ping_pong(kEach); });
    if (why.empty()) protected_ = ping_pong(kEach);
  }
  if (!why.empty()) {
    f.error = why;
    return f;
  }
  pb::Request status;
  status.mutable_replica_status();
  const pb::ReplicaInfo info = call(p.active_sock, status, seconds(10)).replica_status();
  f.echo_alone_rps = alone.per_second;
  f.echo_alone_ms = alone.median_ms;
  f.echo_protected_rps = protected_.per_second;
  f.echo_protected_ms = protected_.median_ms;
  f.total_ms = static_cast<double>(info.last_epoch_us()) / 1000.0;
  f.paused_percent = info.paused_percent();
  f.rounds = static_cast<uint32_t>(info.epoch());
  end_replication(p);
  f.ok = info.phase() == pb::REPLICA_PHASE_PROTECTED && alone.per_second > 0 &&
         protected_.per_second > 0;
  if (!f.ok) {
    f.error = info.phase() != pb::REPLICA_PHASE_PROTECTED ? "the replication ended: " + info.error()
                                                          : "the guest did not answer the echo";
  }
  return f;
}

}  // namespace keel::migbench
