// virtio-rng, the entropy device (virtio 1.x, 5.4): one queue of
// device-writable buffers, filled from the host's getrandom().
#pragma once

#include <boost/asio/io_context.hpp>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "devices/virtio/queue/virtio_device.h"

namespace keel::virtio {

class VirtioRngDevice : public VirtioDevice {
 public:
  // Work left after a burst continues on `events` (the machine's event loop).
  explicit VirtioRngDevice(boost::asio::io_context& events) : events_(events) {}

  static constexpr uint16_t kQueueSize = 64;
  // Bytes given per chain at most: a guest asking for more gets a short
  // answer (5.4.6.1 only asks for one byte or more) and cannot make one kick
  // cost the host an unbounded amount of work.
  static constexpr uint32_t kMaxBytesPerChain = 64 * 1024;
  // Chains served per round: a guest that refills the queue as fast as it is
  // served gets the rest in later rounds on the event loop, so one kick
  // never holds the function's lock (and the thread) for long.
  static constexpr unsigned kBurst = 16;

  uint16_t device_type() const override { return kDeviceTypeEntropy; }
  uint64_t device_features() const override { return 0; }  // 5.4.3: none
  uint16_t num_queues() const override { return 1; }
  uint16_t max_queue_size() const override { return kQueueSize; }
  uint32_t config_size() const override { return 0; }  // 5.4.4: none
  void config_read(uint32_t, std::span<uint8_t>) override {}
  void config_write(uint32_t, std::span<const uint8_t>) override {}
  void activate(GuestMemory& memory, std::vector<std::optional<SplitQueue>> queues,
                uint64_t features) override;
  void reset() override;
  void queue_notify(uint16_t queue) override;

  // Snapshot: only the queue (chains are served as they are taken).
  std::optional<SplitQueueState> queue_state(uint16_t queue) const override;
  void save_state(state::v1::VirtioDeviceState& state) const override;
  void restore_state(const state::v1::VirtioDeviceState& state) override;

  uint64_t bytes_given() const { return bytes_given_; }
  Counters counters() const override { return {{"bytes", bytes_given_}}; }
  const std::string& last_error() const { return last_error_; }

 private:
  void process();
  void continue_later();
  uint32_t fill(const DescriptorChain& chain);
  void fail(const std::string& why);

  boost::asio::io_context& events_;
  std::shared_ptr<char> alive_ = std::make_shared<char>();
  uint32_t generation_ =
      0;  // bumped by reset and activate: a posted round for an old queue does nothing
  bool continuation_posted_ = false;
  GuestMemory* memory_ = nullptr;
  std::optional<SplitQueue> queue_;
  uint64_t bytes_given_ = 0;
  std::string last_error_;
};

}  // namespace keel::virtio
