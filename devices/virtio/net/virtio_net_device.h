// virtio-net (virtio 1.x, 5.1) on a host tap device: one receive and one
// transmit queue, no control queue.
//
// Features offered: MAC, STATUS (link always up), and the offloads a tap
// carries as they are, because the tap speaks the same virtio_net_hdr: CSUM
// and HOST_TSO4/6 (the guest may send partially checksummed and TCP
// segmentation-offloaded frames; the host kernel finishes them), GUEST_CSUM
// and GUEST_TSO4/6 (the tap may hand the guest such frames; set on the tap
// with TUNSETOFFLOAD from what the driver accepted). Not offered: ECN and UFO
// variants (little use, and UFO is deprecated in Linux), MRG_RXBUF (a tap
// read cannot tell a frame's length beforehand, so spreading a frame over
// several chains would need a bounce copy; without it a driver that accepts
// GUEST_TSO posts 65562-byte buffers, 5.1.6.3.1), MQ, CTRL_VQ, MTU.
//
// Transmit: every chain is one frame (header + data, device-readable only),
// written to the tap with one writev straight from guest memory. A chain goes
// back to the driver only once the tap took it: on EAGAIN the device keeps it
// and waits for the tap to turn writable, so no frame the guest was told is
// sent gets lost. While its VMM replicates the guest (HA output commit),
// frames are copied into a HeldOutput instead and leave only once the
// passive acknowledged the epoch they were sent in; a full store backs the
// transmit queue up until a release makes room.
//
// Receive: the device keeps one chain from the receive queue and waits for
// the tap to turn readable, then reads the next frame straight into that
// chain's buffers. When the queue is empty it stops watching the tap (frames
// wait in the tap's own queue) until the driver kicks the receive queue. A
// frame longer than the chain is dropped and counted; the chain is reused.
//
// Threading: see VirtioDevice. The device's asio handlers run on the event
// loop `events` and take the transport's lock. The device must be destroyed
// while `events` is not running handlers (e.g. before the io_context, in the
// same thread that runs it); handlers left queued then do nothing.
#pragma once

#include <sys/uio.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "devices/virtio/net/held_output.h"
#include "devices/virtio/net/mac_address.h"
#include "devices/virtio/net/tap_device.h"
#include "devices/virtio/net/virtio_net.h"
#include "devices/virtio/queue/virtio_device.h"
#include "proto/vm_config.pb.h"

namespace keel::virtio {

// Counters, for tests and the operator.
struct NetStats {
  uint64_t tx_frames = 0;
  uint64_t tx_bytes = 0;  // Ethernet frames' bytes, without virtio-net's header
  uint64_t rx_bytes = 0;
  uint64_t tx_errors = 0;       // frames the tap refused (malformed Ethernet/GSO): dropped
  uint64_t tx_would_block = 0;  // writes that met EAGAIN (the frame was kept and sent later)
  uint64_t rx_frames = 0;
  uint64_t rx_too_big = 0;         // frames longer than the receive buffer: dropped
  uint64_t rx_out_of_buffers = 0;  // times the receive queue ran dry and reading paused
  uint64_t tap_errors = 0;    // reads that failed for good (the tap went away): reading stopped
  uint64_t tx_held = 0;       // frames held for a replica epoch's acknowledgement (output commit)
  uint64_t tx_held_full = 0;  // times the held frames filled their store and transmit waited
};

class VirtioNetDevice : public VirtioDevice {
 public:
  // Attaches to config.tap, an existing tap interface (throws InputError,
  // see TapDevice). config.mac: 6 bytes, or empty for a random locally
  // administered address; any other length is refused.
  VirtioNetDevice(boost::asio::io_context& events, const state::v1::NetConfig& config);
  ~VirtioNetDevice() override;

  static constexpr uint16_t kQueueSize = 256;
  static constexpr uint64_t kOfferedFeatures = kNetFMac | kNetFStatus | kNetFCsum | kNetFGuestCsum |
                                               kNetFHostTso4 | kNetFHostTso6 | kNetFGuestTso4 |
                                               kNetFGuestTso6;
  // Frames written or read per round before the device lets the event loop
  // (or the vCPU that kicked) do something else.
  static constexpr unsigned kBurst = 256;

  uint16_t device_type() const override { return kDeviceTypeNet; }
  uint64_t device_features() const override { return kOfferedFeatures; }
  uint16_t num_queues() const override { return 2; }
  uint16_t max_queue_size() const override { return kQueueSize; }
  uint32_t config_size() const override;
  void config_read(uint32_t offset, std::span<uint8_t> data) override;
  void config_write(uint32_t offset, std::span<const uint8_t> data) override;
  void activate(GuestMemory& memory, std::vector<std::optional<SplitQueue>> queues,
                uint64_t features) override;
  void reset() override;
  void queue_notify(uint16_t queue) override;

