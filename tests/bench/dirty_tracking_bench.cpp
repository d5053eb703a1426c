// Benchmark (a program, not a test): KVM's two ways of telling a migration
// which pages a guest wrote, side by side on this host's /dev/kvm. The dirty
// bitmap with manual protect (kvm::DirtyLog: KVM_GET_DIRTY_LOG, then
// KVM_CLEAR_DIRTY_LOG re-protects what it reported) and the dirty ring
// (kvm::DirtyRing: the vCPU appends each page it dirties; collect, then
// KVM_RESET_DIRTY_RINGS re-protects; a full ring stops the vCPU until
// collected). A loop guest writes --dirty-mib of its --memory-mib page after
// page, pass after pass; after each pass the bench harvests. Per mode, the
// medians over --rounds: the harvest's time, the pages it held, the guest's
// write rate (pages per second, and against the same guest untracked), and
// the ring-full exits per pass.
//
//   dirty_tracking_bench [--memory-mib N] [--dirty-mib N] [--rounds N] [--ring-kib N]
//
// Run it through tools/kvm-run --need kvm so that it says where it ran.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "tests/support/loop_guest.h"
#include "vmm/kvm/dirty_log.h"
#include "vmm/kvm/dirty_ring.h"

namespace {

using Clock = std::chrono::steady_clock;
using keel::testing::LoopGuest;
using keel::testing::LoopGuestShape;
using keel::testing::RunningGuest;

constexpr uint64_t kPage = 4096;
constexpr uint64_t kFirst = 2 << 20;  // above the code and page tables

struct Options {
  uint64_t memory_mib = 1024;
  uint64_t dirty_mib = 128;
  unsigned rounds = 20;
  uint32_t ring_kib = 0;  // 0: the largest KVM allows
};

struct Figures {
  std::string mode;
  double harvest_us = 0, pages = 0, guest_pages_s = 0, ring_full_per_pass = 0;
};

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

double us(Clock::duration d) {
  return std::chrono::duration<double, std::micro>(d).count();
}

LoopGuestShape shape(const Options& o, uint32_t ring_bytes) {
  return {{{0, o.memory_mib << 20, 0}}, kFirst, (o.dirty_mib << 20) / kPage, kPage, ring_bytes};
}

void wait_pass(RunningGuest& guest, uint64_t from) {
  if (!guest.wait_passes(from, 1)) {
    const std::string error = guest.error();
    throw std::runtime_error((error.empty() ? "the guest finished no pass within 120 s"
                                            : "the guest stopped: " + error) +
                             " (" + std::to_string(guest.passes()) + " passes, " +
                             std::to_string(guest.ring_full_exits()) + " ring-full exits)");
  }
}

// One pass untracked first (the pages mapped), then `rounds` passes, each
// followed by `harvest` (returns the pages it held; empty for untracked).
template <typename Harvest>
Figures measure(const std::string& mode, const Options& o, RunningGuest& guest, Harvest harvest) {
  Figures f{mode};
  std::vector<double> harvest_us, pages, rates;
  wait_pass(guest, 0);
  harvest();  // the first pass faulted every page in: not a round
  for (unsigned r = 0; r < o.rounds; ++r) {
    const uint64_t from = guest.passes();
    const auto begin = Clock::now();
    wait_pass(guest, from);
    const auto written = Clock::now();
    const uint64_t got = harvest();
    const auto end = Clock::now();
    harvest_us.push_back(us(end - written));
    pages.push_back(static_cast<double>(got));
    const double passes = static_cast<double>(guest.passes() - from);
    rates.push_back(passes * static_cast<double>((o.dirty_mib << 20) / kPage) /
                    (us(written - begin) / 1e6));
  }
  const uint64_t full = guest.ring_full_exits();
  const uint64_t passes = guest.passes();
  const std::string error = guest.stop();
  if (!error.empty()) throw std::runtime_error(mode + ": " + error);
  f.harvest_us = median(harvest_us);
  f.pages = median(pages);
  f.guest_pages_s = median(rates);
  f.ring_full_per_pass = passes ? static_cast<double>(full) / static_cast<double>(passes) : 0;
  return f;
}

Figures untracked(const Options& o) {
  LoopGuest g(shape(o, 0));
  RunningGuest guest(*g.vcpu);
  return measure("untracked", o, guest, [] { return uint64_t{0}; });
}

Figures bitmap(const Options& o) {
  LoopGuest g(shape(o, 0));
  keel::kvm::DirtyLog log(g.vm, g.memory);
  RunningGuest guest(*g.vcpu);
  return measure("bitmap", o, guest, [&] { return keel::kvm::DirtyLog::count(log.harvest()); });
}

Figures ring(const Options& o, uint32_t ring_bytes) {
  LoopGuest g(shape(o, ring_bytes));
  for (size_t i = 0; i < g.memory.regions().size(); ++i)
    g.vm.set_dirty_logging(static_cast<uint32_t>(i), true);
  keel::kvm::DirtyRing ring(g.vm, *g.vcpu);
  // Collected pages into a bitmap, as a migration would merge them; the
  // vCPU thread collects too when its ring is full.
  std::mutex mutex;
  std::vector<uint64_t> bits(((o.memory_mib << 20) / kPage + 63) / 64);
  auto collect = [&] {
    std::lock_guard lock(mutex);
    ring.collect([&](uint32_t, uint64_t page) {
      if (page / 64 < bits.size()) bits[page / 64] |= uint64_t{1} << (page % 64);
    });
    g.vm.reset_dirty_rings();
  };
  RunningGuest guest(*g.vcpu, collect);
  return measure("ring", o, guest, [&] {
    collect();
    std::lock_guard lock(mutex);
    const uint64_t n = keel::kvm::DirtyLog::count(bits);
    std::fill(bits.begin(), bits.end(), 0);
    return n;
  });
}

uint64_t number(const char* flag, const char* value) {
  char* end = nullptr;
  const unsigned long long v = value ? std::strtoull(value, &end, 10) : 0;
  if (!value || *end || v == 0) {
    std::fprintf(stderr, "dirty_tracking_bench: %s needs a positive number\n", flag);
    std::exit(2);
  }
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const char* v = i + 1 < argc ? argv[i + 1] : nullptr;
    if (a == "--memory-mib") {
      o.memory_mib = number(argv[i], v), ++i;
    } else if (a == "--dirty-mib") {
      o.dirty_mib = number(argv[i], v), ++i;
    } else if (a == "--rounds") {
      o.rounds = static_cast<unsigned>(number(argv[i], v)), ++i;
    } else if (a == "--ring-kib") {
      o.ring_kib = static_cast<uint32_t>(number(argv[i], v)), ++i;
    } else {
      std::fprintf(stderr,
                   "usage: dirty_tracking_bench [--memory-mib N] [--dirty-mib N] [--rounds N] "
                   "[--ring-kib N]\n");
      return a == "--help" ? 0 : 2;
    }
  }
  if ((o.dirty_mib << 20) + kFirst > (o.memory_mib << 20)) {
    std::fprintf(stderr, "dirty_tracking_bench: --dirty-mib must fit in --memory-mib less 2 MiB\n");
    return 2;
  }
  try {
    uint32_t max = 0;
    {
      LoopGuest probe(shape(Options{4, 1, 1, 0}, 0));
      max = probe.vm.dirty_ring_max_bytes();
    }
    const uint32_t ring_bytes = o.ring_kib ? std::min<uint32_t>(max, o.ring_kib << 10) : max;
    const bool pvm = std::filesystem::exists("/sys/module/kvm_pvm");
    std::printf(
        "dirty_tracking_bench: /dev/kvm %s; memory %llu MiB, the guest writes %llu MiB (%llu "
        "pages) a pass; %u rounds; ring %u entries (KVM allows %u)\n",
        pvm ? "PVM" : "hardware-assisted", static_cast<unsigned long long>(o.memory_mib),
        static_cast<unsigned long long>(o.dirty_mib),
        static_cast<unsigned long long>((o.dirty_mib << 20) / kPage), o.rounds, ring_bytes / 16,
        max / 16);
    std::vector<Figures> all{untracked(o), bitmap(o)};
    if (max) all.push_back(ring(o, ring_bytes));
    std::printf("%-10s %14s %14s %16s %13s %16s\n", "mode", "harvest_us", "pages/harvest",
                "guest_pages/s", "vs_untracked", "ring_full/pass");
    for (const Figures& f : all) {
      std::printf("%-10s %14.0f %14.0f %16.0f %13.2f %16.1f\n", f.mode.c_str(), f.harvest_us,
                  f.pages, f.guest_pages_s, f.guest_pages_s / all[0].guest_pages_s,
                  f.ring_full_per_pass);
    }
    if (!max) std::printf("ring: this KVM has no dirty ring (KVM_CAP_DIRTY_LOG_RING)\n");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dirty_tracking_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
