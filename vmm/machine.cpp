#include "vmm/machine.h"

#include <unistd.h>

#include <algorithm>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <cstring>
#include <string>

#include "common/error.h"
#include "common/hex.h"
#include "common/log.h"
#include "vmm/acpi/acpi_tables.h"
#include "vmm/boot/cpuid.h"
#include "vmm/boot/kernel_image.h"
#include "vmm/boot/memory_layout.h"
#include "vmm/boot/x86_boot.h"
#include "vmm/jail/syscall_filter.h"
#include "vmm/virtio_devices.h"

namespace keel {

namespace pb = ::keel::api::v1;

namespace {

// LAPIC LVT entries as the firmware leaves them: LINT0 takes the PIC's
// ExtINT, LINT1 takes NMI (Intel SDM vol. 3, 10.5.1).
constexpr size_t kLapicLint0 = 0x350;
constexpr size_t kLapicLint1 = 0x360;
constexpr uint32_t kDeliveryExtInt = 0x700;
constexpr uint32_t kDeliveryNmi = 0x400;

void set_lvt(kvm_lapic_state& lapic, size_t offset, uint32_t delivery) {
  uint32_t value;
  std::memcpy(&value, lapic.regs + offset, 4);
  value = (value & ~0x700u & ~(1u << 16)) | delivery;  // unmasked, this delivery mode
  std::memcpy(lapic.regs + offset, &value, 4);
}

uint64_t host_memory_bytes() {
  long pages = ::sysconf(_SC_PHYS_PAGES);
  long page_size = ::sysconf(_SC_PAGESIZE);
  return pages > 0 && page_size > 0 ? uint64_t(pages) * uint64_t(page_size) : 0;
}

}  // namespace

Machine::Machine(const VmmOptions& options) : Machine(options, false) {}

Machine::Machine(const VmmOptions& options, ShapeOnly) : Machine(options, true) {}

std::unique_ptr<Machine> Machine::shape_only(const VmmOptions& options) {
  return std::make_unique<Machine>(options, ShapeOnly{});
}

Machine::Machine(const VmmOptions& options, bool shape_only)
    : options_(options),
      config_(options_.config),
      kvm_((check_vm_config(config_, ""), kvm::System::open(options_.kvm_device))),
      vm_((check_host_limits(), kvm_.create_vm())),
      memory_(layout::guest_ram_regions(config_.memory())),
      console_(events_, options_.serial_file),
      journal_(events_, options_.event_log) {
  console_.on_takeover([this] {
    journal_.publish(pb::EVENT_TYPE_CONSOLE_TAKEOVER,
                     "a console writer took the console over (the other is read-only now)");
  });
  if (!options_.snapshot_root.empty()) snapshot_root_ = SnapshotRoot::open(options_.snapshot_root);
  if (!options_.fence_file.empty()) {
    fence_ = FenceDeadline::open(options_.fence_file);
    if (fence_->passed()) {
      throw InputError("--fence-file " + options_.fence_file +
                       ": the host is fenced (its lease deadline passed): not starting a guest");
    }
  }
  std::optional<KernelImage> image;
  BootSetup boot;
  if (!shape_only) {
    // Neither file can be larger than the guest memory it has to fit in.
    image = parse_kernel_image(read_file(config_.kernel(), "kernel", config_.memory()),
                               config_.kernel());
    boot.cmdline = config_.cmdline();
    if (!config_.initrd().empty())
      boot.initrd = read_file(config_.initrd(), "initrd", config_.memory());
  }

  vm_.set_tss_address(layout::kKvmTss);
  vm_.set_identity_map_address(layout::kKvmIdentityMap);
  for (size_t slot = 0; slot < memory_.regions().size(); ++slot) {
    const auto& r = memory_.regions()[slot];
    vm_.set_memory_slot(static_cast<uint32_t>(slot), r.guest_phys, r.size,
                        memory_.host_base() + r.file_offset);
  }
  vm_.create_irqchip();
  gsi_router_ = std::make_unique<GsiRouter>(
      vm_, static_cast<uint32_t>(std::max(kvm_.check_extension(KVM_CAP_IRQ_ROUTING), 0)));
  vm_.create_pit2();

  acpi::AcpiPlatform platform{};
  platform.cpu_count = config_.cpus();
  platform.lapic_address = static_cast<uint32_t>(layout::kLapic);
  platform.ioapic_address = static_cast<uint32_t>(layout::kIoapic);
  platform.pm1a_evt_port = layout::kPm1aEvtPort;
  platform.pm1a_cnt_port = layout::kPm1aCntPort;
  platform.rtc_century_index = CmosRtc::kCenturyIndex;
  auto acpi = acpi::build_acpi_tables(platform, layout::kAcpiTables);
  memory_.write(acpi.base_gpa, acpi.bytes);
  boot.acpi_rsdp = acpi.rsdp_gpa;

  devices_ = std::make_unique<DeviceManager>(
      DeviceManager::Wiring{
          .vm = vm_,
          .gsi_router = *gsi_router_,
          .memory = memory_,
          .events = events_,
          .ioeventfd_length = kvm_.check_extension(KVM_CAP_IOEVENTFD_ANY_LENGTH) > 0 ? 0u : 2u,
          .console_out = [this](uint8_t byte) { console_.put(byte); },
          .request_stop = [this](MachineStop stop) { request_stop(std::move(stop)); },
          .device_trouble =
              [this](const std::string& device, bool needs_reset, const std::string& why) {
                tell_device_trouble(device, needs_reset, why);
              },
          .claim_disks = !options_.streamed(),
      },
      config_);
  console_.connect_input(devices_->io_bus(), devices_->com1());

  if (shape_only) {
    create_vcpus();
    return;
  }
  auto entry = load_guest_kernel(memory_, *image, boot);
  create_vcpus();
  set_boot_vcpu_state((*vcpus_)[0], entry);
}

void Machine::create_vcpus() {
  auto supported = kvm_.supported_cpuid();
  std::vector<kvm::Vcpu> vcpus;
  for (uint32_t id = 0; id < config_.cpus(); ++id) vcpus.push_back(vm_.create_vcpu(id));
  vcpus_ = std::make_unique<VcpuSet>(std::move(vcpus));
  kvm::Vcpu& boot = (*vcpus_)[0];
  // KVM_CAP_COALESCED_MMIO answers with the ring's page in the vCPU mapping.
  int ring_page = kvm_.check_extension(KVM_CAP_COALESCED_MMIO);
  size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  if (ring_page > 0 && kvm_.check_extension(KVM_CAP_COALESCED_PIO) > 0 &&
      (static_cast<size_t>(ring_page) + 1) * page <= boot.run_mapping_size()) {
    kvm::CoalescedIo::register_port(vm_, PciBus::kConfigPort, 4);
    // COM1's transmit register: a guest that prints with the UART's
    // interrupts off (early boot, a kernel's console, the test guest) makes
    // an exit per byte otherwise; Linux's console still reads LSR before
    // each byte (that read applies the queued ones), the test guest never.
    // Reads of the port exit as before; DLAB's divisor writes stay in order
    // with the LCR write that ends them (that exit applies them first).
    kvm::CoalescedIo::register_port(vm_, DeviceManager::kCom1Port, 1);
    coalesced_io_ = std::make_unique<kvm::CoalescedIo>(boot.run_mapping(), ring_page);
    coalesced_poller_ = std::make_unique<CoalescedIoPoller>(
        events_, *coalesced_io_, devices_->io_bus(), [this](const std::exception& e) {
          request_stop({StopReason::kVmmError, std::string("port write: ") + e.what()});
        });
  }
  uint32_t tsc_khz = 0;
  if (kvm_.check_extension(KVM_CAP_GET_TSC_KHZ) > 0) tsc_khz = boot.get_tsc_khz();
  tsc_khz_ = tsc_khz;
  for (auto& vcpu : vcpus_->all()) setup_vcpu(vcpu, supported, tsc_khz);
}

Machine::~Machine() {
  end_snapshot_writer();
  if (vcpus_) vcpus_->stop();
  // A run() that ended by an exception left the guest's last writes queued.
  try {
    if (coalesced_io_) coalesced_io_->drain(devices_->io_bus());
  } catch (const std::exception&) {
  }
}

void Machine::check_host_limits() const {
  uint64_t host = host_memory_bytes();
  if (host != 0 && config_.memory() > host) {
    throw InputError(
        "guest memory too large for this host: " + std::to_string(config_.memory() >> 20) +
        " MiB asked, the host has " + std::to_string(host >> 20) + " MiB");
  }
  int max_vcpus = kvm_.check_extension(KVM_CAP_MAX_VCPUS);
  if (max_vcpus <= 0) max_vcpus = kvm_.check_extension(KVM_CAP_NR_VCPUS);
  if (max_vcpus > 0 && config_.cpus() > static_cast<uint32_t>(max_vcpus)) {
    throw InputError("too many vCPUs: " + std::to_string(config_.cpus()) + " asked, KVM allows " +
                     std::to_string(max_vcpus));
  }
}

void Machine::setup_vcpu(kvm::Vcpu& vcpu, const std::vector<kvm_cpuid_entry2>& supported,
                         uint32_t tsc_khz) {
  CpuidOptions cpuid;
  cpuid.vcpu_count = config_.cpus();
  cpuid.tsc_khz = tsc_khz;
  cpuid.tsc_deadline_timer = kvm_.check_extension(KVM_CAP_TSC_DEADLINE_TIMER) > 0;
  auto entries = cpuid_for_vcpu(supported, vcpu.id(), cpuid);
  vcpu.set_cpuid(entries);
  if (vcpu.id() == 0) boot_cpuid_ = std::move(entries);
  vcpu.set_msrs(boot_msrs());
  auto lapic = vcpu.get_lapic();
  // The 8259's ExtINT reaches the boot processor only; APs keep LINT0 masked.
  if (vcpu.id() == 0) set_lvt(lapic, kLapicLint0, kDeliveryExtInt);
  set_lvt(lapic, kLapicLint1, kDeliveryNmi);
  vcpu.set_lapic(lapic);
}

void Machine::open_control() {
  if (!control_ && !options_.api_socket.empty()) {
    control_ = std::make_unique<ControlServer>(events_, options_.api_socket, *this);
  }
}

void Machine::prepare_for_jail() {
  console_.stop_rotating_log();
  open_control();
  state_caps();
}

MachineStop Machine::run(std::function<void()> started) {
  auto work = boost::asio::make_work_guard(events_);
  boost::asio::signal_set signals(events_, SIGINT, SIGTERM);
  signals.async_wait([this](const boost::system::error_code& ec, int signo) {
    if (!ec) request_stop({StopReason::kSignal, strsignal(signo), signo});
  });
  open_control();
  watch_fence();
  started_ = std::chrono::steady_clock::now();
  if (replica_held_) {
    start_vcpus_parked();  // the copy's vCPUs wait for take_over_replica
  } else if (vcpus_->started()) {
    // A restored or received guest, parked until now: not run on a host
    // that became fenced meanwhile.
    if (fence_passed()) {
      fenced_ = true;
      paused_by_fence_ = true;
      paused_at_ = std::chrono::steady_clock::now();
      ++pauses_;
      log::warning("fenced: the host's lease deadline passed; the guest stays paused");
    } else {
      vcpus_->resume();
    }
  } else {
    start_vcpus(false);
  }
  if (!replica_held_) tell_started();
  // The vCPU threads are off with their own filters: this thread narrows to
  // the event loop's (threads it starts later inherit that).
  jail::confine_thread(jail::ThreadKind::kEventLoop, "keel-vmm");
  // Once the vCPUs run: a migration's source lets go of the guest on this,
  // so it must not come before; and before the event loop, so that a guest
  // that stopped at once (its stop posted first) cannot keep it from coming.
  if (started) started();
  if (coalesced_poller_) coalesced_poller_->start();
  events_.run();
  if (coalesced_poller_) coalesced_poller_->stop();
  end_snapshot_writer();
  vcpus_->stop();
  // What the guest wrote last (its dying words) reaches the console.
  if (coalesced_io_) coalesced_io_->drain(devices_->io_bus());
  if (control_) {
    // Answer the clients waiting for the stop (shutdown, kill), then close.
    std::vector<Reply> waiting;
    MachineStop stop;
    {
      std::lock_guard guard(stop_mutex_);
      waiting.swap(stop_replies_);
      stop = *stop_;
    }
    for (auto& reply : waiting) reply(stopped_response(stop, shutdown_started_));
    events_.restart();
    // Answers on their way (these, a migration's) get out before the close;
    // and whatever is ready (a console client's write that completed) runs,
    // so that the console's finish can send its last batch to every client.
    if (!waiting.empty() || stop.reason == StopReason::kMigrated) {
      events_.run_for(std::chrono::milliseconds(500));
    }
    events_.poll();
    control_.reset();
  }
  // The stop's event (and any before it) to the log and the subscribers,
  // after the answers the stop owed: a stuck subscriber delays only itself.
  journal_.finish(std::chrono::milliseconds(500));
  console_.finish(std::chrono::seconds(2));
  if (uint64_t lost = console_.counters().log_dropped) {
    log::warning(std::to_string(lost) +
                 " bytes of guest console output dropped (reader too slow or gone)");
  }
  std::lock_guard guard(stop_mutex_);
  return *stop_;
}

void Machine::start_vcpus(bool parked) {
  auto on_exit = [this](kvm::Vcpu& vcpu) { handle_exit(vcpu); };
  auto on_failure = [this](kvm::Vcpu& vcpu, const std::exception& e) {
    try {
      request_stop({StopReason::kVmmError, "vCPU " + std::to_string(vcpu.id()) + ": " + e.what()});
    } catch (...) {
      events_.stop();  // out of memory for the message: stop all the same
    }
  };
  if (parked) {
    vcpus_->start_parked(on_exit, on_failure);
  } else {
    vcpus_->start(on_exit, on_failure);
  }
}

void Machine::start_vcpus_parked() {
  if (!vcpus_->started()) start_vcpus(true);
}

void Machine::release_parked_vcpus() {
  if (vcpus_->started()) vcpus_->resume();
}

void Machine::request_stop(MachineStop stop) {
  std::lock_guard guard(stop_mutex_);
  if (stop_) return;  // the first reason wins
  stop_ = std::move(stop);
  if (vcpus_) vcpus_->request_stop();
  boost::asio::post(events_, [this] { events_.stop(); });
  try {
    tell_stopped(*stop_);
  } catch (...) {
    // Out of memory for the event: the machine stops all the same.
  }
}

void Machine::tell_started() {
  if (!options_.restore_dir.empty()) {
    journal_.publish(pb::EVENT_TYPE_RESTORED,
                     "resumed from the snapshot in " + options_.restore_dir);
  } else if (!options_.incoming.empty()) {
    journal_.publish(pb::EVENT_TYPE_STARTED, "received by live migration");
  } else if (!options_.replica_of.empty()) {
    journal_.publish(pb::EVENT_TYPE_STARTED, "taken over from the replica's last epoch");
  } else {
    journal_.publish(pb::EVENT_TYPE_STARTED, "booted " + config_.kernel());
  }
}

void Machine::tell_stopped(const MachineStop& stop) {
  pb::EventType type = pb::EVENT_TYPE_STOPPED;
  switch (stop.reason) {
    case StopReason::kPowerOff:
      type = pb::EVENT_TYPE_POWERED_OFF;
      break;
    case StopReason::kReboot:
      type = pb::EVENT_TYPE_REBOOTED;
      break;
    case StopReason::kGuestPanic:
      type = pb::EVENT_TYPE_GUEST_PANIC;
      break;
    case StopReason::kTripleFault:
    case StopReason::kKvmError:
      type = pb::EVENT_TYPE_CRASHED;
      break;
    case StopReason::kSignal:
    case StopReason::kKilled:
      type = pb::EVENT_TYPE_KILLED;
      break;
    case StopReason::kMigrated:
      type = pb::EVENT_TYPE_MIGRATION_FINISHED;
      break;
    default:
      break;
  }
  journal_.publish(type, stop.detail.empty() ? "the guest powered off" : stop.detail);
}

// A guest can break a device, or make a disk fail, again and again: a few
// events a minute, and the count of those held back with the next.
void Machine::tell_device_trouble(const std::string& device, bool needs_reset,
                                  const std::string& why) {
  uint64_t held_back = 0;
  if (!device_events_.allow(held_back)) return;
  pb::Event event;
  event.set_type(needs_reset ? pb::EVENT_TYPE_DEVICE_RESET : pb::EVENT_TYPE_DISK_IO_ERROR);
  event.set_device(device);
  event.set_detail(why + (held_back == 0 ? std::string()
                                         : " (" + std::to_string(held_back) +
                                               " device events held back before this one)"));
  journal_.publish(std::move(event));
}

}  // namespace keel
