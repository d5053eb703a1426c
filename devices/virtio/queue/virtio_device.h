// What a virtio device (blk, net, rng) implements, independent of the
// transport that carries it (virtio 1.x, 2 "Basic Facilities of a Virtio
// Device"). The transport (VirtioPciDevice) owns the status machine, feature
// negotiation, queue registers and interrupts; the device owns its
// device-specific configuration and what it does with its queues.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "common/guest_memory.h"
#include "common/latency_histogram.h"
#include "devices/virtio/queue/split_queue.h"

namespace keel::state::v1 {
class VirtioDeviceState;
}

namespace keel::virtio {

// 5: device types (the PCI device ID is 0x1040 + type, 4.1.2).
inline constexpr uint16_t kDeviceTypeNet = 1;
inline constexpr uint16_t kDeviceTypeBlock = 2;
inline constexpr uint16_t kDeviceTypeEntropy = 4;

// "virtio-net", "virtio-blk", "virtio-rng", else "virtio device type N".
std::string virtio_device_name(uint16_t type);

// 6: reserved feature bits the transport handles itself.
inline constexpr uint64_t kFRingIndirectDesc = uint64_t{1} << 28;  // VIRTIO_F_INDIRECT_DESC
inline constexpr uint64_t kFRingEventIdx = uint64_t{1} << 29;      // VIRTIO_F_EVENT_IDX
inline constexpr uint64_t kFVersion1 = uint64_t{1} << 32;          // VIRTIO_F_VERSION_1

// What a device may ask of the transport that carries it. Every call is made
// with lock() held.
class VirtioTransport {
 public:
  virtual ~VirtioTransport() = default;
  // Used buffers were added to `queue`: interrupt the driver (the device has
  // already asked the queue, SplitQueue::should_notify()).
  virtual void queue_interrupt(uint16_t queue) = 0;
  // The device-specific configuration changed (bumps config_generation and
  // interrupts, 4.1.4.3.1).
  virtual void config_changed() = 0;
  // A queue turned out broken (2.1.2): DEVICE_NEEDS_RESET. The device stops
  // using its queues itself before calling this. `why` is for the operator
  // (keelctl status): what the driver did wrong, or which host-side failure
  // stopped the device (a host failure must not look like a guest bug).
  virtual void needs_reset(const std::string& why) = 0;
  // A request failed on the host's side (a disk's I/O error) and the
  // driver was told so: for the operator's events; the device goes on.
  virtual void io_error(const std::string& what) { (void)what; }
  // The function's lock: the transport holds it around every call into the
  // device (configuration, activate, reset, queue_notify); the device's own
  // event handlers (I/O completions, a backend fd turning readable) take it
  // before touching queues or calling the transport.
  virtual std::mutex& lock() = 0;
};

// Threading: calls come from vCPU threads (MMIO) and from the machine's event
// loop (ioeventfd kicks), always under VirtioTransport::lock(). None of them
// may block on I/O: the device submits work and finishes it from its own
// event handlers on the event loop. Not even reset(): work still in flight
// finishes asynchronously while reset_pending() says so (the driver waits
// for device_status to read 0, 4.1.4.3.1), so a guest that resets a busy
// device again and again holds up nobody but itself.
class VirtioDevice {
 public:
  virtual ~VirtioDevice() = default;

  // Called once, by the transport's constructor.
  void attach(VirtioTransport& transport) { transport_ = &transport; }

  virtual uint16_t device_type() const = 0;
  // Device-specific feature bits offered (bits 0-23 and 50+, 6). The
  // transport adds VERSION_1, INDIRECT_DESC and EVENT_IDX itself.
  virtual uint64_t device_features() const = 0;

  virtual uint16_t num_queues() const = 0;
  // The largest size each queue accepts: a power of two, at most 32768.
  virtual uint16_t max_queue_size() const = 0;

  // The device-specific configuration (4.1.4.6). The transport bounds-checks
  // accesses against config_size() (at most 4096 bytes) before calling.
  virtual uint32_t config_size() const = 0;
  virtual void config_read(uint32_t offset, std::span<uint8_t> data) = 0;
  virtual void config_write(uint32_t offset, std::span<const uint8_t> data) = 0;

  // DRIVER_OK (3.1.1 step 8). `queues` has num_queues() entries, indexed by
  // queue number; the ones the driver did not enable are empty. Each queue
  // has already passed activation (SplitQueue's constructor). The device
  // takes them over. `features` is what was negotiated, transport bits
  // included. May throw VirtqueueError to refuse (the transport then sets
  // DEVICE_NEEDS_RESET).
  virtual void activate(GuestMemory& memory, std::vector<std::optional<SplitQueue>> queues,
                        uint64_t features) = 0;

