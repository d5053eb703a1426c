// Machine, part five: the migratable seam (vmm/migratable_machine.h) that
// snapshots, live migration and replicas share.
#include <chrono>

#include "common/error.h"
#include "vmm/machine.h"
#include "vmm/state/cpu_features.h"
#include "vmm/state/kvm_state_caps.h"
#include "vmm/state/vcpu_state.h"
#include "vmm/state/vm_state_kvm.h"
#include "vmm/virtio_devices.h"

namespace keel {

namespace st = ::keel::state::v1;

namespace {

st::VmConfig config_of(const VmmOptions& o) {
  st::VmConfig c;
  c.set_kernel(o.kernel);
  c.set_initrd(o.initrd);
  c.set_cmdline(o.cmdline);
  c.set_cpus(o.cpus);
  c.set_memory(o.memory);
  for (const auto& d : o.disks) {
    auto* disk = c.add_disks();
    disk->set_path(d.path);
    disk->set_readonly(d.readonly);
  }
  for (const auto& n : o.nets) {
    auto* net = c.add_nets();
    net->set_tap(n.tap);
    const MacAddress mac = effective_mac(n);
    net->set_mac(std::string(mac.begin(), mac.end()));
  }
  c.set_rng(o.rng);
  return c;
}

}  // namespace

bool Machine::pause(std::chrono::milliseconds timeout) {
  if (pause_vcpus(timeout)) return true;
  resume_vcpus();
  return false;
}

void Machine::resume() {
  resume_vcpus();
}

const KvmStateCaps& Machine::state_caps() {
  if (!state_caps_) state_caps_ = KvmStateCaps::probe(kvm_, vm_);
  return *state_caps_;
}

std::unique_ptr<DirtyLog> Machine::start_dirty_log() {
  return std::make_unique<DirtyLog>(vm_, memory_);
}

// Devices first: quiescing may complete requests into guest memory and
// raise interrupts; then KVM's state, the clock last (the guest's time
// stops where the vCPUs stopped).
st::VmState Machine::capture_state() {
  st::VmState state;
  state.set_schema_version(kVmStateSchemaVersion);
  *state.mutable_config() = config_of(options_);
  state.set_created_unix_ms(
      static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                std::chrono::system_clock::now().time_since_epoch())
                                .count()));
  stateful_.save_all(*state.mutable_devices());

  const KvmStateCaps& caps = state_caps();
  std::vector<st::VcpuState*> vcpu_states;
  for (auto& vcpu : vcpus_) {
    *state.add_vcpus() = capture_vcpu_state(caps, vcpu);
    vcpu_states.push_back(state.mutable_vcpus(state.vcpus_size() - 1));
  }
  capture_tsc(vcpus_, vcpu_states);
  *state.mutable_irqchip() = capture_irqchip(vm_);
  *state.mutable_pit() = capture_pit(vm_);
  *state.mutable_cpu() = guest_cpu_features(caps, vcpus_[0]);
  *state.mutable_clock() = capture_clock(vm_);
  return state;
}

// The order: CPU features first (refuse before touching anything), devices
// (the virtio queues read their rings from the memory already in place),
// irqchip and PIT, the vCPUs (restore_vcpu_state keeps KVM's own order),
// the clock last, just before the vCPUs run.
void Machine::apply_state(const st::VmState& state) {
  if (state.schema_version() != kVmStateSchemaVersion) {
    throw InputError("state schema version " + std::to_string(state.schema_version()) +
                     " (this keel-vmm reads " + std::to_string(kVmStateSchemaVersion) + ")");
  }
  if (static_cast<size_t>(state.vcpus_size()) != vcpus_.size()) {
    throw InputError("state: " + std::to_string(state.vcpus_size()) +
                     " vCPU states, this machine has " + std::to_string(vcpus_.size()) + " vCPUs");
  }
  const KvmStateCaps& caps = state_caps();
  check_cpu_features(state.cpu(), caps);
  stateful_.restore_all(state.devices());

  validate_irqchip(state.irqchip());
  validate_pit(state.pit());
  for (size_t i = 0; i < vcpus_.size(); ++i)
    validate_vcpu_state(caps, vcpus_[i].id(), state.vcpus(static_cast<int>(i)));
  restore_irqchip(vm_, state.irqchip());
  restore_pit(vm_, state.pit());
  TscRestore tsc;
  for (size_t i = 0; i < vcpus_.size(); ++i) {
    restore_vcpu_state(caps, vcpus_[i], state.vcpus(static_cast<int>(i)), tsc);
  }
  restore_clock(vm_, state.clock());
}

}  // namespace keel
