// The host's fence deadline, shared by keel-agent and its keel-vmm
// processes through a small file both map: until when the agent's lease
// is confirmed (CLOCK_BOOTTIME, ns: it runs on while the host is suspended
// or frozen, as the lease's time on the other hosts does). The agent moves it forward at each
// renewal; a VMM (keel-vmm --fence-file) pauses its guest once it has
// passed, so a guest stops even when its agent is stuck, stopped or dead.
// The file is 4 KiB; the deadline is its first 8 bytes, little-endian,
// read and written as one aligned 64-bit word; 0 means fenced now.
#pragma once

#include <cstdint>
#include <string>

#include "common/memory_mapping.h"

namespace keel {

class FenceDeadline {
 public:
  // Maps an existing file (keel-vmm). InputError naming the file when it
  // is missing, too short or cannot be mapped.
  static FenceDeadline open(const std::string& path);
  // Maps the file writable (keel-agent), making it (mode 0644) with
  // `deadline_ns` if missing; an existing file keeps its deadline (a
  // restarted agent moves it only once its lease is confirmed).
  static FenceDeadline create(const std::string& path, uint64_t deadline_ns);

  uint64_t deadline_ns() const;
  void set_deadline_ns(uint64_t deadline_ns);
  // Whether the deadline has passed now.
  bool passed() const;
  // How long ago it passed, in ms (0 while it has not).
  uint64_t overdue_ms() const;

  static uint64_t now_ns();  // CLOCK_BOOTTIME

 private:
  explicit FenceDeadline(MemoryMapping mapping) : mapping_(std::move(mapping)) {}
  MemoryMapping mapping_;
};

}  // namespace keel
