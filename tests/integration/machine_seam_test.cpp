// The migratable seam (vmm/migratable_machine.h) driven in one process,
// with no snapshot directory (label kvm: directly or in the KVM test host):
// a running 2-vCPU test guest is paused and its state captured; a fresh
// machine of the same shape gets its memory and the state and carries on
// exactly (heartbeat sequence, memory pattern), while the original resumes
// and finishes too. A state for another shape is refused by name. The
// machine's dirty log under the test guest's dirtier holds every page it
// wrote and few more.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <iostream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/error.h"
#include "tests/support/scratch_dir.h"
#include "vmm/machine.h"

namespace keel {
namespace {

namespace st = state::v1;
using std::chrono::seconds;

constexpr uint64_t kCount = 40, kMib = 8;

std::vector<std::string> lines_of(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    lines.push_back(line);
  }
  return lines;
}

bool has_prefix(const std::vector<std::string>& lines, const std::string& prefix) {
  for (const auto& l : lines) {
    if (l.rfind(prefix, 0) == 0) return true;
  }
  return false;
}

// Polls the console file (written line by line) until a line starts with
// `prefix`, for at most `limit`.
bool wait_line(const std::string& path, const std::string& prefix, std::chrono::seconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (has_prefix(lines_of(path), prefix)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

uint64_t hex_field(const std::string& line, const std::string& key) {
  const auto at = line.find(key + "=0x");
  return std::stoull(line.substr(at + key.size() + 3), nullptr, 16);
}

std::string line_with(const std::string& path, const std::string& prefix) {
  for (const auto& l : lines_of(path)) {
    if (l.rfind(prefix, 0) == 0) return l;
  }
  return "";
}

uint64_t beat_seq(const std::string& line) {
  const auto at = line.find("seq=");
  return std::stoull(line.substr(at + 4));
}

VmmOptions guest_options(const std::string& console) {
  VmmOptions o;
  o.config.set_kernel(KEEL_TESTOS_BZIMAGE);
  o.config.set_cmdline("job=heartbeat interval_ms=50 count=" + std::to_string(kCount) +
                       " mib=" + std::to_string(kMib));
  o.config.set_cpus(2);
  o.config.set_memory(128ull << 20);
  o.config.set_rng(true);
  o.serial_file = console;
  return o;
}

// A machine running on its own thread until its guest stops.
struct Running {
  explicit Running(Machine& machine) : thread([this, &machine] { stop = machine.run(); }) {}
  ~Running() {
    if (thread.joinable()) thread.join();
  }
  std::optional<MachineStop> stop;
  std::thread thread;
};

TEST(MachineSeam, CaptureAndApplyOntoAFreshMachineOfTheSameShapeCarriesOn) {
  testing::ScratchDir scratch("keel-seam-test");
  const std::string console_a = scratch / "a.console", console_b = scratch / "b.console";
  auto a = std::make_unique<Machine>(guest_options(console_a));
  std::optional<Running> run_a;
  run_a.emplace(*a);
  ASSERT_TRUE(wait_line(console_a, "testos: beat seq=3 ", seconds(300)))
      << "the guest did not beat";

  ASSERT_TRUE(a->pause(seconds(10)));
  const st::VmState captured = a->capture_state();
  EXPECT_EQ(captured.schema_version(), kVmStateSchemaVersion);
  EXPECT_EQ(captured.vcpus_size(), 2);
  EXPECT_EQ(captured.memory().extents_size(), 0) << "memory is not part of the state";
  std::vector<std::string> ids;
  for (const auto& d : captured.devices()) ids.push_back(d.id());
  EXPECT_EQ(ids, (std::vector<std::string>{"com1", "i8042", "acpi-pm", "cmos-rtc", "pvpanic",
                                           "pci-bus", "pci-host-bridge", "rng0"}));
  // As it would cross a wire.
  std::string wire;
  ASSERT_TRUE(captured.SerializeToString(&wire));
  st::VmState state;
  ASSERT_TRUE(state.ParseFromString(wire));

  // The shape, then the memory, then the state.
  auto b = Machine::shape_only(guest_options(console_b));
  const GuestMemory& from = a->guest_memory();
  GuestMemory& to = b->guest_memory();
  ASSERT_EQ(to.size(), from.size());
  std::memcpy(to.host_all_for_write().data(), from.host_base(), from.size());
  b->apply_state(state);
  const auto last_before = lines_of(console_a);
  uint64_t last_seq = 0;
  for (const auto& l : last_before) {
    if (l.rfind("testos: beat seq=", 0) == 0) last_seq = beat_seq(l);
  }
  ASSERT_GT(last_seq, 2u);

  a->resume();  // the original goes on as well, to its end
  {
    Running run_b(*b);
    run_a.reset();  // waits for A's guest to power off
    ASSERT_TRUE(wait_line(console_b, "testos: heartbeat memory ", seconds(300)))
        << "B did not finish";
  }
  const auto b_lines = lines_of(console_b);
  ASSERT_FALSE(b_lines.empty());
  EXPECT_FALSE(has_prefix(b_lines, "testos: boot")) << "B booted instead of carrying on";
  EXPECT_FALSE(has_prefix(b_lines, "testos: ready"));
  std::vector<uint64_t> seqs;
  for (const auto& l : b_lines) {
    if (l.rfind("testos: beat seq=", 0) == 0) seqs.push_back(beat_seq(l));
  }
  ASSERT_FALSE(seqs.empty());
  // The vCPU may have been paused mid-line: B starts with the beat after
  // A's last complete one, or finishes that one.
  EXPECT_LE(seqs.front(), last_seq + 1);
  EXPECT_EQ(seqs.back(), kCount);
  for (size_t i = 1; i < seqs.size(); ++i) ASSERT_EQ(seqs[i], seqs[i - 1] + 1);
  EXPECT_TRUE(
      has_prefix(b_lines, "testos: heartbeat memory OK pages=" + std::to_string(kMib * 256)));
  EXPECT_TRUE(has_prefix(lines_of(console_a), "testos: heartbeat memory OK"));
}

TEST(MachineSeam, AStateForAnotherShapeIsRefusedByName) {
  testing::ScratchDir scratch("keel-seam-test");
  auto options = guest_options(scratch / "a.console");
  auto a = Machine::shape_only(options);  // never run: its initial state is enough
  const st::VmState state = a->capture_state();

  auto refusal = [&](const VmmOptions& shape, const st::VmState& s) -> std::string {
    auto m = Machine::shape_only(shape);
    try {
      m->apply_state(s);
    } catch (const InputError& e) {
      return e.what();
    }
    return "";
  };
  // The shape, from the state's configuration, before any device state.
  auto without_rng = options;
  without_rng.config.set_rng(false);
  EXPECT_NE(
      refusal(without_rng, state).find("state: entropy source present, this machine has none"),
      std::string::npos);
  auto bigger = options;
  bigger.config.set_memory(256ull << 20);
  EXPECT_NE(refusal(bigger, state).find("state: memory 134217728, this machine has 268435456"),
            std::string::npos);
  // The configuration says one thing, the device states another.
  auto other = state;
  other.mutable_config()->set_rng(false);
  EXPECT_NE(refusal(without_rng, other).find("device rng0 is not part of this machine"),
            std::string::npos);
  other = state;
  other.mutable_devices()->RemoveLast();
  EXPECT_NE(refusal(options, other).find("no state for device rng0"), std::string::npos);
  other = state;
  other.mutable_devices(0)->set_id("com2");
  EXPECT_NE(refusal(options, other).find("no state for device com1"), std::string::npos);
  other = state;
  other.mutable_devices(1)->set_id("com1");
  EXPECT_NE(refusal(options, other).find("device com1 given twice"), std::string::npos);
  other = state;
  other.mutable_vcpus()->RemoveLast();
  EXPECT_NE(refusal(options, other).find("1 vCPU states, this machine has 2"), std::string::npos);
  other = state;
  other.set_schema_version(1);
  EXPECT_NE(refusal(options, other).find("state schema version 1"), std::string::npos);
  EXPECT_EQ(refusal(options, state), "") << "the state itself applies";
}

// Pass 2 of the dirtier begins after the log did: a harvest at its end
// holds every page of the dirtier's memory, and only a few others (the
// guest's stack, page tables, console buffer).
TEST(MachineSeam, ADirtyLogHarvestHoldsEveryPageTheDirtierWroteAndFewMore) {
  testing::ScratchDir scratch("keel-seam-test");
  VmmOptions o;
  o.config.set_kernel(KEEL_TESTOS_BZIMAGE);
  o.config.set_cmdline("job=dirtier mib=8 rate_mbps=8 passes=4");
  o.config.set_cpus(1);
  o.config.set_memory(128ull << 20);
  o.serial_file = scratch / "console";
  auto m = std::make_unique<Machine>(o);
  std::optional<Running> run;
  run.emplace(*m);
  ASSERT_TRUE(wait_line(o.serial_file, "testos: dirtier start ", seconds(300)));
  const std::string start = line_with(o.serial_file, "testos: dirtier start ");
  const uint64_t low = hex_field(start, "low"), high = hex_field(start, "high");
  ASSERT_LT(low, high);
  ASSERT_LE(high, 3ull << 30) << "below the PCI hole: memfd offset = guest address";

  auto log = m->start_dirty_log();
  log->harvest();
  ASSERT_FALSE(has_prefix(lines_of(o.serial_file), "testos: dirtier pass=1 "))
      << "pass 1 ended before the log began: pass 2 might not be all after it";
  ASSERT_TRUE(wait_line(o.serial_file, "testos: dirtier pass=1 ", seconds(300)));
  ASSERT_TRUE(wait_line(o.serial_file, "testos: dirtier pass=2 ", seconds(300)));
  // All of pass 2 (a harvest in between would take the pages written so
  // far, which pass 2 then does not write again), and some of pass 3.
  const auto bits = log->harvest();
  uint64_t missing = 0, inside = 0, outside = 0;
  for (uint64_t page = 0; page < bits.size() * 64; ++page) {
    const bool dirty = (bits[page / 64] >> (page % 64)) & 1;
    const bool ours = page * 4096 >= low && page * 4096 < high;
    if (ours && !dirty) ++missing;
    if (ours && dirty) ++inside;
    if (!ours && dirty) ++outside;
  }
  std::cout << "harvest at the end of pass 2: " << inside << " of the dirtier's "
            << (high - low) / 4096 << " pages, " << outside << " others\n";
  EXPECT_EQ(missing, 0u) << "pages the dirtier wrote after the log began, not harvested";
  EXPECT_LE(outside, 64u) << "pages the dirtier did not write";
  run.reset();  // the guest ends after its passes
  EXPECT_TRUE(wait_line(o.serial_file, "testos: dirtier OK ", seconds(10)));
}

}  // namespace
}  // namespace keel
