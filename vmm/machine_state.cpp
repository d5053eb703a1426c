// Machine, part five: the migratable seam (vmm/migratable_machine.h) that
// snapshots, live migration and replicas share.
#include <boost/asio/post.hpp>
#include <chrono>

#include "common/error.h"
#include "common/log.h"
#include "vmm/boot/memory_layout.h"
#include "vmm/machine.h"
#include "vmm/state/cpu_features.h"
#include "vmm/state/kvm_state_caps.h"
#include "vmm/state/vcpu_state.h"
#include "vmm/state/vm_state_kvm.h"
#include "vmm/virtio_devices.h"
#include "vmm/virtio_pci_function.h"

namespace keel {

namespace st = ::keel::state::v1;

namespace {

// What the guest sees of a configuration: everything but the host's
// resources (files, taps) behind its devices.
void check_same_shape(const st::VmConfig& theirs, const st::VmConfig& ours) {
  auto refuse = [](const std::string& what, const std::string& state, const std::string& here) {
    throw InputError("state: " + what + " " + state + ", this machine has " + here);
  };
  if (theirs.cpus() != ours.cpus()) {
    refuse("vCPUs", std::to_string(theirs.cpus()), std::to_string(ours.cpus()));
  }
  if (theirs.memory() != ours.memory()) {
    refuse("memory", std::to_string(theirs.memory()), std::to_string(ours.memory()));
  }
  if (theirs.disks_size() != ours.disks_size()) {
    refuse("disks", std::to_string(theirs.disks_size()), std::to_string(ours.disks_size()));
  }
  for (int i = 0; i < ours.disks_size(); ++i) {
    const auto& a = theirs.disks(i);
    const auto& b = ours.disks(i);
    const std::string what = "disk " + std::to_string(i);
    if (a.readonly() != b.readonly()) {
      refuse(what, a.readonly() ? "read-only" : "writable",
             b.readonly() ? "read-only" : "writable");
    }
    if (a.serial() != b.serial())
      refuse(what + " serial", "\"" + a.serial() + "\"", "\"" + b.serial() + "\"");
  }
  if (theirs.nets_size() != ours.nets_size()) {
    refuse("network adapters", std::to_string(theirs.nets_size()),
           std::to_string(ours.nets_size()));
  }
  for (int i = 0; i < ours.nets_size(); ++i) {
    if (theirs.nets(i).mac() != ours.nets(i).mac()) {
      refuse("network adapter " + std::to_string(i), "with another MAC", "its own");
    }
  }
  if (theirs.rng() != ours.rng()) {
    refuse("entropy source", theirs.rng() ? "present" : "absent", ours.rng() ? "one" : "none");
  }
}

}  // namespace

bool Machine::pause(std::chrono::milliseconds timeout) {
  if (vcpus_->pause(timeout)) return true;
  vcpus_->resume();
  return false;
}

void Machine::request_pause(std::function<void()> parked) {
  vcpus_->request_pause(std::move(parked));
}

// Devices a capture quiesced take up their work before the vCPUs run.
void Machine::resume() {
  if (fence_passed()) {
    // Whoever resumes (a failed migration, a snapshot written): not while
    // the host is fenced; the guest stays paused, status says fenced.
    fenced_ = true;
    paused_by_fence_ = true;
    log::warning("fenced: the guest stays paused (the host's lease deadline passed " +
                 std::to_string(fence_->overdue_ms()) + " ms ago)");
    return;
  }
  paused_by_fence_ = false;
  for (const auto& function : devices_->virtio_functions()) function->resume_device();
  vcpus_->resume();
}

const KvmStateCaps& Machine::state_caps() {
  if (!state_caps_) state_caps_ = KvmStateCaps::probe(kvm_, vm_);
  return *state_caps_;
}

std::unique_ptr<kvm::DirtyLog> Machine::start_dirty_log() {
  return std::make_unique<kvm::DirtyLog>(vm_, memory_);
}

// Devices first: quiescing may complete requests into guest memory and
// raise interrupts; then KVM's state, the clock beside the TSCs.
st::VmState Machine::capture_state() {
  st::VmState state;
  state.set_schema_version(kVmStateSchemaVersion);
  *state.mutable_config() = config_;
  state.set_created_unix_ms(
      static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                std::chrono::system_clock::now().time_since_epoch())
                                .count()));
  // Writes the guest made before it stopped belong to the devices' state.
  if (coalesced_io_) coalesced_io_->drain(devices_->io_bus());
  devices_->stateful().save_all(*state.mutable_devices());
  *state.mutable_console() = console_.save();

  const KvmStateCaps& caps = state_caps();
  std::vector<st::VcpuState*> vcpu_states;
  for (auto& vcpu : vcpus_->all()) {
    *state.add_vcpus() = capture_vcpu_state(caps, vcpu);
    vcpu_states.push_back(state.mutable_vcpus(state.vcpus_size() - 1));
  }
  // The clock right after the TSCs: the pair keeps their distance (see
  // TscRestore::ns_since_reference).
  capture_tsc(vcpus_->all(), vcpu_states);
  *state.mutable_clock() = capture_clock(vm_);
  *state.mutable_irqchip() = capture_irqchip(vm_);
  *state.mutable_pit() = capture_pit(vm_);
  *state.mutable_cpu() = guest_cpu_features(caps, (*vcpus_)[0]);
  return state;
}

