// One migration run of the benchmark's guest, by Keel or by QEMU, and the
// figures it gives: the pause seen from outside (the longest stretch
// without a heartbeat line by the harness's clock; with a network, also
// without an answer to a UDP echo sent every millisecond), the pause the VMMs
// count, the guest's own view (its longest clock stall, its clock's offset
// from the harness's over the run), total time, bytes, rounds, throttling.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "tools/migbench/timed_console.h"

namespace keel::migbench {

enum class Guest { kTestos, kLinux };

struct Workload {
  // testos: the test guest (PVH or bzImage, a heartbeat job); linux:
  // Debian's cloud kernel with the Linux guest image's initramfs
  // (keel-guest-init's heartbeat and dirtier jobs).
  Guest guest = Guest::kTestos;
  uint64_t memory_mib = 1024;
  uint32_t cpus = 1;
  uint64_t dirty_mib = 0;   // 0: an idle guest (heartbeat only)
  uint64_t dirty_rate = 0;  // MB/s; 0: as fast as the guest can
  uint32_t downtime_ms = 5;
  uint64_t bandwidth_mbps = 0;  // the link's cap in MB/s for every peer; 0: none
  uint32_t beat_ms = 1;
  // --net: the benchmark's bridge. The idle test guest echoes UDP on a
  // virtio-net card in every run (the source on one tap of the bridge, the
  // destination on the other) and a UdpEchoObserver watches through the
  // network too; the Linux guest has a card only in --ha's TCP run.
  bool net = false;
  bool udp_echo() const { return net && guest == Guest::kTestos; }
  // --trace: each run's pause printed line by line (print_pause_trace).
  bool trace = false;
  std::string keel_vmm, testos_bzimage, testos_elf, linux_images, scratch;
  // The guest's command line: heartbeat, or the dirtier with beats.
  std::string cmdline() const;
  // The line that says the guest is warmed up (memory written once), and
  // how long it may take: the test guest's comes within seconds, also in
  // the KVM test host (one that hangs there is given up on sooner); the
  // stock kernel boots first.
  std::string ready_line() const;
  std::chrono::seconds warm_up_limit() const;
  // What every heartbeat line starts with.
  std::string beat_prefix() const;
  // The guest's files as VMM arguments: Keel's and QEMU's.
  std::vector<std::string> keel_boot_args() const;
  std::vector<std::string> qemu_boot_args() const;
};

// kKeelSwitchover, kKeelFailover: keel-migbench --ha (ha_runs.h).
enum class Peer {
  kKeel,
  kQemuDefault,
  kQemuTuned,
  kKeelSwitchover,
  kKeelFailover,
  kKeelFrozen,
  kKeelOverhead,
  kKeelEcho
};
const char* peer_name(Peer peer);

struct RunFigures {
  bool ok = false;
  std::string error;
  double outside_pause_ms = 0;
  // The stretch between the last beat the source printed and the first the
  // destination did: the handover alone (outside_pause_ms is the longest
  // stretch of the whole run, which for a switchover includes the pauses
  // of its epochs before the handover).
  double handover_pause_ms = 0;
  double network_pause_ms = 0;  // --net: the longest stretch without a UDP echo answer
  double vmm_pause_ms = 0;
  double guest_stall_ms = 0;
  double clock_offset_ms = 0;
  double total_ms = 0;
  // --ha's frozen-active failover: from the fault to the passive's stream
  // ending by the active's silence (the detection).
  double detect_ms = 0;
  uint64_t bytes = 0;
  uint32_t rounds = 0;
  uint32_t throttle_percent = 0;
  // --ha's overhead run: the dirtier's rate alone and while replicated
  // (MB/s), the share of time the checkpoints paused it, the replication's
  // bandwidth (MB/s).
  double rate_alone_mbs = 0, rate_replicated_mbs = 0, paused_percent = 0, replication_mbs = 0;
  // --ha --net's echo run: requests one at a time (the test guest: UDP
  // echo; the Linux guest: keel-ledger over TCP), answers per second and
  // the median round trip (ms), unprotected and then protected.
  double echo_alone_rps = 0, echo_alone_ms = 0, echo_protected_rps = 0, echo_protected_ms = 0;
};

// The outside and guest figures from the beats both consoles received,
// for the migration that ran from `from` to `to` (harness clock); an
// error when the destination printed no beat.
void beat_figures(const std::vector<TimedLine>& source, const std::vector<TimedLine>& destination,
                  const std::string& beat_prefix, Clock::time_point from, Clock::time_point to,
                  RunFigures& figures);

RunFigures run_keel(const Workload& workload, int run);
RunFigures run_qemu(const Workload& workload, bool tuned, int run);

// Shared by the runs (and ha_runs.cpp).
uint16_t free_port();
double ms(Clock::duration d);
uint64_t field(const std::string& line, const std::string& key);
// A fresh directory `name` under the workload's scratch directory.
std::string scratch_dir(const Workload& w, const std::string& name);
// The destination shows beats again for a while after the move.
void settle(TimedConsole& destination, const Workload& w);
// For a run that failed early: how the process ended, its stderr and last lines.
std::string what_happened(TimedConsole& console);

}  // namespace keel::migbench
