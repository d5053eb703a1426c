// The pages of a VM's memory written since the last harvest, by the guest
// or by the VMM: KVM's dirty log of every memory slot (manual protect: each
// harvest gets the log, then write-protects what it reported, so the next
// write is logged again) merged with the VMM's own marks
// (GuestMemory::dirty, which KVM never sees). One bitmap indexed by memfd
// page, the index snapshots and migration copy pages by.
//
// A harvest's pages may be copied once it returns: a write after the
// harvest's re-protect is logged for the next one. Slot i is region i of
// the GuestMemory, as the machine registers them.
#pragma once

#include <cstdint>
#include <vector>

#include "common/guest_memory.h"
#include "vmm/kvm/kvm_vm.h"

namespace keel::kvm {

class DirtyLog {
 public:
  // Turns manual-protect dirty logging on for every slot.
  DirtyLog(Vm& vm, GuestMemory& memory);
  // Turns it off again.
  ~DirtyLog();
  DirtyLog(const DirtyLog&) = delete;
  DirtyLog& operator=(const DirtyLog&) = delete;

  // Bit p of word p / 64: memfd page p was written since the last harvest
  // (since logging began, for the first; the VMM's marks since its last
  // harvest of GuestMemory::dirty).
  std::vector<uint64_t> harvest() {
    std::vector<uint64_t> dirty = peek();
    reprotect_peeked();
    return dirty;
  }
  // A harvest in two steps, for a caller that may not need the second:
  // peek() reports the same pages and leaves them as they are (writable,
  // still in KVM's log, so the next peek or harvest reports them again);
  // reprotect_peeked() then write-protects and clears what the last peek
  // reported, as harvest() does. A migration peeks to decide whether to
  // stop: a guest about to stop need not fault on every page it writes
  // meanwhile.
  std::vector<uint64_t> peek();
  void reprotect_peeked();
  // peek() ORed into `into` (resized when smaller): nothing allocated when
  // `into` is big enough. A migration's pause takes its last look so: in an
  // emulated host the first touch of a fresh page costs ~0.1 ms, and a
  // new bitmap of 1 GiB's pages is eight of them.
  void peek_into(std::vector<uint64_t>& into);

  static uint64_t count(const std::vector<uint64_t>& bitmap);

 private:
  Vm& vm_;
  GuestMemory& memory_;
  std::vector<std::vector<uint64_t>> peeked_;  // per slot: the last peek's bits
};

}  // namespace keel::kvm
