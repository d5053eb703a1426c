#include "devices/virtio/net/virtio_net_device.h"

#include <fcntl.h>
#include <linux/if_tun.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/post.hpp>
#include <cerrno>
#include <climits>
#include <cstring>

#include "common/error.h"
#include "common/state_check.h"
#include "devices/virtio/net/announce_frame.h"
#include "proto/device_state.pb.h"

namespace keel::virtio {

namespace {

int dup_fd(int fd) {
  int copy = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
  if (copy < 0) throw_errno("dup tap fd");
  return copy;
}

// The tap's receive offloads for what the driver accepted (5.1.3.1: the TSO
// features depend on GUEST_CSUM; the tap ignores TSO bits without CSUM).
unsigned tun_offload_for(uint64_t features) {
  unsigned flags = 0;
  if (features & kNetFGuestCsum) {
    flags |= TUN_F_CSUM;
    if (features & kNetFGuestTso4) flags |= TUN_F_TSO4;
    if (features & kNetFGuestTso6) flags |= TUN_F_TSO6;
  }
  return flags;
}

MacAddress mac_from_config(const state::v1::NetConfig& config) {
  const std::string& bytes = config.mac();
  if (bytes.empty()) return random_local_mac_address();
  if (bytes.size() != 6) {
    throw InputError("network adapter on tap " + config.tap() +
                     ": a MAC address has 6 bytes, not " + std::to_string(bytes.size()));
  }
  MacAddress mac;
  std::copy(bytes.begin(), bytes.end(), mac.begin());
  return mac;
}

}  // namespace

VirtioNetDevice::VirtioNetDevice(boost::asio::io_context& events,
                                 const state::v1::NetConfig& config)
    : events_(events),
      tap_(config.tap()),
      mac_(mac_from_config(config)),
      watch_(events, dup_fd(tap_.fd())),
      announce_timer_(events) {}

VirtioNetDevice::~VirtioNetDevice() {
  // Handlers still queued see the token gone and do nothing.
  alive_.reset();
}

template <typename F>
auto VirtioNetDevice::guarded(F body) {
  return [this, alive = std::weak_ptr<int>(alive_), generation = generation_, body]() {
    if (alive.expired()) return;
    std::lock_guard guard(transport_->lock());
    if (generation != generation_) return;
    body();
  };
}

// --- announce (after a live migration) --------------------------------------

void VirtioNetDevice::announce() {
  boost::asio::post(events_, [this, alive = std::weak_ptr<int>(alive_)] {
    if (!alive.expired()) send_announce(0);
  });
}

// On the event loop; tap_ and mac_ never change, so no lock. A frame the
// tap does not take (full, or no carrier) is lost like any other: the next
// one follows.
void VirtioNetDevice::send_announce(unsigned sent) {
  std::vector<uint8_t> frame = rarp_announce_frame(mac_);
  uint8_t header[kNetHdrSize] = {};  // no offloads
  iovec iov[2] = {{header, sizeof header}, {frame.data(), frame.size()}};
  (void)!::writev(tap_.fd(), iov, 2);
  if (++sent == kAnnounceFrames) return;
  announce_timer_.expires_after(std::chrono::milliseconds(50 + 100 * (sent - 1)));
  announce_timer_.async_wait(
      [this, sent, alive = std::weak_ptr<int>(alive_)](const boost::system::error_code& ec) {
        if (!ec && !alive.expired()) send_announce(sent);
      });
}

// --- configuration (5.1.4) ------------------------------------------------

uint32_t VirtioNetDevice::config_size() const {
  return kNetConfigSize;
}

void VirtioNetDevice::config_read(uint32_t offset, std::span<uint8_t> data) {
  uint8_t config[kNetConfigSize] = {};
  std::memcpy(config + kNetConfigMac, mac_.data(), mac_.size());
  const uint16_t status = kNetSLinkUp;
  const uint16_t pairs = 1;
  std::memcpy(config + kNetConfigStatus, &status, 2);
  std::memcpy(config + kNetConfigMaxVirtqueuePairs, &pairs, 2);
  std::memcpy(data.data(), config + offset, data.size());
}

// 5.1.4.2: a 1.x driver writes none of the fields (the MAC is read-only
// without legacy or CTRL_MAC_ADDR): writes are ignored.
void VirtioNetDevice::config_write(uint32_t, std::span<const uint8_t>) {}

// --- life cycle -----------------------------------------------------------

void VirtioNetDevice::activate(GuestMemory& memory, std::vector<std::optional<SplitQueue>> queues,
                               uint64_t features) {
  tap_.set_offload(tun_offload_for(features));
  memory_ = &memory;
  queues_ = std::move(queues);
  queues_.resize(num_queues());
  guest_csum_ = (features & kNetFGuestCsum) != 0;
  active_ = true;
  // The driver may have posted receive buffers and frames before DRIVER_OK.
  rx_starved_ = true;
  process_rx();
  process_tx();
}

void VirtioNetDevice::stop() {
  quiesced_ = false;
  ++generation_;
  boost::system::error_code ignored;
  watch_.cancel(ignored);
  active_ = false;
  tx_pending_.reset();
  tx_waiting_ = false;
  tx_blocked_ = false;
  held_waiting_ = false;  // held frames stay held: sent at the next release
  rx_chain_.reset();
  rx_waiting_ = false;
  rx_starved_ = false;
  tap_failed_ = false;
}

// The chains held (rx_chain_, tx_pending_) stay held: the saved queue state
// gives them back (queue_state), and resume() carries on with them here.
void VirtioNetDevice::quiesce() {
  quiesced_ = true;
  ++generation_;  // waits and rounds already queued do nothing
  boost::system::error_code ignored;
  watch_.cancel(ignored);
  tx_waiting_ = false;
  rx_waiting_ = false;
  held_waiting_ = false;
}

void VirtioNetDevice::resume() {
  if (!quiesced_) return;
  quiesced_ = false;
  process_rx();
  send_held();
  process_tx();
}

void VirtioNetDevice::reset() {
  stop();
  queues_.clear();
  memory_ = nullptr;
  guest_csum_ = false;
  try {
    tap_.set_offload(0);
  } catch (const std::exception&) {
    // Only fails if the tap is gone; the next activation reports it.
  }
}

VirtioDevice::Counters VirtioNetDevice::counters() const {
  return {{"tx_frames", stats_.tx_frames},
          {"tx_bytes", stats_.tx_bytes},
          {"rx_bytes", stats_.rx_bytes},
          {"tx_errors", stats_.tx_errors},
          {"tx_would_block", stats_.tx_would_block},
          {"rx_frames", stats_.rx_frames},
          {"rx_too_big", stats_.rx_too_big},
          {"rx_out_of_buffers", stats_.rx_out_of_buffers},
          {"tap_errors", stats_.tap_errors},
          {"tx_held", stats_.tx_held},
          {"tx_held_full", stats_.tx_held_full},
          {"tx_held_now", held_.frames()}};
}

// 2.1.2: a driver that breaks a queue gets DEVICE_NEEDS_RESET; the chains
// the device holds go back with the reset, not through the used ring.
void VirtioNetDevice::fail(const std::string& why) {
  stop();
  queues_.clear();
  last_error_ = why;
  transport_->needs_reset(why);
}

void VirtioNetDevice::queue_notify(uint16_t queue) {
  if (!active_) return;
  if (queue == kNetTxQueue) process_tx();
  // A receive kick matters only when the device ran out of buffers; the
  // rest of the time its notifications are off and reading goes on.
  if (queue == kNetRxQueue && rx_starved_) process_rx();
}

// --- guest buffers ----------------------------------------------------------

// The chain's readable (transmit) or writable (receive) buffers as host
// iovecs. Writable ones come through host_range_for_io: the tap's read
// writes guest memory, and mark_received marks what it wrote once it is
// there. The chain was checked against guest RAM when it was popped, so
// neither call throws.
void VirtioNetDevice::build_iovecs(const DescriptorChain& chain, bool writable) {
  iov_.clear();
  for (const ChainSegment& s : chain.segments) {
    if (s.writable != writable || s.len == 0) continue;
    void* base = writable ? static_cast<void*>(memory_->host_range_for_io(s.gpa, s.len))
                          : const_cast<uint8_t*>(memory_->host_range(s.gpa, s.len));
    iov_.push_back({base, s.len});
  }
}

// A tap read cuts a frame longer than the buffers short without saying so
// (it returns what it copied): one byte of host memory after the guest's
// buffers tells. readv takes at most IOV_MAX buffers, so a chain of that many
// gives up its last one. Returns the guest bytes the iovecs cover.
uint64_t VirtioNetDevice::build_rx_iovecs(const DescriptorChain& chain) {
  build_iovecs(chain, true);
  if (iov_.size() >= IOV_MAX) iov_.resize(IOV_MAX - 1);
  uint64_t room = 0;
  for (const iovec& v : iov_) room += v.iov_len;
  iov_.push_back({&overflow_byte_, 1});
  return room;
}

// Marks the first `bytes` of the chain's writable buffers dirty, in the
// order the iovecs covered them, after the data is in place.
void VirtioNetDevice::mark_received(const DescriptorChain& chain, uint64_t bytes) {
  for (const ChainSegment& s : chain.segments) {
    if (bytes == 0) break;
    if (!s.writable || s.len == 0) continue;
    const uint64_t n = std::min<uint64_t>(s.len, bytes);
    memory_->mark_dirty(s.gpa, n);
    bytes -= n;
  }
}

// 5.1.6.4.1: without MRG_RXBUF num_buffers is 1 (the tap skips that field),
// and without GUEST_CSUM flags are 0 (the tap may set DATA_VALID). The
// header may straddle buffers; iov_ still describes the chain just read.
void VirtioNetDevice::finish_rx_header() {
  uint8_t fix[kNetHdrSize];
  size_t copied = 0;
  for (const iovec& v : iov_) {
    const size_t n = std::min(v.iov_len, sizeof fix - copied);
    std::memcpy(fix + copied, v.iov_base, n);
    copied += n;
    if (copied == sizeof fix) break;
  }
  const uint16_t one = 1;
  std::memcpy(fix + kNetHdrNumBuffersOffset, &one, sizeof one);
  if (!guest_csum_) fix[0] = 0;
  copied = 0;
  for (const iovec& v : iov_) {
    const size_t n = std::min(v.iov_len, sizeof fix - copied);
    std::memcpy(v.iov_base, fix + copied, n);
    copied += n;
    if (copied == sizeof fix) break;
  }
}

// --- transmit (5.1.6.2) -----------------------------------------------------

void VirtioNetDevice::process_tx() {
  SplitQueue* q = queue(kNetTxQueue);
  if (!active_ || quiesced_ || !q || tx_waiting_) return;
  bool pushed = false;
  try {
    // No kicks while the device is working through the queue (2.7.7.1).
    q->disable_notification();
    for (unsigned budget = kBurst;;) {
      if (!tx_pending_) {
        if (budget == 0) {
          // Fairness: the rest in a later round on the event loop, kicks
          // still off.
          tx_waiting_ = true;
          boost::asio::post(events_, guarded([this] {
                              tx_waiting_ = false;
                              process_tx();
                            }));
          break;
        }
        tx_pending_ = q->next_chain();  // empty: kicks back on
        if (!tx_pending_) break;
        --budget;
        // 5.1.6.2: a transmit chain is the header and the frame, all
        // device-readable.
        if (tx_pending_->writable_bytes != 0) {
          return fail("virtio-net: device-writable buffer in a transmit chain");
        }
        if (tx_pending_->readable_bytes < kNetHdrSize) {
          return fail("virtio-net: transmit chain shorter than the header");
        }
      }
      build_iovecs(*tx_pending_, false);
      if (holding_) {
        // Output commit: the frame leaves once the passive has its epoch.
        const size_t bytes = tx_pending_->readable_bytes;
        if (!held_.has_room(bytes)) {
          ++stats_.tx_held_full;
          tx_blocked_ = true;  // release_output goes on from here
          break;
        }
        held_.add(iov_, bytes);
        ++stats_.tx_held;
        if (!epoch_output_) {
          epoch_output_ = true;
          if (output_held_) output_held_();
        }
        q->push_used(tx_pending_->head, 0);
        tx_pending_.reset();
        pushed = true;
        continue;
      }
      if (held_.frames() != 0) {
        // Holding ended: what it kept goes first, in order.
        send_held();
        if (held_.frames() != 0) break;  // the tap is full; send_held waits for it
      }
      const ssize_t n = ::writev(tap_.fd(), iov_.data(), static_cast<int>(iov_.size()));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        // The host is full: keep the frame and its chain, go on when the
        // tap takes writes again.
        ++stats_.tx_would_block;
        wait_writable();
        break;
      }
      // A frame the tap refuses (bad Ethernet length, bad GSO header) is
      // dropped: the guest gets its buffers back, as a NIC would.
      if (n < 0) {
        ++stats_.tx_errors;
      } else {
        count_sent(static_cast<size_t>(n));
      }
      q->push_used(tx_pending_->head, 0);
      tx_pending_.reset();
      pushed = true;
    }
    if (pushed && q->should_notify()) transport_->queue_interrupt(kNetTxQueue);
  } catch (const VirtqueueError& e) {
    fail(std::string("virtio-net transmit queue: ") + e.what());
  }
}