  // Snapshot: the MAC. A receive chain the device holds waiting for a frame,
  // or a transmit chain the tap did not take yet (EAGAIN), is not saved as
  // taken: queue_state() gives the index before it, and the restored device
  // takes the chain again (the frame is sent then). restore_state() refuses
  // a MAC that is not 6 bytes or is multicast.
  std::optional<SplitQueueState> queue_state(uint16_t queue) const override;
  void save_state(state::v1::VirtioDeviceState& state) const override;
  void restore_state(const state::v1::VirtioDeviceState& state) override;

  // Five RARP frames from the guest's MAC (announce_frame.h) straight into
  // the tap, 50 ms apart and then 100 ms more each time, as QEMU does: one
  // lost frame does not leave a bridge pointing at the old port.
  void announce() override;
  // Saving: stops reading and writing the tap (frames wait in the tap's
  // queue, as on a wire during the pause) until resume(). A restored
  // device works at once: its transport holds the interrupts
  // (VirtioPciDevice::release_interrupts).
  void quiesce() override;
  void resume() override;
  void hold_output(bool held) override;
  void on_output_held(std::function<void()> hook) override { output_held_ = std::move(hook); }
  void close_output_epoch(uint64_t epoch) override;
  void release_output(uint64_t epoch) override;
  static constexpr unsigned kAnnounceFrames = 5;
  // Frames held for output commit, at most (a few epochs of a busy link).
  static constexpr size_t kHeldOutputBytes = 16 << 20;

  const MacAddress& mac() const { return mac_; }
  TapDevice& tap() { return tap_; }
  // Take the transport's lock around these when the event loop is running.
  const NetStats& stats() const { return stats_; }
  Counters counters() const override;
  // Why the device last asked for a reset (empty if it never did).
  const std::string& last_error() const { return last_error_; }

 private:
  // All of these run with the transport's lock held.
  void process_tx();
  // Held frames that may leave (all of them once holding ended) to the
  // tap, until it refuses more (then again when it turns writable).
  void send_held();
  void count_sent(size_t written);
  void process_rx();
  void wait_writable();
  void wait_readable();
  void build_iovecs(const DescriptorChain& chain, bool writable);
  uint64_t build_rx_iovecs(const DescriptorChain& chain);
  void finish_rx_header();
  void mark_received(const DescriptorChain& chain, uint64_t bytes);
  void fail(const std::string& why);
  void stop();
  // Wraps `body` for the event loop: it runs under the transport's lock, and
  // not at all once the device is gone or was stopped since.
  template <typename F>
  auto guarded(F body);

  SplitQueue* queue(uint16_t index) {
    return index < queues_.size() && queues_[index] ? &*queues_[index] : nullptr;
  }

  boost::asio::io_context& events_;
  TapDevice tap_;
  MacAddress mac_;
  boost::asio::posix::stream_descriptor watch_;  // a dup of the tap's fd, for waiting

  GuestMemory* memory_ = nullptr;
  std::vector<std::optional<SplitQueue>> queues_;
  bool active_ = false;
  uint64_t generation_ = 0;  // bumped by every stop: handlers of an older one do nothing
  std::shared_ptr<int> alive_ = std::make_shared<int>(0);
  void send_announce(unsigned sent);
  boost::asio::steady_timer announce_timer_;

  std::optional<DescriptorChain> tx_pending_;  // popped, not yet taken by the tap
  bool tx_waiting_ = false;                    // a wait for writable (or a next round) is pending
  std::optional<DescriptorChain> rx_chain_;    // the buffers the next frame goes to
  bool rx_waiting_ = false;                    // a wait for readable (or a next round) is pending
  bool rx_starved_ = false;                    // queue empty: reading paused until a kick
  bool tap_failed_ = false;                    // reading failed for good
  bool guest_csum_ = false;                    // VIRTIO_NET_F_GUEST_CSUM negotiated
  bool quiesced_ = false;                      // saved: no guest memory touched until resume()
  HeldOutput held_{kHeldOutputBytes};
  bool holding_ = false;         // hold_output(true) until hold_output(false)
  uint64_t released_epoch_ = 0;  // release_output's latest
  bool held_waiting_ = false;    // the tap refused a held frame: a wait for writable is pending
  bool tx_blocked_ = false;      // the held store was full: transmit waits for a release
  bool epoch_output_ = false;    // the epoch under way has a held frame
  std::function<void()> output_held_;
  std::vector<iovec> iov_;
  uint8_t overflow_byte_ = 0;
  NetStats stats_;
  std::string last_error_;
};

}  // namespace keel::virtio
