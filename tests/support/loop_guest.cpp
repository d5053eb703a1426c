#include "tests/support/loop_guest.h"

#include <linux/kvm.h>

#include <chrono>
#include <stdexcept>

#include "vmm/boot/memory_layout.h"
#include "vmm/boot/page_tables.h"
#include "vmm/boot/x86_boot.h"

namespace keel::testing {
namespace {

constexpr uint64_t kCode = 0x1000;
constexpr uint64_t kPageTables = 0x10000;  // six pages (page_tables.h)

// rcx = rsi pages from rdi, rdx apart: increment a qword in each, report
// the pass on the port, again.
constexpr uint8_t kGuestLoop[] = {
    0x48, 0x89,           0xf1,  // mov rcx, rsi
    0x48, 0x89,           0xf8,  // mov rax, rdi
    0x48, 0xff,           0x00,  // inc qword [rax]
    0x48, 0x01,           0xd0,  // add rax, rdx
    0x48, 0xff,           0xc9,  // dec rcx
    0x75, 0xf5,                  // jnz the inc
    0xe6, kLoopGuestPort,        // out port, al
    0xeb, 0xe9,                  // jmp to the start
};

}  // namespace

LoopGuest::LoopGuest(const LoopGuestShape& shape)
    : kvm(kvm::System::open()), vm(kvm.create_vm()), memory(shape.regions) {
  vm.set_tss_address(layout::kKvmTss);
  vm.set_identity_map_address(layout::kKvmIdentityMap);
  for (size_t i = 0; i < memory.regions().size(); ++i) {
    const GuestRegion& r = memory.regions()[i];
    vm.set_memory_slot(static_cast<uint32_t>(i), r.guest_phys, r.size,
                       memory.host_base() + r.file_offset);
  }
  vm.create_irqchip();
  if (shape.ring_bytes) vm.enable_dirty_ring(shape.ring_bytes);
  vcpu.emplace(vm.create_vcpu(0));
  memory.write(kCode, kGuestLoop);
  const uint64_t cr3 = write_identity_page_tables(memory, kPageTables);
  vcpu->set_cpuid(kvm.supported_cpuid());
  set_boot_vcpu_state(*vcpu, BootEntry{true, kCode, 0, 0, cr3});
  kvm_regs regs = vcpu->get_regs();
  regs.rdi = shape.first;
  regs.rsi = shape.pages;
  regs.rdx = shape.stride;
  vcpu->set_regs(regs);
}

RunningGuest::RunningGuest(kvm::Vcpu& vcpu, std::function<void()> on_ring_full)
    : vcpu_(vcpu), on_ring_full_(std::move(on_ring_full)), thread_([this] { run(); }) {}

RunningGuest::~RunningGuest() {
  stop();
}

bool RunningGuest::wait_passes(uint64_t from, uint64_t n) {
  std::unique_lock lock(mutex_);
  return changed_.wait_for(lock, std::chrono::seconds(120), [&] {
    return passes_.load() >= from + n || !error_.empty();
  }) && error_.empty();
}

std::string RunningGuest::stop() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
  return error();
}

std::string RunningGuest::error() const {
  std::lock_guard lock(mutex_);
  return error_;
}

void RunningGuest::run() {
  while (!stop_) {
    if (!vcpu_.enter()) continue;
    const kvm_run* run = vcpu_.run();
    std::string error;
    if (run->exit_reason == KVM_EXIT_IO && run->io.port == kLoopGuestPort) {
      ++passes_;
    } else if (run->exit_reason == KVM_EXIT_DIRTY_RING_FULL && on_ring_full_) {
      ++ring_full_;
      on_ring_full_();
      continue;
    } else {
      error = "unexpected exit " + std::to_string(run->exit_reason);
    }
    std::lock_guard lock(mutex_);
    if (!error.empty()) {
      error_ = error;
      stop_ = true;
    }
    changed_.notify_all();
  }
}

}  // namespace keel::testing
