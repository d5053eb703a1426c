// A test stand-in for the transport a virtio device sits on: counts
// interrupts and reset requests, owns the function's lock.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>

#include "devices/virtio/queue/virtio_device.h"

namespace keel::virtio::testing {

class FakeTransport : public VirtioTransport {
 public:
  void queue_interrupt(uint16_t queue) override { ++interrupts[queue]; }
  void config_changed() override { ++config_changes; }
  void needs_reset(const std::string& why) override {
    ++needs_reset_calls;
    last_reason = why;
  }
  std::mutex& lock() override { return mutex; }

  std::map<uint16_t, int> interrupts;
  int config_changes = 0;
  int needs_reset_calls = 0;
  std::string last_reason;
  std::mutex mutex;
};

}  // namespace keel::virtio::testing