void Machine::check_shape_fits(const st::VmState& shape) {
  if (shape.schema_version() != kVmStateSchemaVersion) {
    throw InputError("state schema version " + std::to_string(shape.schema_version()) +
                     " (this keel-vmm reads " + std::to_string(kVmStateSchemaVersion) + ")");
  }
  check_same_shape(shape.config(), config_);
  check_cpu_features(shape.cpu(), state_caps());
}

void Machine::check_state_fits(const st::VmState& state) {
  check_shape_fits(state);
  if (static_cast<size_t>(state.vcpus_size()) != vcpus_->size()) {
    throw InputError("state: " + std::to_string(state.vcpus_size()) +
                     " vCPU states, this machine has " + std::to_string(vcpus_->size()) + " vCPUs");
  }
}

st::VmState Machine::shape() {
  st::VmState shape;
  shape.set_schema_version(kVmStateSchemaVersion);
  *shape.mutable_config() = config_;
  const KvmStateCaps& caps = state_caps();
  *shape.mutable_cpu() =
      cpu_features_of(caps.guest_sees_host_cpuid ? caps.offered_cpuid : boot_cpuid_,
                      static_cast<uint32_t>(caps.xsave_size), tsc_khz_);
  return shape;
}

// The capture and apply code once on scratch KVM objects (a VM with an
// irqchip and a PIT, a vCPU with the machine's CPUID): the same ioctls
// and state messages, each scratch object's state captured and applied
// back onto it. Under an emulated host a first run of code costs many
// times a later one (a capture in a fresh process: 5-10 ms instead of 1
// in the KVM test host), so a pause should never be that first run. The
// machine's own VM and vCPUs are not touched.
void Machine::rehearse_state() {
  const KvmStateCaps& caps = state_caps();
  // Not on PVM: the cold-code cost this saves is the emulated host's, and
  // there a scratch VM made beside the running guest costs that guest: the
  // outside-seen pause of a 1 GiB test guest was 5.5-6.4 ms with it, 3.7-4.1
  // without (keel-migbench, medians of 7). (A hang once blamed on it here
  // was the ten-hop test's own mistake.)
  if (caps.guest_tsc_is_host) return;
  kvm::Vm scratch = kvm_.create_vm();
  scratch.set_tss_address(layout::kKvmTss);
  scratch.set_identity_map_address(layout::kKvmIdentityMap);
  scratch.create_irqchip();
  scratch.create_pit2();
  std::vector<kvm::Vcpu> vcpus;
  vcpus.push_back(scratch.create_vcpu(0));
  vcpus[0].set_cpuid(boot_cpuid_);
  st::VmState state;
  std::vector<st::VcpuState*> vcpu_states{state.add_vcpus()};
  *vcpu_states[0] = capture_vcpu_state(caps, vcpus[0]);
  capture_tsc(vcpus, vcpu_states);
  *state.mutable_irqchip() = capture_irqchip(scratch);
  *state.mutable_pit() = capture_pit(scratch);
  *state.mutable_clock() = capture_clock(scratch);
  std::string bytes;
  state.SerializeToString(&bytes);
  st::VmState back;
  back.ParseFromString(bytes);
  validate_irqchip(back.irqchip());
  validate_pit(back.pit());
  validate_vcpu_state(caps, 0, back.vcpus(0));
  restore_irqchip(scratch, back.irqchip());
  restore_pit(scratch, back.pit());
  TscRestore tsc;
  restore_vcpu_state(caps, vcpus[0], back.vcpus(0), tsc);
  restore_clock(scratch, back.clock());
}

void Machine::rehearse_incoming() {
  if (state_caps().guest_tsc_is_host) return;  // as rehearse_state
  std::string bytes;
  capture_state().SerializeToString(&bytes);
  st::VmState own;
  if (!own.ParseFromString(bytes)) throw std::runtime_error("rehearsal: own state does not parse");
  apply_state(own);
}

