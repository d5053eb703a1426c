#include "vmm/state/vm_state_kvm.h"

#include <time.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "common/error.h"
#include "common/hex.h"
#include "common/log.h"

namespace keel {

namespace {

namespace pb = state::v1;

void check_size(const std::string& bytes, size_t expected, const char* what) {
  if (bytes.size() != expected) {
    throw InputError(std::string("VM state: ") + what + " is " + std::to_string(bytes.size()) +
                     " bytes, this host's KVM expects " + std::to_string(expected));
  }
}

template <typename T>
std::string blob(const T& value) {
  return std::string(reinterpret_cast<const char*>(&value), sizeof(T));
}

template <typename T>
T unblob(const std::string& bytes) {
  T value{};
  std::memcpy(&value, bytes.data(), std::min(bytes.size(), sizeof(T)));
  return value;
}

kvm_irqchip read_chip(const kvm::Vm& vm, uint32_t id) {
  kvm_irqchip chip{};
  chip.chip_id = id;
  vm.get_irqchip(chip);
  return chip;
}

// 8259A: the ICW sequence state machine has steps 0..3 (ICW1 to ICW4).
void check_pic(const kvm_pic_state& pic, const char* which) {
  if (pic.init_state > 3) {
    throw InputError(std::string("VM state: ") + which + " PIC init state " +
                     std::to_string(pic.init_state) + " (0-3)");
  }
}

}  // namespace

pb::IrqchipState capture_irqchip(const kvm::Vm& vm) {
  pb::IrqchipState state;
  state.set_pic_master(blob(read_chip(vm, KVM_IRQCHIP_PIC_MASTER).chip.pic));
  state.set_pic_slave(blob(read_chip(vm, KVM_IRQCHIP_PIC_SLAVE).chip.pic));
  state.set_ioapic(blob(read_chip(vm, KVM_IRQCHIP_IOAPIC).chip.ioapic));
  return state;
}

pb::PitState capture_pit(const kvm::Vm& vm) {
  pb::PitState state;
  state.set_pit2(blob(vm.get_pit2()));
  return state;
}

pb::ClockState capture_clock(const kvm::Vm& vm) {
  kvm_clock_data clock = vm.get_clock();
  pb::ClockState state;
  state.set_clock(clock.clock);
  state.set_flags(clock.flags);
  if (clock.flags & KVM_CLOCK_REALTIME) state.set_realtime(clock.realtime);
  if (clock.flags & KVM_CLOCK_HOST_TSC) state.set_host_tsc(clock.host_tsc);
  return state;
}

void validate_irqchip(const pb::IrqchipState& state) {
  check_size(state.pic_master(), sizeof(kvm_pic_state), "master PIC (struct kvm_pic_state)");
  check_size(state.pic_slave(), sizeof(kvm_pic_state), "slave PIC (struct kvm_pic_state)");
  check_size(state.ioapic(), sizeof(kvm_ioapic_state), "IOAPIC (struct kvm_ioapic_state)");
  check_pic(unblob<kvm_pic_state>(state.pic_master()), "master");
  check_pic(unblob<kvm_pic_state>(state.pic_slave()), "slave");
}

void validate_pit(const pb::PitState& state) {
  check_size(state.pit2(), sizeof(kvm_pit_state2), "PIT (struct kvm_pit_state2)");
  auto pit = unblob<kvm_pit_state2>(state.pit2());
  constexpr uint32_t kKnownFlags = KVM_PIT_FLAGS_HPET_LEGACY | KVM_PIT_FLAGS_SPEAKER_DATA_ON;
  if (pit.flags & ~kKnownFlags) throw InputError("VM state: unknown PIT flags " + hex(pit.flags));
  for (int i = 0; i < 3; ++i) {
    const kvm_pit_channel_state& ch = pit.channels[i];
    // 8254: modes 0-5 (KVM marks a channel never programmed with 0xff), a
    // 16-bit counter where 0 means 65536, access modes 0-3, read/write
    // states 0-4 (KVM's RW_STATE_*).
    constexpr uint8_t kUnprogrammed = 0xff;
    if ((ch.mode > 5 && ch.mode != kUnprogrammed) || ch.count > 0x10000 || ch.rw_mode > 3 ||
        ch.read_state > 4 || ch.write_state > 4) {
      throw InputError("VM state: PIT channel " + std::to_string(i) + " out of range (mode " +
                       std::to_string(ch.mode) + ", count " + std::to_string(ch.count) +
                       ", access " + std::to_string(ch.rw_mode) + ")");
    }
  }
}

void restore_irqchip(kvm::Vm& vm, const pb::IrqchipState& state) {
  validate_irqchip(state);
  kvm_irqchip chip{};
  chip.chip_id = KVM_IRQCHIP_PIC_MASTER;
  chip.chip.pic = unblob<kvm_pic_state>(state.pic_master());
  vm.set_irqchip(chip);
  chip = kvm_irqchip{};
  chip.chip_id = KVM_IRQCHIP_PIC_SLAVE;
  chip.chip.pic = unblob<kvm_pic_state>(state.pic_slave());
  vm.set_irqchip(chip);
  chip = kvm_irqchip{};
  chip.chip_id = KVM_IRQCHIP_IOAPIC;
  chip.chip.ioapic = unblob<kvm_ioapic_state>(state.ioapic());
  vm.set_irqchip(chip);
}

void restore_pit(kvm::Vm& vm, const pb::PitState& state) {
  validate_pit(state);
  vm.set_pit2(unblob<kvm_pit_state2>(state.pit2()));
}

void restore_clock(kvm::Vm& vm, const pb::ClockState& state, uint64_t advance_ns) {
  kvm_clock_data clock{};
  // No KVM_CLOCK_REALTIME: KVM would advance the clock by the wall time
  // since capture by its own reading; the caller decided how far it moves.
  clock.clock = state.clock() + advance_ns;
  vm.set_clock(clock);
}

uint64_t wall_time_in_transit(const pb::ClockState& state) {
  if (!state.advance_by_wall_time() || !(state.flags() & KVM_CLOCK_REALTIME)) return 0;
  timespec now{};
  ::clock_gettime(CLOCK_REALTIME, &now);
  const uint64_t now_ns =
      static_cast<uint64_t>(now.tv_sec) * 1000000000ull + static_cast<uint64_t>(now.tv_nsec);
  constexpr uint64_t kLongest = 600ull * 1000000000ull;
  if (state.realtime() > now_ns || now_ns - state.realtime() > kLongest) {
    log::warning(
        "the VM state's capture time is not within the last 10 minutes by this host's "
        "clock: the guest's clocks continue from the capture, behind by the transit");
    return 0;
  }
  return now_ns - state.realtime();
}

}  // namespace keel
