#include "vmm/machine.h"

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <algorithm>
#include <cstring>
#include <string>

#include "common/error.h"
#include "common/hex.h"
#include "common/log.h"
#include "vmm/acpi/acpi_tables.h"
#include "vmm/boot/cpuid.h"
#include "vmm/boot/kernel_image.h"
#include "vmm/boot/memory_layout.h"
#include "vmm/virtio_devices.h"
#include "vmm/boot/x86_boot.h"

namespace keel {

namespace {

// Sent to a vCPU thread to break it out of KVM_RUN; the handler does
// nothing, the point is the EINTR.
constexpr int kKickSignal = SIGUSR1;

void install_kick_handler() {
  struct sigaction action {};
  action.sa_handler = [](int) {};
  sigemptyset(&action.sa_mask);
  action.sa_flags = 0;  // no SA_RESTART: KVM_RUN must return
  if (::sigaction(kKickSignal, &action, nullptr) < 0) throw_errno("sigaction");
}

constexpr uint16_t kCom1Port = 0x3f8;
constexpr uint32_t kCom1Irq = 4;

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
      serial_out_(options_.serial_file, events_) {
  std::optional<KernelImage> image;
  BootSetup boot;
  if (!shape_only) {
    // Neither file can be larger than the guest memory it has to fit in.
    image = parse_kernel_image(read_file(config_.kernel(), "kernel", config_.memory()), config_.kernel());
    boot.cmdline = config_.cmdline();
    if (!config_.initrd().empty()) boot.initrd = read_file(config_.initrd(), "initrd", config_.memory());
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

  add_platform_devices();
  add_virtio_devices();

  if (shape_only) {
    create_vcpus();
    return;
  }
  auto entry = load_guest_kernel(memory_, *image, boot);
  create_vcpus();
  set_boot_vcpu_state(vcpus_[0], entry);
}

void Machine::add_platform_devices() {
  com1_ = std::make_unique<Uart8250>([this](uint8_t byte) { serial_out_.put(byte); },
                                     [this] {
                                       vm_.set_irq_line(kCom1Irq, true);
                                       vm_.set_irq_line(kCom1Irq, false);
                                     });
  io_bus_.add(kCom1Port, 8, *com1_);
  i8042_ = std::make_unique<I8042>(
      [this] { request_stop({StopReason::kReboot, "reset through the i8042 controller"}); });
  io_bus_.add(I8042::kDataPort, 1, *i8042_);
  io_bus_.add(I8042::kCommandPort, 1, *i8042_, 4);
  // The SCI: a level on the ISA IRQ the FADT names (MADT: level, active high).
  const uint32_t sci_irq = acpi::AcpiPlatform{}.sci_irq;
  acpi_pm_ = std::make_unique<AcpiPm>(
      acpi::kS5SleepType, [this] { request_stop({StopReason::kPowerOff, ""}); },
      [this, sci_irq](bool level) { vm_.set_irq_line(sci_irq, level); });
  io_bus_.add(layout::kPm1aEvtPort, AcpiPm::kPortCount, *acpi_pm_);
  pvpanic_ = std::make_unique<PvPanic>([this](uint8_t events) {
    request_stop({StopReason::kGuestPanic, "pvpanic events " + hex(events)});
  });
  io_bus_.add(PvPanic::kPort, 1, *pvpanic_);
  rtc_ = std::make_unique<CmosRtc>();
  io_bus_.add(CmosRtc::kPort, CmosRtc::kPortCount, *rtc_);
  pci_bus_.add(0, pci_host_bridge_);
  io_bus_.add(PciBus::kConfigPort, PciBus::kConfigPortCount, pci_bus_);

  using K = state::v1::DeviceState;
  stateful_.add(
      "com1", K::kUart, [this](K& s) { *s.mutable_uart() = com1_->save(); },
      [this](const K& s) { com1_->restore(s.uart()); });
  stateful_.add(
      "i8042", K::kI8042, [this](K& s) { *s.mutable_i8042() = i8042_->save(); },
      [this](const K& s) { i8042_->restore(s.i8042()); });
  stateful_.add(
      "acpi-pm", K::kAcpiPm, [this](K& s) { *s.mutable_acpi_pm() = acpi_pm_->save(); },
      [this](const K& s) { acpi_pm_->restore(s.acpi_pm()); });
  stateful_.add(
      "cmos-rtc", K::kCmosRtc, [this](K& s) { *s.mutable_cmos_rtc() = rtc_->save(); },
      [this](const K& s) { rtc_->restore(s.cmos_rtc()); });
  stateful_.add(
      "pvpanic", K::kPvpanic, [this](K& s) { *s.mutable_pvpanic() = pvpanic_->save(); },
      [this](const K& s) { pvpanic_->restore(s.pvpanic()); });
  stateful_.add(
      "pci-bus", K::kPciBus, [this](K& s) { *s.mutable_pci_bus() = pci_bus_.save(); },
      [this](const K& s) { pci_bus_.restore(s.pci_bus()); });
  stateful_.add(
      "pci-host-bridge", K::kPciHostBridge,
      [this](K& s) { *s.mutable_pci_host_bridge() = pci_host_bridge_.save(); },
      [this](const K& s) { pci_host_bridge_.restore(s.pci_host_bridge()); });
}

// Slots 1.. in command-line order, BAR0s side by side from the start of the
// 32-bit PCI window (the DSDT's host bridge resources), memory decoding on,
// as firmware leaves them; INTA# of slot n on I/O APIC pin 16 + (n - 1) % 8.
void Machine::add_virtio_devices() {
  const VirtioPciFunction::Wiring wiring{
      vm_, *gsi_router_, memory_, events_, nullptr,
      kvm_.check_extension(KVM_CAP_IOEVENTFD_ANY_LENGTH) > 0 ? 0u : 2u};
  auto devices = make_virtio_devices(config_, events_);
  for (size_t i = 0; i < devices.size(); ++i) {
    const unsigned slot = static_cast<unsigned>(i + 1);
    const unsigned line = (slot - 1) % 8;
    auto w = wiring;
    // A level shared by several functions: asserted while any of them
    // asserts it (each function reports only its own changes).
    w.intx = [this, line](bool asserted) {
      std::lock_guard guard(intx_mutex_);
      unsigned& count = intx_asserted_[line];
      count = asserted ? count + 1 : (count > 0 ? count - 1 : 0);
      vm_.set_irq_line(16 + line, count > 0);
    };
    const uint64_t bar = layout::kPciHoleStart + i * virtio::VirtioPciDevice::kBarSize;
    virtio_.push_back(std::make_unique<VirtioPciFunction>(w, std::move(devices[i]), bar));
    pci_bus_.add(slot, *virtio_.back());
    // Ids by kind and order: disks, then network adapters, then rng, as
    // make_virtio_devices makes them.
    const size_t disks = static_cast<size_t>(config_.disks_size());
    const size_t nets = static_cast<size_t>(config_.nets_size());
    const std::string id = i < disks          ? "disk" + std::to_string(i)
                           : i < disks + nets ? "net" + std::to_string(i - disks)
                                              : "rng" + std::to_string(i - disks - nets);
    VirtioPciFunction& function = *virtio_.back();
    using K = state::v1::DeviceState;
    stateful_.add(
        id, K::kVirtio,
        [&function, slot](K& s) {
          s.set_pci_slot(slot);
          *s.mutable_virtio() = function.save();
        },
        [&function, slot, id](const K& s) {
          if (s.pci_slot() != slot) {
            throw InputError("state: device " + id + " on PCI slot " +
                             std::to_string(s.pci_slot()) + ", this machine has it on slot " +
                             std::to_string(slot));
          }
          function.restore(s.virtio());
        });
  }
}

void Machine::create_vcpus() {
  auto supported = kvm_.supported_cpuid();
  for (uint32_t id = 0; id < config_.cpus(); ++id) vcpus_.push_back(vm_.create_vcpu(id));
  // KVM_CAP_COALESCED_MMIO answers with the ring's page in the vCPU mapping.
  int ring_page = kvm_.check_extension(KVM_CAP_COALESCED_MMIO);
  size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  if (ring_page > 0 && kvm_.check_extension(KVM_CAP_COALESCED_PIO) > 0 &&
      (static_cast<size_t>(ring_page) + 1) * page <= vcpus_[0].run_mapping_size()) {
    kvm::CoalescedIo::register_port(vm_, PciBus::kConfigPort, 4);
    coalesced_io_ = std::make_unique<kvm::CoalescedIo>(vcpus_[0].run_mapping(), ring_page);
  }
  uint32_t tsc_khz = 0;
  if (kvm_.check_extension(KVM_CAP_GET_TSC_KHZ) > 0) tsc_khz = vcpus_[0].get_tsc_khz();
  for (auto& vcpu : vcpus_) setup_vcpu(vcpu, supported, tsc_khz);
}

Machine::~Machine() { stop_vcpus(); }

void Machine::check_host_limits() const {
  uint64_t host = host_memory_bytes();
  if (host != 0 && config_.memory() > host) {
    throw InputError("guest memory too large for this host: " +
                     std::to_string(config_.memory() >> 20) + " MiB asked, the host has " +
                     std::to_string(host >> 20) + " MiB");
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
  vcpu.set_cpuid(cpuid_for_vcpu(supported, vcpu.id(), cpuid));
  vcpu.set_msrs(boot_msrs());
  auto lapic = vcpu.get_lapic();
  // The 8259's ExtINT reaches the boot processor only; APs keep LINT0 masked.
  if (vcpu.id() == 0) set_lvt(lapic, kLapicLint0, kDeliveryExtInt);
  set_lvt(lapic, kLapicLint1, kDeliveryNmi);
  vcpu.set_lapic(lapic);
}

MachineStop Machine::run() {
  install_kick_handler();
  auto work = boost::asio::make_work_guard(events_);
  boost::asio::signal_set signals(events_, SIGINT, SIGTERM);
  signals.async_wait([this](const boost::system::error_code& ec, int signo) {
    if (!ec) request_stop({StopReason::kSignal, strsignal(signo), signo});
  });
  if (!options_.api_socket.empty()) {
    control_ = std::make_unique<ControlServer>(events_, options_.api_socket, *this);
  }
  started_ = std::chrono::steady_clock::now();
  for (auto& vcpu : vcpus_) {
    threads_.emplace_back([this, &vcpu] { vcpu_loop(vcpu); });
  }
  events_.run();
  stop_vcpus();
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
    events_.run_for(std::chrono::milliseconds(waiting.empty() ? 0 : 500));
    control_.reset();
  }
  serial_out_.finish(std::chrono::seconds(2));
  if (uint64_t lost = serial_out_.dropped()) {
    log::warning(std::to_string(lost) + " bytes of guest console output dropped (reader too slow or gone)");
  }
  std::lock_guard guard(stop_mutex_);
  return *stop_;
}

void Machine::request_stop(MachineStop stop) {
  std::lock_guard guard(stop_mutex_);
  if (stop_) return;  // the first reason wins
  stop_ = std::move(stop);
  stopping_.store(true);
  boost::asio::post(events_, [this] { events_.stop(); });
}

void Machine::stop_vcpus() {
  stopping_.store(true, std::memory_order_seq_cst);
  {
    std::lock_guard guard(pause_mutex_);  // parked vCPUs wake up and leave
    pause_cv_.notify_all();
  }
  for (size_t i = 0; i < threads_.size(); ++i) {
    if (!threads_[i].joinable()) continue;
    vcpus_[i].request_immediate_exit();
    ::pthread_kill(threads_[i].native_handle(), kKickSignal);
    threads_[i].join();
  }
  threads_.clear();
}

}  // namespace keel