  // Device reset (2.1, 4.1.4.3.1: the driver wrote 0 to device_status): stop
  // using and drop the queues, back to the initial device-specific state.
  // Called on every reset, whether or not the device was activated.
  virtual void reset() = 0;
  // After reset(): true while work of the old activation is still in flight
  // (a disk's requests in the kernel, which may still write the guest's
  // buffers). The transport keeps device_status non-zero meanwhile and
  // refuses to start the device again.
  virtual bool reset_pending() const { return false; }

  // The driver kicked `queue` (an enabled queue of an activated device; the
  // notify region or its ioeventfd, 4.1.4.4).
  virtual void queue_notify(uint16_t queue) = 0;

  // Snapshot (issue 6; proto/device_state.proto), all with lock() held.
  // The transport saves and restores its own registers and queue setup; the
  // device adds what is its own. Devices that do not implement these cannot
  // be snapshotted while activated (queue_state throws std::logic_error).
  //
  // quiesce(): before a save, finish work already taken from the queues
  // (virtio-blk waits for its requests in flight), so that every chain the
  // device popped is either returned or held in a way queue_state() undoes.
  virtual void quiesce() {}
  // After a quiesce(), when the guest runs here again (a snapshot taken, a
  // migration that failed): the device takes up its work. A device whose
  // work comes from outside (a tap's frames) must touch no guest memory
  // between quiesce() and resume(): the saved state would not match it.
  virtual void resume() {}
  // After quiesce(), before another host may run the guest (a live
  // migration lets go): what the guest was told is written is on stable
  // storage (virtio-blk: fdatasync of its image). May block.
  virtual void sync_storage() {}
  // A live migration's handover of the host storage's lock (an image's OFD
  // lock): the source releases once the guest is to run elsewhere, the
  // destination claims before its guest runs. claim throws InputError
  // naming what another process holds.
  virtual void release_storage() {}
  virtual void claim_storage() {}
  // The guest now runs here after a live migration: a network card tells
  // the network (a few RARP frames from its MAC, so bridges learn the new
  // port). Returns at once; may schedule work on the event loop.
  virtual void announce() {}
  // HA output commit, for devices whose output leaves the machine
  // (virtio-net): from hold_output(true) on, what the guest sends is kept
  // (HeldOutput), tagged with the replica epoch under way; a checkpoint's
  // pause closes that epoch (close_output_epoch); once the passive
  // acknowledged it, release_output lets its output go, in order.
  // hold_output(false) lets everything go and stops holding. With lock()
  // held.
  // HA disk replication, for devices with storage (virtio-blk), with lock()
  // held: from track_writes(true) on, the device notes the 4 KiB blocks of
  // its storage every write, discard or write-zeroes request covers (at
  // submission); harvest_writes() takes those notes (bit b of word b / 64)
  // and clears them. Empty for devices without storage.
  virtual void track_writes(bool) {}
  virtual std::vector<uint64_t> harvest_writes() { return {}; }
  virtual void hold_output(bool) {}
  // While holding: `hook` runs (with lock() held) when the epoch under way
  // gets its first held frame, so that a replica can checkpoint early.
  virtual void on_output_held(std::function<void()> /*hook*/) {}
  virtual void close_output_epoch(uint64_t) {}
  virtual void release_output(uint64_t) {}
  // Where activated `queue` resumes after a restore: its SplitQueueState,
  // minus chains the device holds popped but not used (it pops them again
  // after restore). nullopt when the device has no such queue (not enabled,
  // or the device stopped using its queues after an error).
  virtual std::optional<SplitQueueState> queue_state(uint16_t queue) const;
  // The device-specific state. restore_state() runs before activate() on a
  // restore; it checks `state` as untrusted input (InputError naming the
  // field) and changes nothing when it refuses; reset() does not undo it.
  virtual void save_state(state::v1::VirtioDeviceState& state) const;
  virtual void restore_state(const state::v1::VirtioDeviceState& state);

  // What the device did since it was made, for the operator (keelctl
  // status): named counters, with lock() held. They start again at 0 after
  // a restore.
  using Counters = std::vector<std::pair<std::string, uint64_t>>;
  virtual Counters counters() const { return {}; }
  // How long the device's requests took, for one that keeps that (a disk);
  // with lock() held.
  virtual const LatencyHistogram* request_latency() const { return nullptr; }

 protected:
  VirtioTransport* transport_ = nullptr;
};

}  // namespace keel::virtio
