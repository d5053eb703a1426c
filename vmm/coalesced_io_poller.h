// Applies the writes KVM queued in its coalesced I/O ring while the guest
// makes no exit that would apply them: a guest that prints a line to COM1
// and then computes or spins must still have its line seen. Runs on the
// event loop: every millisecond while writes keep coming, backing off to
// kIdlePeriod while the ring stays empty (an idle VM costs ~30 wake-ups a
// second, not a thousand).
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <exception>
#include <functional>

#include "devices/pc/io_bus.h"
#include "vmm/kvm/coalesced_io.h"

namespace keel {

class CoalescedIoPoller {
 public:
  static constexpr std::chrono::milliseconds kBusyPeriod{1};
  static constexpr std::chrono::milliseconds kIdlePeriod{32};

  // `failed`: a device the writes reached threw (the poller stops; the
  // machine decides what that means), called on the event loop.
  using Failed = std::function<void(const std::exception&)>;

  CoalescedIoPoller(boost::asio::io_context& events, kvm::CoalescedIo& ring, IoBus& bus,
                    Failed failed);
  // Both on the event loop's thread (or before it runs).
  void start();
  void stop();

 private:
  void arm();

  boost::asio::steady_timer timer_;
  kvm::CoalescedIo& ring_;
  IoBus& bus_;
  Failed failed_;
  std::chrono::milliseconds period_ = kBusyPeriod;
  bool running_ = false;
};

}  // namespace keel
