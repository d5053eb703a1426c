#include "vmm/virtio_pci_function.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <exception>

#include "common/error.h"
#include "common/log.h"
#include "devices/pci/pci_config_space.h"

namespace keel {

namespace {

constexpr uint16_t kBar0 = 0x10;
constexpr uint16_t kBar1 = 0x14;
constexpr uint32_t kCommandMemory = 1u << 1;
constexpr uint32_t kCommandBusMaster = 1u << 2;

uint64_t doorbell(uint64_t bar, uint16_t queue) {
  return bar + virtio::VirtioPciDevice::kNotifyOffset +
         uint64_t{queue} * virtio::VirtioPciDevice::kNotifyOffMultiplier;
}

}  // namespace

VirtioPciFunction::VirtioPciFunction(const Wiring& wiring,
                                     std::unique_ptr<virtio::VirtioDevice> device,
                                     uint64_t bar_address)
    : vm_(wiring.vm),
      ioeventfd_length_(wiring.ioeventfd_length),
      device_(std::move(device)),
      msi_(wiring.vm, wiring.router, static_cast<uint16_t>(device_->num_queues() + 1)),
      transport_(*device_, wiring.memory, msi_, {wiring.intx, wiring.needs_reset, wiring.io_error}),
      assigned_(device_->num_queues(), false) {
  for (uint16_t q = 0; q < device_->num_queues(); ++q) {
    int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fd < 0) throw_errno("eventfd for a virtio doorbell");
    doorbells_.emplace_back(wiring.events, fd);  // owns fd from here
  }
  transport_.config_write(kBar0, static_cast<uint32_t>(bar_address), 0xf);
  transport_.config_write(kBar1, static_cast<uint32_t>(bar_address >> 32), 0xf);
  transport_.config_write(PciConfigSpace::kCommand, kCommandMemory | kCommandBusMaster, 0x3);
  place_doorbells();
  for (uint16_t q = 0; q < device_->num_queues(); ++q) watch_doorbell(q);
}

VirtioPciFunction::~VirtioPciFunction() {
  std::lock_guard guard(placement_mutex_);
  for (size_t q = 0; q < doorbells_.size(); ++q) {
    if (!assigned_[q]) continue;
    try {
      vm_.deassign_mmio_ioeventfd(doorbell(placed_.address, static_cast<uint16_t>(q)),
                                  ioeventfd_length_, doorbells_[q].native_handle());
    } catch (const std::exception&) {
      // The VM goes away with its ioeventfds all the same.
    }
  }
}

uint32_t VirtioPciFunction::config_read(uint16_t offset) {
  return transport_.config_read(offset);
}

void VirtioPciFunction::config_write(uint16_t offset, uint32_t value, uint8_t byte_mask) {
  transport_.config_write(offset, value, byte_mask);
  place_doorbells();
}

// The doorbells follow BAR0. A placement KVM refuses (a guest that put two
// BARs on top of each other) leaves that doorbell on the MMIO-exit path,
// where the transport handles it the same way, only slower.
void VirtioPciFunction::place_doorbells() {
  std::lock_guard guard(placement_mutex_);
  const auto now = transport_.bar_placement();
  if (now == placed_) return;
  for (size_t q = 0; q < doorbells_.size(); ++q) {
    const int fd = doorbells_[q].native_handle();
    const auto queue = static_cast<uint16_t>(q);
    try {
      if (assigned_[q]) {
        vm_.deassign_mmio_ioeventfd(doorbell(placed_.address, queue), ioeventfd_length_, fd);
        assigned_[q] = false;
      }
      if (now.enabled) {
        vm_.assign_mmio_ioeventfd(doorbell(now.address, queue), ioeventfd_length_, fd);
        assigned_[q] = true;
      }
    } catch (const std::exception& e) {
      // Once: a guest moving its BAR around must not flood the log.
      if (!doorbell_warned_) {
        log::warning("virtio doorbell " + std::to_string(q) + " stays on MMIO exits: " + e.what());
        doorbell_warned_ = true;
      }
    }
  }
  placed_ = now;
}

void VirtioPciFunction::watch_doorbell(uint16_t queue) {
  doorbells_[queue].async_wait(
      boost::asio::posix::stream_descriptor::wait_read,
      [this, queue](const boost::system::error_code& ec) {
        if (ec) return;  // cancelled: the function is going away
        uint64_t kicks;
        if (::read(doorbells_[queue].native_handle(), &kicks, sizeof kicks) == sizeof kicks) {
          try {
            transport_.notify(queue);
          } catch (const std::exception& e) {
            // A device must turn guest errors into DEVICE_NEEDS_RESET; this
            // is a host-side failure, reported, and the VM goes on.
            queue_errors_.write(log::Level::kError,
                                "virtio queue " + std::to_string(queue) + ": " + e.what());
          }
        }
        watch_doorbell(queue);
      });
}

}  // namespace keel