void VirtioNetDevice::hold_output(bool held) {
  if (held == holding_) return;
  holding_ = held;
  if (held) {
    // Epoch numbers start again with each replication.
    released_epoch_ = 0;
    held_.restart();
    return;
  }
  // Replication ended: everything held leaves, then transmit goes on as
  // before.
  held_.release_all([](std::span<const uint8_t>) { return false; });  // marks them all due
  send_held();
  if (tx_blocked_) {
    tx_blocked_ = false;
    process_tx();
  }
}

void VirtioNetDevice::close_output_epoch(uint64_t epoch) {
  held_.close_epoch(epoch);
  epoch_output_ = false;
}

void VirtioNetDevice::release_output(uint64_t epoch) {
  if (epoch > released_epoch_) released_epoch_ = epoch;
  send_held();
  if (tx_blocked_ && held_.has_room(kHeldOutputBytes / 2)) {
    tx_blocked_ = false;
    process_tx();
  }
}

// What the tap took: virtio-net's header, then the frame.
void VirtioNetDevice::count_sent(size_t written) {
  ++stats_.tx_frames;
  stats_.tx_bytes += written - std::min<size_t>(written, kNetHdrSize);
}

void VirtioNetDevice::send_held() {
  if (held_waiting_) return;  // the tap's writable wait goes on with it
  held_.release(released_epoch_, [this](std::span<const uint8_t> frame) {
    for (;;) {
      const ssize_t n = ::write(tap_.fd(), frame.data(), frame.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        ++stats_.tx_would_block;
        held_waiting_ = true;
        watch_.async_wait(boost::asio::posix::stream_descriptor::wait_write,
                          [run = guarded([this] {
                             held_waiting_ = false;
                             send_held();
                             if (tx_blocked_ && held_.has_room(kHeldOutputBytes / 2)) {
                               tx_blocked_ = false;
                               process_tx();
                             }
                           })](const boost::system::error_code& ec) {
                            if (!ec) run();
                          });
        return false;
      }
      if (n < 0) {
        ++stats_.tx_errors;
      } else {
        count_sent(static_cast<size_t>(n));
      }
      return true;
    }
  });
}

