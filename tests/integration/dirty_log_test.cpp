// The dirty log under a running guest (label kvm: directly or in the KVM
// test host): a small guest writes a known set of pages round after round
// while the test harvests; each harvest holds every page written since the
// last one, and only a bounded number more (the page tables, whose
// accessed/dirty bits the CPU sets), merged with the VMM's own writes; a
// stopped guest leaves nothing to harvest. Guest memory has two slots whose
// memfd offsets are not word-aligned in the bitmap, as the merge must handle.
// The dirty ring, under the same guest, collects the same pages.
#include "vmm/kvm/dirty_log.h"

#include <gtest/gtest.h>
#include <linux/kvm.h>

#include <iostream>
#include <set>

#include "tests/support/loop_guest.h"
#include "vmm/kvm/dirty_ring.h"
#include "vmm/kvm/kvm_system.h"

namespace keel {
namespace {

constexpr uint64_t kPage = DirtyBitmap::kPageSize;
constexpr uint64_t kMiB = 1 << 20;
// Slot 0: 4 MiB + 12 KiB from 0; slot 1: 4 MiB at 16 MiB, at memfd offset
// 4 MiB + 12 KiB (page 1027: three bits into a bitmap word).
constexpr uint64_t kLowSize = 4 * kMiB + 3 * kPage;
constexpr uint64_t kHighGpa = 16 * kMiB, kHighSize = 4 * kMiB;
constexpr uint64_t kWrittenPages = 16, kStride = 2 * kPage;  // every other page from kHighGpa
constexpr uint64_t kExtraBound = 8;  // pages a harvest may hold beyond those written

uint64_t file_page_of_high(uint64_t gpa) {
  return (kLowSize + (gpa - kHighGpa)) / kPage;
}

std::set<uint64_t> pages_of(const std::vector<uint64_t>& bits) {
  std::set<uint64_t> pages;
  for (size_t w = 0; w < bits.size(); ++w) {
    for (unsigned b = 0; b < 64; ++b) {
      if ((bits[w] >> b) & 1) pages.insert(w * 64 + b);
    }
  }
  return pages;
}

// The VM, its two slots and the loop guest writing kWrittenPages pages from
// kHighGpa; with `ring_bytes`, the dirty ring on instead of the bitmap.
testing::LoopGuestShape shape(uint32_t ring_bytes = 0) {
  return {{{0, kLowSize, 0}, {kHighGpa, kHighSize, kLowSize}},
          kHighGpa,
          kWrittenPages,
          kStride,
          ring_bytes};
}

// Waits for `n` more passes than `from`, failing the test if there are none.
void wait_passes(testing::RunningGuest& guest, uint64_t from, uint64_t n) {
  ASSERT_TRUE(guest.wait_passes(from, n)) << "the guest made no progress: " << guest.error();
}

std::set<uint64_t> written_pages() {
  std::set<uint64_t> written;
  for (uint64_t k = 0; k < kWrittenPages; ++k)
    written.insert(file_page_of_high(kHighGpa + k * kStride));
  return written;
}

// Every page written must be in the harvest; a few more may be (the page
// tables, whose accessed and dirty bits the CPU sets, and pages KVM maps
// writable around a fault: seen on PVM and SVM alike, the page after the
// last one written).
void check(const char* what, const std::set<uint64_t>& harvest,
           const std::set<uint64_t>& expected) {
  SCOPED_TRACE(what);
  for (uint64_t p : expected)
    EXPECT_TRUE(harvest.count(p)) << "page " << p << " written, not harvested";
  std::string extra;
  for (uint64_t p : harvest) {
    if (!expected.count(p)) extra += " " + std::to_string(p);
  }
  EXPECT_LE(harvest.size(), expected.size() + kExtraBound)
      << "pages harvested, never written:" << extra;
  std::cout << what << ": " << harvest.size() << " pages, " << expected.size()
            << " written; more:" << extra << "\n";
}

TEST(DirtyLog, HarvestsUnderARunningGuestHoldWhatItWroteAndTheVmmsWrites) {
  testing::LoopGuest g(shape());
  kvm::Vm& vm = g.vm;
  GuestMemory& memory = g.memory;
  kvm::Vcpu& vcpu = *g.vcpu;
  const std::set<uint64_t> written = written_pages();

  kvm::DirtyLog log(vm, memory);
  memory.dirty().harvest();  // the code and page tables written above: before logging began
  EXPECT_EQ(kvm::DirtyLog::count(log.harvest()), 0u) << "nothing ran yet";

  testing::RunningGuest guest(vcpu);
  wait_passes(guest, 0, 2);
  const auto first = pages_of(log.harvest());  // while the guest runs on
  check("first harvest", first, written);
  // Re-protected: the rounds after it are logged again (counted from after
  // the harvest, which re-protected).
  wait_passes(guest, guest.passes(), 3);
  memory.write_obj<uint64_t>(0x200000, 42);                  // a device's write in slot 0
  memory.write_obj<uint64_t>(kHighGpa + kHighSize - 8, 42);  // and in slot 1, the last page
  std::set<uint64_t> with_vmm = written;
  with_vmm.insert(0x200000 / kPage);
  with_vmm.insert(file_page_of_high(kHighGpa + kHighSize - 8));
  const auto second = pages_of(log.harvest());
  check("second harvest", second, with_vmm);

  wait_passes(guest, guest.passes(), 2);
  EXPECT_EQ(guest.stop(), "");
  // A peek: the same pages, and nothing re-protected or cleared (the next
  // peek and harvest still hold them); a re-protect after it clears them.
  const auto last = pages_of(log.peek());
  check("peek", last, written);
  EXPECT_EQ(pages_of(log.peek()), last);
  log.reprotect_peeked();
  const auto after = pages_of(log.harvest());
  std::string listed;
  for (uint64_t p : after) listed += " " + std::to_string(p);
  EXPECT_TRUE(after.empty()) << after.size() << " pages harvested from a stopped guest:" << listed;
  std::cout << "rounds " << guest.passes() << "\n";
}

// The same guest with the dirty ring instead of the bitmap: each collect
// (all entries, then a reset) holds the pages written since the last one.
TEST(DirtyRing, CollectsUnderARunningGuestWhatItWroteSinceTheLastReset) {
  uint32_t max = 0;
  {
    testing::LoopGuest probe(shape());
    max = probe.vm.dirty_ring_max_bytes();
  }
  ASSERT_GT(max, 0u) << "this KVM has no dirty ring (KVM_CAP_DIRTY_LOG_RING)";
  testing::LoopGuest g(shape(std::min<uint32_t>(max, 64 * 1024)));  // 4096 entries
  for (size_t i = 0; i < g.memory.regions().size(); ++i)
    g.vm.set_dirty_logging(static_cast<uint32_t>(i), true);
  kvm::DirtyRing ring(g.vm, *g.vcpu);
  EXPECT_EQ(ring.entries(), std::min<uint32_t>(max, 64 * 1024) / 16);
  const std::set<uint64_t> written = written_pages();

  // Slot-relative pages to memfd pages, as a harvest merges them.
  auto collect = [&] {
    std::set<uint64_t> pages;
    std::string bad;
    ring.collect([&](uint32_t slot, uint64_t page) {
      if (slot >= g.memory.regions().size() || page >= g.memory.regions()[slot].size / kPage) {
        bad += " " + std::to_string(slot) + ":" + std::to_string(page);
        return;
      }
      pages.insert(g.memory.regions()[slot].file_offset / kPage + page);
    });
    EXPECT_EQ(bad, "") << "entries outside the slots";
    g.vm.reset_dirty_rings();
    return pages;
  };

  EXPECT_TRUE(collect().empty()) << "nothing ran yet";
  testing::RunningGuest guest(*g.vcpu);
  wait_passes(guest, 0, 2);
  check("first collect", collect(), written);
  // Passes counted from after the reset: in the KVM test host a collect and
  // reset outlast three passes, and passes made before it prove nothing.
  wait_passes(guest, guest.passes(), 3);
  check("second collect", collect(), written);  // the reset re-protected them
  EXPECT_EQ(guest.stop(), "");
  collect();
  EXPECT_TRUE(collect().empty()) << "a stopped guest dirtied pages";
}

}  // namespace
}  // namespace keel
