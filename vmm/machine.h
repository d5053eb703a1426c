// One virtual machine put together from its configuration: KVM, guest
// memory, the devices (DeviceManager), the vCPUs and their threads
// (VcpuSet), run until the guest stops; driven by the control socket and,
// through the migratable seam, by snapshots and migration.
#pragma once

#include <array>
#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <thread>
#include <vector>

#include "common/fence_deadline.h"
#include "common/guest_memory.h"
#include "common/log.h"
#include "control/control_server.h"
#include "control/metric_set.h"
#include "proto/vm_state.pb.h"
#include "vmm/coalesced_io_poller.h"
#include "vmm/config/vmm_options.h"
#include "vmm/console/guest_console.h"
#include "vmm/device_manager.h"
#include "vmm/events/event_journal.h"
#include "vmm/irq/gsi_router.h"
#include "vmm/kvm/coalesced_io.h"
#include "vmm/kvm/kvm_system.h"
#include "vmm/machine_stop.h"
#include "vmm/migratable_machine.h"
#include "vmm/state/kvm_state_caps.h"
#include "vmm/state/snapshot_root.h"
#include "vmm/vcpu_set.h"

namespace keel {

// Control operations served above the machine (live migration, from
// migration/): the machine hands them the requests it does not serve
// itself, and refuses pause, resume, snapshot and shutdown while busy()
// names something under way.
// A test build's door for the guest (keel-vmm-testhooks only): a write to
// this port runs guest_test_hook on the vCPU's thread; true means handled.
inline constexpr uint16_t kGuestTestHookPort = 0x5e4;
bool guest_test_hook(uint16_t port, std::span<const uint8_t> data);

class MachineExtension : public ControlHandler {
 public:
  virtual std::string busy() const = 0;
  // The fence may pause the guest now (a replication checkpoints a paused
  // guest as well); false while an outgoing migration must be cancelled
  // first.
  virtual bool may_pause_for_fence() const { return busy().empty(); }
  // Its own metrics into the machine's (on the event loop).
  virtual void add_metrics(MetricSet& set) const { (void)set; }
  // Where it tells what happened (set_extension gives the machine's).
  void set_journal(EventJournal* journal) { journal_ = journal; }

 protected:
  EventJournal* journal_ = nullptr;
};

class Machine : public ControlHandler, public MigratableMachine {
 public:
  // Builds the VM from options.config and loads its guest. Throws
  // InputError for bad input (the configuration, the kernel, sizes against
  // this host) and std::system_error for KVM failures.
  explicit Machine(const VmmOptions& options);
  // The machine's shape from options.config (vCPUs, memory, devices,
  // wiring) with no guest loaded: its memory and its state come from
  // elsewhere (guest_memory(), then apply_state) before run(), as on a
  // restore or the receiving end of a migration. The kernel and initrd are
  // not read.
  static std::unique_ptr<Machine> shape_only(const VmmOptions& options);
  // Only shape_only() makes one (a passkey: make_unique needs a public constructor).
  class ShapeOnly {
    ShapeOnly() = default;
    friend class Machine;
  };
  Machine(const VmmOptions& options, ShapeOnly);
  ~Machine() override;
  Machine(const Machine&) = delete;
  Machine& operator=(const Machine&) = delete;

  // Runs the guest until it stops or the process gets SIGINT/SIGTERM.
  // `started`, if given, runs once the vCPUs run, on this thread (the event
  // loop's) before the event loop starts.
  MachineStop run(std::function<void()> started = {});
  // Before run(), for a guest whose state comes from elsewhere: the vCPU
  // threads made now and parked outside KVM_RUN, so that letting them go
  // (release_parked_vcpus, or run()) is all that is left (making threads
  // and their filters is not free where every step of a migration's pause
  // counts). The state may be applied after.
  void start_vcpus_parked();
  // After start_vcpus_parked() and the state, still before run(): the
  // vCPUs go on from here (run() has nothing left to let go). What they
  // hand to the event loop waits until run() starts it. A migration's
  // destination lets its guest go the moment the source does.
  void release_parked_vcpus();

  // The control socket (--api-socket), if not open yet: run() opens it
  // otherwise. Throws InputError when the path cannot be served. Requests
  // wait until run() starts the event loop.
  void open_control();

