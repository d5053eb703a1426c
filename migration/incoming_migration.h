// keel-vmm --incoming: the receiving side of a live migration. Listens,
// takes one source, builds the machine's shape from its Hello (the disks
// and taps from this command line) and answers whether it fits before any
// memory moves; then pages into guest memory, the totals checked, the
// state applied (checked whole first), "ready"; and once the source says
// go, the machine to run. The stream is untrusted: every frame, length,
// index and message is checked, and anything wrong ends it with one line
// naming the problem (the source's guest runs on).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>

#include "common/tcp_endpoint.h"
#include "migration/stream/frame_channel.h"
#include "vmm/config/vmm_options.h"
#include "vmm/machine.h"

namespace keel::migration {

class IncomingMigration {
 public:
  // Listens on options.incoming at once (InputError when it cannot).
  explicit IncomingMigration(const VmmOptions& options);

  // The address it listens on, its port filled in ("tcp:127.0.0.1:40123").
  const std::string& address() const { return address_; }

  // Waits for a source and takes its migration in. Returns the machine,
  // memory and state in place, its vCPUs running (the source said go), for
  // run() to start its event loop; null when `stop` turned true first.
  // Throws StreamError or InputError saying why the migration failed.
  // `built` runs once the machine stands, before any page or state is read
  // (jailed mode drops its privileges there).
  std::unique_ptr<Machine> receive(const std::atomic<bool>& stop,
                                   const std::function<void(Machine&)>& built = {});

  // Once the machine runs (on its event loop): tells the source, which
  // then lets go of the guest.
  void confirm_running();

  // Counted as the stream arrived: for the log line.
  uint64_t pages() const { return pages_; }
  uint64_t zero_pages() const { return zero_pages_; }
  uint64_t bytes() const { return channel_ ? channel_->bytes_received() : 0; }

 private:
  std::unique_ptr<Machine> build(std::span<const uint8_t> hello);
  void receive_memory(Machine& machine);
  void refuse(const std::string& why);
  // Debug log: how far into the pause (since the last pages' totals came).
  void step(const char* what) const;

  const VmmOptions& options_;
  UniqueFd listener_;
  std::string address_;
  std::unique_ptr<FrameChannel> channel_;
  uint64_t pages_ = 0;
  uint64_t zero_pages_ = 0;
  std::chrono::steady_clock::time_point pause_began_;
};

}  // namespace keel::migration
