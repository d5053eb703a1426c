#include "vmm/coalesced_io_poller.h"

#include <algorithm>
#include <utility>

namespace keel {

CoalescedIoPoller::CoalescedIoPoller(boost::asio::io_context& events, kvm::CoalescedIo& ring,
                                     IoBus& bus, Failed failed)
    : timer_(events), ring_(ring), bus_(bus), failed_(std::move(failed)) {}

void CoalescedIoPoller::start() {
  if (running_) return;
  running_ = true;
  period_ = kBusyPeriod;
  arm();
}

void CoalescedIoPoller::stop() {
  running_ = false;
  timer_.cancel();
}

void CoalescedIoPoller::arm() {
  timer_.expires_after(period_);
  timer_.async_wait([this](const boost::system::error_code& ec) {
    if (ec || !running_) return;
    size_t taken = 0;
    try {
      taken = ring_.drain(bus_);
    } catch (const std::exception& e) {
      running_ = false;
      failed_(e);
      return;
    }
    period_ = taken > 0 ? kBusyPeriod : std::min(period_ * 2, kIdlePeriod);
    arm();
  });
}

}  // namespace keel