void Machine::post(std::function<void()> task) {
  boost::asio::post(events_, std::move(task));
}

void Machine::release_disks() {
  for (const auto& function : devices_->virtio_functions()) function->release_storage();
  disks_released_ = true;
}

void Machine::claim_disks() {
  for (const auto& function : devices_->virtio_functions()) function->claim_storage();
  disks_released_ = false;
}

void Machine::sync_disks() {
  for (const auto& function : devices_->virtio_functions()) function->sync_storage();
}

void Machine::announce_network() {
  for (const auto& function : devices_->virtio_functions()) function->announce();
}

void Machine::track_disk_writes(bool on) {
  for (const auto& function : devices_->virtio_functions())
    if (function->is_disk()) function->track_writes(on);
}

std::vector<std::vector<uint64_t>> Machine::harvest_disk_writes() {
  std::vector<std::vector<uint64_t>> disks;
  for (const auto& function : devices_->virtio_functions())
    if (function->is_disk()) disks.push_back(function->harvest_writes());
  return disks;
}

void Machine::hold_output(bool held) {
  for (const auto& function : devices_->virtio_functions()) function->hold_output(held);
}

void Machine::on_output_held(std::function<void()> hook) {
  for (const auto& function : devices_->virtio_functions()) function->on_output_held(hook);
}

void Machine::close_output_epoch(uint64_t epoch) {
  for (const auto& function : devices_->virtio_functions()) function->close_output_epoch(epoch);
}

void Machine::release_output(uint64_t epoch) {
  for (const auto& function : devices_->virtio_functions()) function->release_output(epoch);
}

void Machine::hand_over(std::string detail) {
  request_stop({StopReason::kMigrated, std::move(detail)});
}

void Machine::refuse_if_fenced() const {
  if (fence_passed()) {
    throw InputError("fenced: this host's lease deadline has passed, the copy may not run here");
  }
}

void Machine::take_over_replica() {
  if (!replica_held_) throw InputError("not a passive replica");
  refuse_if_fenced();
  claim_disks();
  replica_held_ = false;
  started_ = std::chrono::steady_clock::now();
  vcpus_->resume();
  tell_started();
}

void Machine::drop_replica(std::string detail, bool failed) {
  request_stop(
      {failed ? StopReason::kReplicaFailed : StopReason::kReplicaEnded, std::move(detail)});
}

// The order: the fit first (refuse before touching anything), devices
// (the virtio queues read their rings from the memory already in place),
// irqchip and PIT, the vCPUs (restore_vcpu_state keeps KVM's own order),
// the clock last, just before the vCPUs run.
void Machine::apply_state(const st::VmState& state) {
  check_state_fits(state);
  const KvmStateCaps& caps = state_caps();
  devices_->stateful().restore_all(state.devices());
  console_.restore(state.console());

  validate_irqchip(state.irqchip());
  validate_pit(state.pit());
  for (size_t i = 0; i < vcpus_->size(); ++i)
    validate_vcpu_state(caps, (*vcpus_)[i].id(), state.vcpus(static_cast<int>(i)));
  restore_irqchip(vm_, state.irqchip());
  restore_pit(vm_, state.pit());
  // A live migration's guest went on living while its state travelled: its
  // clocks move on by that time (a snapshot's continue from the capture).
  const uint64_t transit_ns = wall_time_in_transit(state.clock());
  const uint64_t tsc_khz = state.cpu().tsc_khz() != 0 ? state.cpu().tsc_khz() : tsc_khz_;
  TscRestore tsc;
  tsc.advance(
      static_cast<uint64_t>(static_cast<unsigned __int128>(transit_ns) * tsc_khz / 1000000));
  for (size_t i = 0; i < vcpus_->size(); ++i) {
    restore_vcpu_state(caps, (*vcpus_)[i], state.vcpus(static_cast<int>(i)), tsc);
  }
  restore_clock(vm_, state.clock(), transit_ns + tsc.ns_since_reference());
  // Devices waiting for the interrupt controllers' state take up their
  // work only now, so that no interrupt they raise is overwritten.
  for (const auto& function : devices_->virtio_functions()) function->resume_device();
  // Said once a state is in: a refused one gets its one line.
  if (caps.guest_tsc_is_host && !said_host_tsc_) {
    said_host_tsc_ = true;
    log::info(
        "this host's KVM does not offset guest TSCs (PVM): the restored guest reads the host's "
        "TSC, "
        "so its clock counts the time since the state was captured");
  }
}

}  // namespace keel
