// The MSI-X table and Pending Bit Array of one PCI function (PCI Local Bus
// 3.0, 6.8.2), as the device side sees them: the guest programs each entry's
// message address and data through MMIO and masks or unmasks it; the device
// raises vectors with trigger().
//
// Entry layout (6.8.2.6-6.8.2.9), 16 bytes each: message address (low dword,
// bits 1:0 read as 0), message upper address, message data, vector control
// (bit 0: mask; the other bits reserved, read 0). Entries start masked. The
// PBA (6.8.2.10) is read-only: one bit per vector, in qwords.
//
// A triggered vector that is masked (its own mask or the function mask) sets
// its pending bit instead; the pending message is sent, and the bit cleared,
// as soon as the vector is unmasked (6.8.2.9). While MSI-X is disabled, the
// function uses INTx and trigger() does nothing: the transport decides that.
//
// MMIO: dword and aligned qword accesses (6.8.2: "software ... must use
// aligned full DWORD or aligned full QWORD transactions"); any other access is
// ignored and reads as zeros. Offsets past the table or PBA likewise.
//
// Not thread-safe: its owner serialises MMIO and trigger().
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "proto/device_state.pb.h"

namespace keel::virtio {

// Where MSI messages go: the machine's irqfd per vector, in tests a recorder.
// `vector` names the table entry the message comes from, so a sink can keep
// one route per entry and update it when the guest reprograms the entry.
class MsiSink {
 public:
  virtual ~MsiSink() = default;
  virtual void send(uint16_t vector, uint64_t address, uint32_t data) = 0;
};

// virtio 1.x, 4.1.4.3: "no vector" in msix_config and queue_msix_vector.
inline constexpr uint16_t kMsiNoVector = 0xffff;

class MsixTable {
 public:
  // 6.8.2.3: at most 2048 vectors. Throws std::invalid_argument otherwise or for 0.
  MsixTable(uint16_t vectors, MsiSink& sink);

  static constexpr uint16_t kMaxVectors = 2048;
  static constexpr uint32_t kEntryBytes = 16;

  uint16_t vectors() const { return static_cast<uint16_t>(entries_.size()); }
  uint32_t table_bytes() const { return kEntryBytes * vectors(); }
  uint32_t pba_bytes() const { return 8 * ((vectors() + 63u) / 64u); }

  // MMIO into the table (offset from its start) and the PBA (writes ignored).
  void table_read(uint64_t offset, std::span<uint8_t> data) const;
  void table_write(uint64_t offset, std::span<const uint8_t> data);
  void pba_read(uint64_t offset, std::span<uint8_t> data) const;

  // From the capability's Message Control (6.8.2.3): bit 15 MSI-X Enable,
  // bit 14 Function Mask. Unmasking delivers pending vectors.
  void set_control(bool enabled, bool function_masked);
  bool enabled() const { return enabled_; }
  bool function_masked() const { return function_masked_; }

  // Raises `vector`; one >= vectors() (including kMsiNoVector) is ignored.
  void trigger(uint16_t vector);

  bool masked(uint16_t vector) const;   // entry or function mask (false when out of range)
  bool pending(uint16_t vector) const;  // false when out of range

  // Back to the power-on state: entries zero and masked, nothing pending,
  // disabled, function mask clear.
  void reset();

  // Snapshot: entries, PBA, enable and function mask. check() refuses (an
  // InputError naming `device` and the field) a state this table could not
  // be in: another vector count, reserved bits, pending bits past the last
  // vector, or a pending vector that is enabled and unmasked (it would have
  // been sent). restore() checks, then takes the state without sending
  // anything.
  state::v1::MsixState save() const;
  void check(const state::v1::MsixState& state, const std::string& device) const;
  void restore(const state::v1::MsixState& state, const std::string& device);

 private:
  struct Entry {
    uint32_t address_lo = 0;
    uint32_t address_hi = 0;
    uint32_t data = 0;
    uint32_t control = 1;  // masked
  };
  uint32_t read_dword(uint64_t offset) const;
  void write_dword(uint64_t offset, uint32_t value);
  void deliver_pending();
  void send(uint16_t vector);

  std::vector<Entry> entries_;
  std::vector<uint64_t> pba_;
  MsiSink& sink_;
  bool enabled_ = false;
  bool function_masked_ = false;
};

}  // namespace keel::virtio
