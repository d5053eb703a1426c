#include "devices/virtio/rng/virtio_rng_device.h"

#include <sys/random.h>

#include <algorithm>
#include <boost/asio/post.hpp>
#include <cerrno>
#include <system_error>

#include "common/error.h"
#include "common/state_check.h"
#include "proto/device_state.pb.h"

namespace keel::virtio {

void VirtioRngDevice::activate(GuestMemory& memory, std::vector<std::optional<SplitQueue>> queues,
                               uint64_t) {
  memory_ = &memory;
  queue_.reset();
  ++generation_;
  continuation_posted_ = false;
  if (!queues.empty() && queues[0]) queue_.emplace(std::move(*queues[0]));
  // The driver may have posted buffers before DRIVER_OK.
  process();
}

void VirtioRngDevice::reset() {
  ++generation_;
  continuation_posted_ = false;
  queue_.reset();
  memory_ = nullptr;
}

void VirtioRngDevice::queue_notify(uint16_t queue) {
  if (queue == 0) process();
}

void VirtioRngDevice::fail(const std::string& why) {
  queue_.reset();
  last_error_ = why;
  transport_->needs_reset(why);
}

// Random bytes straight into the chain's buffers, which come through
// host_range_for_write (the one write path into guest memory).
uint32_t VirtioRngDevice::fill(const DescriptorChain& chain) {
  uint32_t given = 0;
  for (const ChainSegment& s : chain.segments) {
    if (given == kMaxBytesPerChain) break;
    const uint32_t want = std::min(s.len, kMaxBytesPerChain - given);
    if (want == 0) continue;
    uint8_t* dest = memory_->host_range_for_write(s.gpa, want);
    uint32_t done = 0;
    while (done < want) {
      // Blocks only before the host's pool is first initialized, long
      // before a VMM runs; up to 256 bytes are never cut short by signals.
      const ssize_t n = ::getrandom(dest + done, want - done, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw_errno("getrandom");
      done += static_cast<uint32_t>(n);
    }
    given += want;
  }
  return given;
}

void VirtioRngDevice::process() {
  if (!queue_) return;
  bool pushed = false;
  try {
    // 2.7.10: no kicks while serving (SplitQueue::next_chain).
    queue_->disable_notification();
    for (unsigned budget = kBurst;; --budget) {
      if (budget == 0) {
        continue_later();  // notifications stay off until that round
        break;
      }
      std::optional<DescriptorChain> chain = queue_->next_chain();
      if (!chain) break;
      // 5.4.6: requests are device-writable buffers only.
      if (chain->readable_bytes != 0)
        return fail("virtio-rng: device-readable buffer in a request");
      if (chain->writable_bytes == 0) return fail("virtio-rng: request without room for a byte");
      const uint32_t given = fill(*chain);
      queue_->push_used(chain->head, given);
      bytes_given_ += given;
      pushed = true;
    }
    if (pushed && queue_->should_notify()) transport_->queue_interrupt(0);
  } catch (const VirtqueueError& e) {
    fail(std::string("virtio-rng queue: ") + e.what());
  } catch (const std::system_error& e) {
    fail(std::string("virtio-rng: ") + e.what());  // getrandom failed: host-side, stop cleanly
  }
}

void VirtioRngDevice::continue_later() {
  if (continuation_posted_) return;
  continuation_posted_ = true;
  boost::asio::post(events_, [this, alive = std::weak_ptr<char>(alive_), generation = generation_] {
    if (alive.expired()) return;
    std::lock_guard lock(transport_->lock());
    if (generation != generation_) return;  // reset since: that queue is gone
    continuation_posted_ = false;
    process();
  });
}

// --- snapshot -------------------------------------------------------------

std::optional<SplitQueueState> VirtioRngDevice::queue_state(uint16_t queue) const {
  if (queue != 0 || !queue_) return std::nullopt;
  return queue_->state();
}

void VirtioRngDevice::save_state(state::v1::VirtioDeviceState& state) const {
  state.Clear();
  state.mutable_rng();
}

void VirtioRngDevice::restore_state(const state::v1::VirtioDeviceState& state) {
  if (!state.has_rng()) refuse_state("virtio-rng", "device", "holds no virtio-rng state");
}

}  // namespace keel::virtio
