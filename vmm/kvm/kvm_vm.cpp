#include "vmm/kvm/kvm_vm.h"

#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include <algorithm>
#include <string>

#include "common/error.h"
#include "vmm/kvm/kvm_list.h"

namespace keel::kvm {

void Vm::set_memory_slot(uint32_t slot, uint64_t guest_phys, uint64_t size, const void* host,
                         uint32_t flags) {
  kvm_userspace_memory_region region{};
  region.slot = slot;
  region.flags = flags;
  region.guest_phys_addr = guest_phys;
  region.memory_size = size;
  region.userspace_addr = reinterpret_cast<uint64_t>(host);
  if (::ioctl(fd_.get(), KVM_SET_USER_MEMORY_REGION, &region) < 0) {
    throw_errno("KVM_SET_USER_MEMORY_REGION slot " + std::to_string(slot));
  }
  slots_[slot] = region;
}

void Vm::enable_manual_dirty_log_protect() {
  const int modes = check_extension(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2);
  if (!(modes & KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE)) {
    throw_errno(ENOTSUP, "KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 (dirty log with manual protect)");
  }
  kvm_enable_cap cap{};
  cap.cap = KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2;
  cap.args[0] =
      KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE;  // not INITIALLY_SET: a get reports writes only
  if (::ioctl(fd_.get(), KVM_ENABLE_CAP, &cap) < 0)
    throw_errno("KVM_ENABLE_CAP MANUAL_DIRTY_LOG_PROTECT2");
}

namespace {

// x86 publishes with acquire/release ordering under either capability;
// KVM_CAP_DIRTY_LOG_RING_ACQ_REL (Linux 5.17) says so explicitly.
long dirty_ring_cap(const Vm& vm) {
  return vm.check_extension(KVM_CAP_DIRTY_LOG_RING_ACQ_REL) > 0 ? KVM_CAP_DIRTY_LOG_RING_ACQ_REL
                                                                : KVM_CAP_DIRTY_LOG_RING;
}

}  // namespace

uint32_t Vm::dirty_ring_max_bytes() const {
  return static_cast<uint32_t>(std::max(check_extension(dirty_ring_cap(*this)), 0));
}

void Vm::enable_dirty_ring(uint32_t bytes) {
  const uint32_t max = dirty_ring_max_bytes();
  if (max == 0) throw_errno(ENOTSUP, "KVM_CAP_DIRTY_LOG_RING (the dirty ring)");
  if (bytes == 0 || (bytes & (bytes - 1)) != 0 || bytes > max) {
    throw InputError("dirty ring of " + std::to_string(bytes) + " bytes: a power of two up to " +
                     std::to_string(max) + " is needed");
  }
  kvm_enable_cap cap{};
  cap.cap = static_cast<uint32_t>(dirty_ring_cap(*this));
  cap.args[0] = bytes;
  if (::ioctl(fd_.get(), KVM_ENABLE_CAP, &cap) < 0) throw_errno("KVM_ENABLE_CAP DIRTY_LOG_RING");
  dirty_ring_bytes_ = bytes;
}

uint32_t Vm::reset_dirty_rings() {
  const int n = ::ioctl(fd_.get(), KVM_RESET_DIRTY_RINGS, 0);
  if (n < 0) throw_errno("KVM_RESET_DIRTY_RINGS");
  return static_cast<uint32_t>(n);
}

void Vm::set_dirty_logging(uint32_t slot, bool on) {
  const auto it = slots_.find(slot);
  if (it == slots_.end())
    throw_errno(EINVAL, "dirty logging on memory slot " + std::to_string(slot) + ", never set");
  kvm_userspace_memory_region region = it->second;
  region.flags =
      on ? (region.flags | KVM_MEM_LOG_DIRTY_PAGES) : (region.flags & ~KVM_MEM_LOG_DIRTY_PAGES);
  if (::ioctl(fd_.get(), KVM_SET_USER_MEMORY_REGION, &region) < 0) {
    throw_errno(std::string("KVM_SET_USER_MEMORY_REGION slot ") + std::to_string(slot) +
                (on ? ": dirty logging on" : ": dirty logging off"));
  }
  it->second = region;
}

void Vm::get_dirty_log(uint32_t slot, std::vector<uint64_t>& bitmap) const {
  const auto it = slots_.find(slot);
  if (it == slots_.end())
    throw_errno(EINVAL, "dirty log of memory slot " + std::to_string(slot) + ", never set");
  const uint64_t pages = it->second.memory_size / 4096;
  bitmap.resize((pages + 63) / 64);  // all of it written by KVM
  kvm_dirty_log log{};
  log.slot = slot;
  log.dirty_bitmap = bitmap.data();
  if (::ioctl(fd_.get(), KVM_GET_DIRTY_LOG, &log) < 0)
    throw_errno("KVM_GET_DIRTY_LOG slot " + std::to_string(slot));
}

void Vm::clear_dirty_log(uint32_t slot, uint64_t first_page, uint32_t pages,
                         const std::vector<uint64_t>& bitmap) {
  if (bitmap.size() * 64 < pages)
    throw_errno(EINVAL, "KVM_CLEAR_DIRTY_LOG: bitmap shorter than its pages");
  kvm_clear_dirty_log clear{};
  clear.slot = slot;
  clear.first_page = first_page;
  clear.num_pages = pages;
  clear.dirty_bitmap = const_cast<uint64_t*>(bitmap.data());  // KVM only reads it
  if (::ioctl(fd_.get(), KVM_CLEAR_DIRTY_LOG, &clear) < 0) {
    throw_errno("KVM_CLEAR_DIRTY_LOG slot " + std::to_string(slot));
  }
}

void Vm::set_tss_address(uint64_t address) {
  if (::ioctl(fd_.get(), KVM_SET_TSS_ADDR, static_cast<unsigned long>(address)) < 0) {
    throw_errno("KVM_SET_TSS_ADDR");
  }
}

void Vm::set_identity_map_address(uint64_t address) {
  __u64 addr = address;
  if (::ioctl(fd_.get(), KVM_SET_IDENTITY_MAP_ADDR, &addr) < 0) {
    throw_errno("KVM_SET_IDENTITY_MAP_ADDR");
  }
}

void Vm::create_irqchip() {
  if (::ioctl(fd_.get(), KVM_CREATE_IRQCHIP, 0) < 0) throw_errno("KVM_CREATE_IRQCHIP");
}

void Vm::create_pit2() {
  kvm_pit_config config{};
  // The PIT drives channel 2 through port 0x61 itself (speaker gate and
  // output), which Linux and the test guest use to calibrate the TSC.
  config.flags = KVM_PIT_SPEAKER_DUMMY;
  if (::ioctl(fd_.get(), KVM_CREATE_PIT2, &config) < 0) throw_errno("KVM_CREATE_PIT2");
}

void Vm::set_irq_line(uint32_t irq, bool level) {
  kvm_irq_level line{};
  line.irq = irq;
  line.level = level ? 1 : 0;
  if (::ioctl(fd_.get(), KVM_IRQ_LINE, &line) < 0) throw_errno("KVM_IRQ_LINE");
}

void Vm::get_irqchip(kvm_irqchip& chip) const {
  if (::ioctl(fd_.get(), KVM_GET_IRQCHIP, &chip) < 0) {
    throw_errno("KVM_GET_IRQCHIP chip " + std::to_string(chip.chip_id));
  }
}

void Vm::set_irqchip(const kvm_irqchip& chip) {
  if (::ioctl(fd_.get(), KVM_SET_IRQCHIP, &chip) < 0) {
    throw_errno("KVM_SET_IRQCHIP chip " + std::to_string(chip.chip_id));
  }
}

kvm_pit_state2 Vm::get_pit2() const {
  kvm_pit_state2 pit{};
  if (::ioctl(fd_.get(), KVM_GET_PIT2, &pit) < 0) throw_errno("KVM_GET_PIT2");
  return pit;
}

void Vm::set_pit2(const kvm_pit_state2& pit) {
  if (::ioctl(fd_.get(), KVM_SET_PIT2, &pit) < 0) throw_errno("KVM_SET_PIT2");
}

kvm_clock_data Vm::get_clock() const {
  kvm_clock_data clock{};
  if (::ioctl(fd_.get(), KVM_GET_CLOCK, &clock) < 0) throw_errno("KVM_GET_CLOCK");
  return clock;
}

void Vm::set_clock(const kvm_clock_data& clock) {
  if (::ioctl(fd_.get(), KVM_SET_CLOCK, &clock) < 0) throw_errno("KVM_SET_CLOCK");
}

int Vm::check_extension(long capability) const {
  int r = ::ioctl(fd_.get(), KVM_CHECK_EXTENSION, capability);
  return r < 0 ? 0 : r;
}

void Vm::set_gsi_routing(const std::vector<kvm_irq_routing_entry>& routes) {
  List<kvm_irq_routing_entry> list(routes);
  if (::ioctl(fd_.get(), kKvmSetGsiRouting, list.data()) < 0) throw_errno("KVM_SET_GSI_ROUTING");
}

void Vm::assign_irqfd(int eventfd, uint32_t gsi) {
  kvm_irqfd irqfd{};
  irqfd.fd = static_cast<uint32_t>(eventfd);
  irqfd.gsi = gsi;
  if (::ioctl(fd_.get(), KVM_IRQFD, &irqfd) < 0)
    throw_errno("KVM_IRQFD gsi " + std::to_string(gsi));
}

namespace {

void mmio_ioeventfd(int vm_fd, uint64_t address, uint32_t length, int eventfd, bool assign) {
  kvm_ioeventfd ioeventfd{};
  ioeventfd.addr = address;
  ioeventfd.len = length;
  ioeventfd.fd = eventfd;
  ioeventfd.flags = assign ? 0 : KVM_IOEVENTFD_FLAG_DEASSIGN;
  if (::ioctl(vm_fd, KVM_IOEVENTFD, &ioeventfd) < 0) {
    throw_errno(std::string("KVM_IOEVENTFD ") + (assign ? "assign" : "deassign") + " at " +
                std::to_string(address));
  }
}

}  // namespace

void Vm::assign_mmio_ioeventfd(uint64_t address, uint32_t length, int eventfd) {
  mmio_ioeventfd(fd_.get(), address, length, eventfd, true);
}

void Vm::deassign_mmio_ioeventfd(uint64_t address, uint32_t length, int eventfd) {
  mmio_ioeventfd(fd_.get(), address, length, eventfd, false);
}

Vcpu Vm::create_vcpu(uint32_t id) {
  int vcpu_fd = ::ioctl(fd_.get(), KVM_CREATE_VCPU, static_cast<unsigned long>(id));
  if (vcpu_fd < 0) throw_errno("KVM_CREATE_VCPU " + std::to_string(id));
  UniqueFd owned(vcpu_fd);
  auto run = MemoryMapping::map(vcpu_mmap_size_, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu_fd, 0,
                                "kvm_run");
  return Vcpu(id, std::move(owned), std::move(run));
}

}  // namespace keel::kvm