void VirtioNetDevice::wait_writable() {
  tx_waiting_ = true;
  watch_.async_wait(boost::asio::posix::stream_descriptor::wait_write,
                    [run = guarded([this] {
                       tx_waiting_ = false;
                       process_tx();
                     })](const boost::system::error_code& ec) {
                      if (!ec) run();
                    });
}

// --- receive (5.1.6.3, 5.1.6.4) ---------------------------------------------

void VirtioNetDevice::process_rx() {
  SplitQueue* q = queue(kNetRxQueue);
  if (!active_ || quiesced_ || !q || rx_waiting_ || tap_failed_) return;
  bool pushed = false;
  try {
    if (rx_starved_) {
      // Buffers again: the device holds one chain at a time and takes the
      // next when it needs it, so no kicks are needed until it runs dry.
      rx_starved_ = false;
      q->disable_notification();
    }
    for (unsigned budget = kBurst;;) {
      if (!rx_chain_) {
        rx_chain_ = q->next_chain();
        if (!rx_chain_) {
          // Out of buffers: stop reading (frames wait in the tap's queue)
          // until the driver kicks.
          rx_starved_ = true;
          ++stats_.rx_out_of_buffers;
          break;
        }
        // 5.1.6.3: receive buffers are device-writable and hold at least
        // the header.
        if (rx_chain_->readable_bytes != 0) {
          return fail("virtio-net: device-readable buffer in a receive chain");
        }
        if (rx_chain_->writable_bytes < kNetHdrSize) {
          return fail("virtio-net: receive chain shorter than the header");
        }
      }
      if (budget == 0) {
        rx_waiting_ = true;
        boost::asio::post(events_, guarded([this] {
                            rx_waiting_ = false;
                            process_rx();
                          }));
        break;
      }
      const uint64_t room = build_rx_iovecs(*rx_chain_);
      if (room < kNetHdrSize) return fail("virtio-net: receive chain shorter than the header");
      const ssize_t n = ::readv(tap_.fd(), iov_.data(), static_cast<int>(iov_.size()));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        wait_readable();
        break;
      }
      if (n < 0) {
        // The tap was deleted under us (EBADFD) or worse: reading again
        // would spin. The guest's link stays quiet until it resets.
        ++stats_.tap_errors;
        tap_failed_ = true;
        break;
      }
      --budget;
      // Without MRG_RXBUF a frame goes into one chain (5.1.6.4): a longer
      // one (it reached the overflow byte) is dropped, and the same chain
      // waits for the next.
      if (static_cast<uint64_t>(n) > room) {
        ++stats_.rx_too_big;
        mark_received(*rx_chain_, room);  // the buffers hold the frame's start
        continue;
      }
      finish_rx_header();
      mark_received(*rx_chain_, static_cast<uint64_t>(n));
      q->push_used(rx_chain_->head, static_cast<uint32_t>(n));
      rx_chain_.reset();
      ++stats_.rx_frames;
      stats_.rx_bytes += static_cast<uint64_t>(n) - std::min<uint64_t>(n, kNetHdrSize);
      pushed = true;
    }
    if (pushed && q->should_notify()) transport_->queue_interrupt(kNetRxQueue);
  } catch (const VirtqueueError& e) {
    fail(std::string("virtio-net receive queue: ") + e.what());
  }
}