  // Jailed mode, before the drop: opens and probes now what run() and the
  // first capture would otherwise open or probe then (the control socket,
  // KVM's state capabilities), so nothing needs a path or a privilege later.
  void prepare_for_jail();
  const state::v1::VmConfig& config() const { return config_; }

  // keel-vmm --replica-of, before run(): run() starts the event loop with
  // the vCPUs parked and keeps them so; status says RUN_STATE_REPLICA and
  // only status, kill and the extension's replica requests are served,
  // until take_over_replica().
  void hold_as_replica() { replica_held_ = true; }
  // On the event loop, the copy's state applied: the disks claimed, the
  // vCPUs let go. InputError (the copy stays held) when the host is fenced
  // or another process holds an image.
  void take_over_replica();
  // InputError when the host is fenced (--fence-file's deadline passed): a
  // copy must not run; asked before its state is applied, so that a
  // takeover refused so can be asked again once the fence lifts.
  void refuse_if_fenced() const;
  // The active ended the replication (keel-vmm exits 0), or its stream
  // failed before there was a copy to take over (`failed`: exit 1): the
  // machine stops. Any thread.
  void drop_replica(std::string detail, bool failed = false);

  // Before run(); `extension` outlives the machine's run.
  void set_extension(MachineExtension* extension) {
    extension_ = extension;
    extension_->set_journal(&journal_);
  }

  // ControlHandler (machine_control.cpp): the control socket's requests, on
  // the event loop.
  void handle(const keel::api::v1::Request& request, Reply reply) override;
  // Console attach: any run state but stopping (a passive's console shows
  // the guest once it runs here).
  void handle_stream(const keel::api::v1::Request& request, StreamReply reply) override;

  // MigratableMachine (machine_state.cpp).
  bool pause(std::chrono::milliseconds timeout) override;
  void request_pause(std::function<void()> parked) override;
  void resume() override;
  state::v1::VmState capture_state() override;
  void check_state_fits(const state::v1::VmState& state) override;
  void apply_state(const state::v1::VmState& state) override;
  state::v1::VmState shape() override;
  void check_shape_fits(const state::v1::VmState& shape) override;
  void rehearse_state() override;
  // A receiving end's rehearsal, on this machine itself while nothing of
  // the guest is here yet (built by shape_only, not run): its own state
  // captured, encoded, decoded and applied back, so the pause runs no step
  // of capture_state or apply_state for the first time in this process.
  // Where rehearse_state does nothing, neither does this.
  void rehearse_incoming();
  void post(std::function<void()> task) override;
  void sync_disks() override;
  void release_disks() override;
  void claim_disks() override;
  void announce_network() override;
  void track_disk_writes(bool on) override;
  std::vector<std::vector<uint64_t>> harvest_disk_writes() override;
  void hold_output(bool held) override;
  void on_output_held(std::function<void()> hook) override;
  void close_output_epoch(uint64_t epoch) override;
  void release_output(uint64_t epoch) override;
  void hand_over(std::string detail) override;
  GuestMemory& guest_memory() override { return memory_; }
  std::unique_ptr<kvm::DirtyLog> start_dirty_log() override;

 private:
  void check_host_limits() const;
  void create_vcpus();
  void setup_vcpu(kvm::Vcpu& vcpu, const std::vector<kvm_cpuid_entry2>& supported,
                  uint32_t tsc_khz);
  void start_vcpus(bool parked);
  // On a vCPU's thread (machine_exits.cpp).
  void handle_exit(kvm::Vcpu& vcpu);
  void request_stop(MachineStop stop);
  // The journal's word on a start (run, a replica's takeover) and a stop.
  void tell_started();
  void tell_stopped(const MachineStop& stop);
  void tell_device_trouble(const std::string& device, bool needs_reset, const std::string& why);
  keel::api::v1::StatusResult status() const;
  keel::api::v1::MetricsResult metrics() const;  // machine_metrics.cpp
  // The vCPUs parked without blocking the event loop: `then(true)` on the
  // event loop once every vCPU is parked, or `then(false)` after 5 s if one
  // did not get there (the pause withdrawn). Run-state operations are busy
  // meanwhile.
  void pause_then(std::function<void(bool)> then);
  void take_snapshot(const std::string& dir, Reply reply);
  // With the vCPUs parked: the state captured here, the files written on
  // snapshot_writer_, the answer (and the resume, unless `was_paused`)
  // back on the event loop.
  void write_snapshot_paused(const std::string& dir, Reply reply, bool was_paused,
                             std::chrono::steady_clock::time_point begin);
  // A snapshot still being written is abandoned and its thread joined.
  void end_snapshot_writer();
  void start_shutdown(uint32_t timeout_ms, Reply reply);
  // --fence-file (machine_fence.cpp): the deadline looked at every 100 ms
  // from run() on; past it, the guest is paused.
  void watch_fence();
  void check_fence();
  bool fence_passed() const;
  // What this host's KVM can capture and restore: probed once (a scratch VM
  // and vCPU), then kept; it does not change while the process runs.
  const KvmStateCaps& state_caps();
  static keel::api::v1::Response stopped_response(const MachineStop& stop,
                                                  std::chrono::steady_clock::time_point since);

