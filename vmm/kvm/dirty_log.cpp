#include "vmm/kvm/dirty_log.h"

#include <algorithm>
#include <bit>

#include "common/error.h"
#include "common/log.h"

namespace keel::kvm {

namespace {

// ORs `pages` bits of `from` into `into` starting at bit `at`.
void or_bits_at(std::vector<uint64_t>& into, uint64_t at, const std::vector<uint64_t>& from,
                uint64_t pages) {
  const uint64_t shift = at % 64;
  const size_t base = static_cast<size_t>(at / 64);
  for (size_t w = 0; w < from.size() && w * 64 < pages; ++w) {
    uint64_t bits = from[w];
    if (w * 64 + 64 > pages) bits &= (uint64_t{1} << (pages - w * 64)) - 1;  // past the slot: none
    if (bits == 0) continue;
    into[base + w] |= bits << shift;
    if (shift != 0 && base + w + 1 < into.size()) into[base + w + 1] |= bits >> (64 - shift);
  }
}

}  // namespace

DirtyLog::DirtyLog(Vm& vm, GuestMemory& memory) : vm_(vm), memory_(memory) {
  vm_.enable_manual_dirty_log_protect();
  for (size_t i = 0; i < memory_.regions().size(); ++i)
    vm_.set_dirty_logging(static_cast<uint32_t>(i), true);
}

DirtyLog::~DirtyLog() {
  for (size_t i = 0; i < memory_.regions().size(); ++i) {
    try {
      vm_.set_dirty_logging(static_cast<uint32_t>(i), false);
    } catch (const std::exception& e) {
      // The VM runs on with logging on: slower, not wrong.
      log::warning(std::string("dirty logging stays on: ") + e.what());
    }
  }
}

std::vector<uint64_t> DirtyLog::peek() {
  std::vector<uint64_t> dirty(memory_.dirty().words(), 0);
  peek_into(dirty);
  return dirty;
}

void DirtyLog::peek_into(std::vector<uint64_t>& into) {
  if (into.size() < memory_.dirty().words()) into.resize(memory_.dirty().words(), 0);
  const auto& regions = memory_.regions();
  peeked_.resize(regions.size());
  for (size_t i = 0; i < regions.size(); ++i) {
    const uint64_t pages = regions[i].size / DirtyBitmap::kPageSize;
    vm_.get_dirty_log(static_cast<uint32_t>(i), peeked_[i]);
    or_bits_at(into, regions[i].file_offset / DirtyBitmap::kPageSize, peeked_[i], pages);
  }
  memory_.dirty().harvest_into(into);
}

// Before anyone copies the pages a harvest reports: a write from here on
// is logged again.
void DirtyLog::reprotect_peeked() {
  const auto& regions = memory_.regions();
  for (size_t i = 0; i < peeked_.size() && i < regions.size(); ++i) {
    bool any = false;
    for (uint64_t w : peeked_[i]) any |= w != 0;
    if (!any) continue;
    const uint64_t pages = regions[i].size / DirtyBitmap::kPageSize;
    vm_.clear_dirty_log(static_cast<uint32_t>(i), 0, static_cast<uint32_t>(pages), peeked_[i]);
    std::fill(peeked_[i].begin(), peeked_[i].end(), 0);
  }
}

uint64_t DirtyLog::count(const std::vector<uint64_t>& bitmap) {
  uint64_t n = 0;
  for (uint64_t w : bitmap) n += static_cast<uint64_t>(std::popcount(w));
  return n;
}

}  // namespace keel::kvm