void VirtioNetDevice::wait_readable() {
  rx_waiting_ = true;
  watch_.async_wait(boost::asio::posix::stream_descriptor::wait_read,
                    [run = guarded([this] {
                       rx_waiting_ = false;
                       process_rx();
                     })](const boost::system::error_code& ec) {
                      if (!ec) run();
                    });
}

// --- snapshot -------------------------------------------------------------

// The device holds at most one chain per queue, the last one it popped (it
// returns each before taking the next): giving it back is one index back.
std::optional<SplitQueueState> VirtioNetDevice::queue_state(uint16_t index) const {
  if (!active_ || index >= queues_.size() || !queues_[index]) return std::nullopt;
  SplitQueueState state = queues_[index]->state();
  const bool held = index == kNetRxQueue ? rx_chain_.has_value() : tx_pending_.has_value();
  if (held) --state.last_avail_idx;
  return state;
}

void VirtioNetDevice::save_state(state::v1::VirtioDeviceState& state) const {
  state.Clear();
  state.mutable_net()->set_mac(std::string(mac_.begin(), mac_.end()));
}

void VirtioNetDevice::restore_state(const state::v1::VirtioDeviceState& state) {
  if (!state.has_net()) refuse_state("virtio-net", "device", "holds no virtio-net state");
  const std::string& mac = state.net().mac();
  if (mac.size() != mac_.size()) refuse_state("virtio-net", "mac", "is not 6 bytes");
  if (mac[0] & 1) refuse_state("virtio-net", "mac", "is a multicast address");
  std::copy(mac.begin(), mac.end(), mac_.begin());
}

}  // namespace keel::virtio