  Machine(const VmmOptions& options, bool shape_only);

  const VmmOptions options_;
  const state::v1::VmConfig& config_;  // options_.config: the machine's shape
  kvm::System kvm_;
  kvm::Vm vm_;
  GuestMemory memory_;
  boost::asio::io_context events_;
  GuestConsole console_;
  EventJournal journal_;
  log::RateLimit device_events_{10, std::chrono::minutes(1)};
  std::unique_ptr<GsiRouter> gsi_router_;
  std::unique_ptr<DeviceManager> devices_;
  std::optional<KvmStateCaps> state_caps_;     // state_caps()
  std::optional<SnapshotRoot> snapshot_root_;  // --snapshot-root; none: snapshots are off
  std::unique_ptr<VcpuSet> vcpus_;
  std::unique_ptr<kvm::CoalescedIo> coalesced_io_;       // when KVM has KVM_CAP_COALESCED_PIO
  std::unique_ptr<CoalescedIoPoller> coalesced_poller_;  // with coalesced_io_, in run()
  // What vCPU 0 was given (shape(): read while the vCPUs run, when KVM
  // would make a vCPU ioctl wait for KVM_RUN to return).
  std::vector<kvm_cpuid_entry2> boot_cpuid_;
  uint32_t tsc_khz_ = 0;
  MachineExtension* extension_ = nullptr;
  bool said_host_tsc_ = false;  // apply_state's note about PVM's TSC, once
  // The disk images' locks are not ours (release_disks; an --incoming's
  // or a --replica-of's until claim_disks): the guest must not run here
  // before they are.
  bool disks_released_ = options_.streamed();
  bool replica_held_ = false;  // hold_as_replica, until take_over_replica

  // The operator's pauses (the control socket's pause and resume).
  std::chrono::steady_clock::time_point started_;
  // Set while an operator's (or the fence's) pause lasts: the pauses of
  // snapshots, migrations and throttling are not the operator's.
  std::optional<std::chrono::steady_clock::time_point> paused_at_;
  std::chrono::steady_clock::duration paused_total_{};
  uint32_t pauses_ = 0;
  // Shutdown through the control socket: the power button, then a kill.
  bool shutting_down_ = false;
  std::optional<boost::asio::steady_timer> shutdown_timer_;
  std::vector<Reply> stop_replies_;  // answered when the machine stops
  std::chrono::steady_clock::time_point shutdown_started_;
  // The snapshot being written off the event loop (take_snapshot): the
  // guest stays paused and the other operations that change the run state
  // are refused until its answer is back on the event loop.
  bool snapshot_writing_ = false;
  struct {
    uint64_t written = 0, failed = 0, bytes = 0;
    std::chrono::steady_clock::duration paused{};
  } snapshots_;
  bool pausing_ = false;  // pause_then: waiting for the vCPUs to park
  std::atomic<bool> snapshot_cancel_{false};
  std::thread snapshot_writer_;
  std::optional<FenceDeadline> fence_;  // --fence-file
  std::optional<boost::asio::steady_timer> fence_timer_;
  bool paused_by_fence_ = false;            // the pause came from the fence, not a request
  bool fenced_ = false;                     // the deadline passed: the guest paused, resume refused
  std::unique_ptr<ControlServer> control_;  // last: destroyed first
  std::mutex stop_mutex_;
  std::optional<MachineStop> stop_;
};

}  // namespace keel
