#include "vmm/config/vmm_options.h"

#include <algorithm>
#include <charconv>
#include <initializer_list>
#include <optional>
#include <utility>

#include "common/error.h"
#include "common/size_parse.h"
#include "devices/virtio/blk/virtio_blk.h"
#include "devices/virtio/blk/virtio_blk_device.h"
#include "devices/virtio/net/mac_address.h"

namespace keel {

const char* const kVmmUsage =
    "usage: keel-vmm --kernel PATH [--initrd PATH] [--cmdline STRING] [--cpus N]\n"
    "                [--memory SIZE] [--serial stdout|file=PATH]\n"
    "                [--disk path=PATH|nbd=tcp:ADDR:PORT/EXPORT[,readonly=on][,serial=S]]...\n"
    "                [--net tap=NAME[,mac=MAC]]...\n"
    "                [--rng] [--api-socket PATH] [--snapshot-root DIR] [--jail UID[:GID]]\n"
    "                [--fence-file PATH] [--event-log PATH] [--name NAME]\n"
    "       keel-vmm --restore DIR [--serial ...] [--api-socket PATH] [--disk ...]... [--net "
    "...]...\n"
    "       keel-vmm --incoming tcp:ADDR:PORT [--serial ...] [--api-socket PATH] [--disk ...]...\n"
    "                [--net ...]...\n"
    "       keel-vmm --replica-of tcp:ADDR:PORT [--serial ...] [--api-socket PATH] [--disk "
    "...]...\n"
    "                [--net ...]...\n"
    "\n"
    "Runs one virtual machine on /dev/kvm until the guest powers off.\n"
    "  --kernel PATH     bzImage (Linux boot protocol, 64-bit entry) or ELF with a PVH note\n"
    "  --initrd PATH     initial ramdisk\n"
    "  --cmdline STRING  kernel command line\n"
    "  --cpus N          vCPUs (default 1, at most 255 and what KVM allows)\n"
    "  --memory SIZE     guest RAM, e.g. 512M or 4G (default 512M, at least 16M)\n"
    "  --serial WHERE    COM1 output: stdout (default) or file=PATH (appended to,\n"
    "                    created 0600, not through a link, rotated to PATH.1\n"
    "                    at 128 MiB);\n"
    "                    keelctl console attaches to its history\n"
    "  --disk SPEC       virtio-blk disk on a raw image file, read with io_uring:\n"
    "                    path=PATH[,readonly=on][,serial=S]; repeatable, the\n"
    "                    first is the guest's vda. serial: what the guest reads\n"
    "                    as the disk's ID, up to 20 bytes (default: the file name)\n"
    "                    Or on an NBD export: nbd=tcp:ADDR:PORT/EXPORT[,timeout=S]\n"
    "                    (a lost server is reconnected, its requests sent again;\n"
    "                    after S seconds without it, default 30, I/O fails)\n"
    "  --net SPEC        virtio-net adapter on an existing tap device:\n"
    "                    tap=NAME[,mac=MAC]; repeatable (default MAC: a locally\n"
    "                    administered one derived from the tap's name)\n"
    "  --rng             virtio-rng entropy source (from getrandom)\n"
    "  --api-socket PATH control socket (Unix, mode 0600) for keelctl: status,\n"
    "                    pause, resume, shutdown (ACPI power button), kill, snapshot\n"
    "  --snapshot-root DIR  the only place snapshots may be written: keelctl\n"
    "                    snapshot names a directory below it (made 0700; no link\n"
    "                    followed, no file overwritten); without it snapshots are\n"
    "                    refused\n"
    "  --fence-file PATH keel-agent's fence deadline for this host (a 4 KiB file it\n"
    "                    keeps): once the deadline passes, the guest is paused\n"
    "                    and resume is refused until the agent moves it forward\n"
    "                    (a host cut off from the cluster's majority stops its\n"
    "                    guests before another host may start them)\n"
    "  --name NAME       the VM's name in keel-vmm's log lines\n"
    "  --event-log PATH  append each event (keelctl events: paused, snapshot taken,\n"
    "                    powered off, ...) to PATH as a line of JSON (created 0600,\n"
    "                    not through a link)\n"
    "  --restore DIR     start from a snapshot (keelctl snapshot DIR): the guest\n"
    "                    carries on where it was; give its disks and taps with\n"
    "                    --disk/--net, in order (a snapshot never chooses host\n"
    "                    files or taps; a disk keeps its serial and read-only\n"
    "                    flag, an adapter its MAC)\n"
    "  --incoming tcp:ADDR:PORT  wait there for one live migration (keelctl migrate)\n"
    "                    and run the guest it brings; the machine's shape comes\n"
    "                    from the source, disks and taps from --disk/--net as for\n"
    "                    --restore (the source's disk files, opened here too, are\n"
    "                    shared storage); port 0 picks a free one, said on stderr\n"
    "  --replica-of tcp:ADDR:PORT  keep a passive replica of a guest that runs\n"
    "                    elsewhere (keelctl replicate there): listen as --incoming\n"
    "                    does, apply each checkpoint whole, and run the guest from\n"
    "                    the last one on keelctl takeover (or a switchover); its\n"
    "                    status says state replica meanwhile\n"
    "  --jail UID[:GID]  jailed mode: once the machine is built, run as that user\n"
    "                    (not root; GID defaults to UID) in pid, mount, IPC and UTS\n"
    "                    namespaces of its own with an empty read-only root, no\n"
    "                    new privileges, resource limits, inherited descriptors\n"
    "                    closed and a seccomp filter per thread kind; a forbidden\n"
    "                    system call stops the VMM (exit code 15). The user must\n"
    "                    own --snapshot-root. Migration addresses must be numeric\n"
    "\n"
    "Exit codes: 0 guest powered off; 1 bad input or start-up failure;\n"
    "  10 guest asked for a reboot; 11 guest crashed (triple fault, pvpanic);\n"
    "  12 KVM could not run the guest (internal error, failed entry);\n"
    "  13 VMM failure while running; 14 killed through the control socket (kill,\n"
    "  or a shutdown the guest did not honour in time); 15 a jailed VMM made a\n"
    "  forbidden system call; 130/143 stopped by SIGINT/SIGTERM. After a live\n"
    "  migration the source exits 0 (\"migrated\" on stderr); an --incoming that\n"
    "  fails before the guest runs exits 1. A --replica-of whose active ends the\n"
    "  replication (replica-stop, its guest powered off) or that is killed\n"
    "  before a takeover exits 0; one whose stream fails before the first\n"
    "  checkpoint exits 1.\n"
    "\n"
    "Environment: KEEL_KVM_DEVICE overrides /dev/kvm (ignored when jailed);\n"
    "  KEEL_LOG=error|warning|info|debug sets what goes to stderr (default info).\n";

namespace {

uint32_t parse_count(const std::string& text, const char* option) {
  uint32_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value == 0) {
    throw InputError(std::string("invalid value for ") + option + ": '" + text +
                     "' (expected a positive number)");
  }
  return value;
}

// "key=value,key=value" after an option; keys must be in `known`.
std::vector<std::pair<std::string, std::string>> parse_fields(
    const std::string& text, const char* option, std::initializer_list<const char*> known) {
  std::vector<std::pair<std::string, std::string>> fields;
  size_t start = 0;
  while (start <= text.size()) {
    size_t comma = text.find(',', start);
    if (comma == std::string::npos) comma = text.size();
    const std::string field = text.substr(start, comma - start);
    const size_t eq = field.find('=');
    if (eq == std::string::npos || eq == 0) {
      throw InputError(std::string("invalid value for ") + option + ": '" + field +
                       "' is not key=value");
    }
    std::string key = field.substr(0, eq);
    bool ok = false;
    for (const char* k : known) ok = ok || key == k;
    if (!ok) throw InputError(std::string("unknown key '") + key + "' in " + option);
    for (const auto& [seen, unused] : fields) {
      if (seen == key) throw InputError(std::string("key '") + key + "' given twice in " + option);
    }
    fields.emplace_back(std::move(key), field.substr(eq + 1));
    start = comma + 1;
  }
  return fields;
}

bool parse_on_off(const std::string& value, const std::string& what) {
  if (value == "on") return true;
  if (value == "off") return false;
  throw InputError("invalid value for " + what + ": '" + value + "' (expected on or off)");
}

state::v1::DiskConfig parse_disk(const std::string& text) {
  state::v1::DiskConfig disk;
  for (const auto& [key, value] :
       parse_fields(text, "--disk", {"path", "nbd", "readonly", "serial", "timeout"})) {
    if (key == "path") disk.set_path(value);
    if (key == "nbd") disk.set_nbd(value);
    if (key == "timeout") {
      unsigned seconds = 0;
      auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), seconds);
      if (ec != std::errc() || end != value.data() + value.size() || seconds == 0 ||
          seconds > 3600) {
        throw InputError("invalid value for --disk timeout: '" + value + "' (seconds, 1 to 3600)");
      }
      disk.set_nbd_timeout_ms(seconds * 1000);
    }
    if (key == "readonly") disk.set_readonly(parse_on_off(value, "--disk readonly"));
    if (key == "serial") {
      if (value.empty()) throw InputError("--disk serial= needs 1 to 20 bytes");
      disk.set_serial(value);
    }
  }
  if (disk.path().empty() == disk.nbd().empty())
    throw InputError("--disk needs one of path=PATH and nbd=tcp:ADDR:PORT/EXPORT");
  if (disk.nbd_timeout_ms() != 0 && disk.nbd().empty())
    throw InputError("--disk timeout= is for NBD disks (nbd=...)");
  return disk;
}

state::v1::NetConfig parse_net(const std::string& text) {
  state::v1::NetConfig net;
  for (const auto& [key, value] : parse_fields(text, "--net", {"tap", "mac"})) {
    if (key == "tap") net.set_tap(value);
    if (key == "mac") {
      const MacAddress mac = parse_mac_address(value);
      net.set_mac(std::string(mac.begin(), mac.end()));
    }
  }
  return net;
}

// A stable address for a tap when the operator names none: the guest's
// network configuration (DHCP leases, neighbour caches) survives restarts.
// Locally administered, unicast (IEEE 802: first byte bits 1 and 0).
std::string mac_for_tap(const std::string& tap) {
  uint32_t hash = 2166136261u;  // FNV-1a
  for (unsigned char c : tap) hash = (hash ^ c) * 16777619u;
  const MacAddress mac{0x02,
                       0x4b,
                       0x45,
                       static_cast<uint8_t>(hash >> 16),
                       static_cast<uint8_t>(hash >> 8),
                       static_cast<uint8_t>(hash)};
  return std::string(mac.begin(), mac.end());
}

std::string mac_text(const std::string& bytes) {
  MacAddress mac{};
  std::copy_n(bytes.begin(), std::min(bytes.size(), mac.size()), mac.begin());
  return to_string(mac);
}

// The parts of the check that hold for a disk or adapter given on its own.
void check_disk(const state::v1::DiskConfig& disk, const std::string& what) {
  if (disk.path().empty() == disk.nbd().empty())
    throw InputError(what + " needs one of path=PATH and nbd=tcp:ADDR:PORT/EXPORT");
  if (disk.serial().size() > virtio::kBlkIdBytes) {
    throw InputError(what + ": serial \"" + disk.serial() + "\" is longer than " +
                     std::to_string(virtio::kBlkIdBytes) + " bytes");
  }
}

void check_net(const state::v1::NetConfig& net, const std::string& what) {
  // IFNAMSIZ is 16 with the terminating zero.
  if (net.tap().empty() || net.tap().size() > 15) {
    throw InputError(what + " needs tap=NAME (1 to 15 characters)");
  }
  if (!net.mac().empty() && net.mac().size() != 6) {
    throw InputError(what + ": a MAC address has 6 bytes, not " + std::to_string(net.mac().size()));
  }
  if (!net.mac().empty() && (static_cast<uint8_t>(net.mac()[0]) & 1)) {
    throw InputError(what + ": MAC " + mac_text(net.mac()) + " is multicast");
  }
}

}  // namespace

VmmOptions parse_vmm_options(const std::vector<std::string>& args) {
  VmmOptions options;
  state::v1::VmConfig& config = options.config;
  config.set_cpus(1);
  config.set_memory(512ull << 20);
  std::vector<std::string> machine_shape;  // options a restore takes from the snapshot
  for (size_t i = 0; i < args.size(); ++i) {
    std::string name = args[i];
    std::optional<std::string> inline_value;
    if (auto eq = name.find('='); name.rfind("--", 0) == 0 && eq != std::string::npos) {
      inline_value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    if (name == "--help" || name == "-h") {
      options.help = true;
      continue;
    }
    auto value = [&]() -> std::string {
      if (inline_value) return *inline_value;
      if (i + 1 >= args.size()) throw InputError("option " + name + " needs a value");
      return args[++i];
    };
    if (name == "--kernel") {
      machine_shape.push_back(name);
      config.set_kernel(value());
    } else if (name == "--initrd") {
      machine_shape.push_back(name);
      config.set_initrd(value());
    } else if (name == "--cmdline") {
      machine_shape.push_back(name);
      config.set_cmdline(value());
    } else if (name == "--cpus") {
      machine_shape.push_back(name);
      config.set_cpus(parse_count(value(), "--cpus"));
    } else if (name == "--memory") {
      machine_shape.push_back(name);
      config.set_memory(parse_size(value()));
    } else if (name == "--serial") {
      std::string where = value();
      if (where == "stdout") {
        options.serial_file.clear();
      } else if (where.rfind("file=", 0) == 0 && where.size() > 5) {
        options.serial_file = where.substr(5);
      } else {
        throw InputError("invalid value for --serial: '" + where +
                         "' (expected stdout or file=PATH)");
      }
    } else if (name == "--disk") {
      *config.add_disks() = parse_disk(value());
      check_disk(config.disks(config.disks_size() - 1), "--disk");
    } else if (name == "--net") {
      *config.add_nets() = parse_net(value());
      check_net(config.nets(config.nets_size() - 1), "--net");
    } else if (name == "--api-socket") {
      options.api_socket = value();
      if (options.api_socket.empty()) throw InputError("--api-socket needs a PATH");
    } else if (name == "--snapshot-root") {
      options.snapshot_root = value();
      if (options.snapshot_root.empty()) throw InputError("--snapshot-root needs a DIR");
    } else if (name == "--fence-file") {
      options.fence_file = value();
      if (options.fence_file.empty()) throw InputError("--fence-file needs a PATH");
    } else if (name == "--name") {
      options.name = value();
      if (options.name.empty() || options.name.size() > 64 ||
          options.name.find_first_of("\n\r[]") != std::string::npos) {
        throw InputError("--name needs 1 to 64 characters, no brackets or line breaks");
      }
    } else if (name == "--event-log") {
      options.event_log = value();
      if (options.event_log.empty()) throw InputError("--event-log needs a PATH");
    } else if (name == "--rng") {
      if (inline_value) throw InputError("--rng takes no value");
      machine_shape.push_back(name);
      config.set_rng(true);
    } else if (name == "--restore") {
      options.restore_dir = value();
      if (options.restore_dir.empty()) throw InputError("--restore needs a DIR");
    } else if (name == "--jail") {
      options.jail = jail::parse_jail_user(value());
    } else if (name == "--incoming") {
      options.incoming = value();
      if (options.incoming.empty()) throw InputError("--incoming needs tcp:ADDR:PORT");
    } else if (name == "--replica-of") {
      options.replica_of = value();
      if (options.replica_of.empty()) throw InputError("--replica-of needs tcp:ADDR:PORT");
    } else {
      throw InputError("unknown option '" + args[i] + "' (see --help)");
    }
  }
  {
    const int sources =
        !options.restore_dir.empty() + !options.incoming.empty() + !options.replica_of.empty();
    if (sources > 1) throw InputError("--restore, --incoming and --replica-of exclude each other");
  }
  if (!options.restore_dir.empty() || options.streamed()) {
    if (!machine_shape.empty()) {
      throw InputError(machine_shape.front() +
                       (!options.restore_dir.empty()
                            ? " cannot be used with --restore: the snapshot fixes it"
                        : !options.incoming.empty()
                            ? " cannot be used with --incoming: the migrating VM fixes it"
                            : " cannot be used with --replica-of: the replicated VM fixes it"));
    }
    if (config.disks_size() + config.nets_size() > static_cast<int>(kMaxVirtioDevices)) {
      throw InputError("too many virtio devices: at most " + std::to_string(kMaxVirtioDevices));
    }
    return options;
  }
  if (options.help) return options;
  if (config.kernel().empty()) throw InputError("missing --kernel PATH (see --help)");
  for (auto& disk : *config.mutable_disks()) {
    if (disk.serial().empty())
      disk.set_serial(virtio::default_disk_serial(disk.nbd().empty() ? disk.path() : disk.nbd()));
  }
  for (auto& net : *config.mutable_nets()) {
    if (net.mac().empty()) net.set_mac(mac_for_tap(net.tap()));
  }
  check_vm_config(config, "");
  return options;
}

void check_vm_config(const state::v1::VmConfig& config, const std::string& source) {
  const std::string prefix = source.empty() ? "" : source + ": ";
  if (config.cpus() == 0) throw InputError(prefix + "no vCPUs");
  if (config.cpus() > kMaxVcpus) {
    throw InputError(prefix + "too many vCPUs: " + std::to_string(config.cpus()) + " (at most " +
                     std::to_string(kMaxVcpus) + ")");
  }
  if (config.memory() < kMinGuestMemory) {
    throw InputError(prefix + "guest memory too small: at least " +
                     std::to_string(kMinGuestMemory >> 20) + "M is needed");
  }
  if (config.memory() % 4096 != 0)
    throw InputError(prefix + "guest memory must be a multiple of 4K");
  if (config.memory() > kMaxGuestMemory) {
    throw InputError(prefix + "guest memory " + std::to_string(config.memory()) + " is beyond " +
                     std::to_string(kMaxGuestMemory >> 40) + "T");
  }
  if (static_cast<size_t>(config.disks_size() + config.nets_size()) + (config.rng() ? 1 : 0) >
      kMaxVirtioDevices) {
    throw InputError(prefix + "too many virtio devices: at most " +
                     std::to_string(kMaxVirtioDevices));
  }
  for (int i = 0; i < config.disks_size(); ++i) {
    check_disk(config.disks(i), prefix + "disk " + std::to_string(i));
  }
  for (int i = 0; i < config.nets_size(); ++i) {
    check_net(config.nets(i), prefix + "network adapter " + std::to_string(i));
    if (config.nets(i).mac().size() != 6) {
      throw InputError(prefix + "network adapter " + std::to_string(i) + " has no MAC");
    }
  }
}

state::v1::VmConfig config_for_restore(const VmmOptions& options,
                                       const state::v1::VmConfig& snapshot,
                                       const std::string& from) {
  check_vm_config(snapshot, from);
  state::v1::VmConfig config = snapshot;
  const auto& disks = options.config.disks();
  const auto& nets = options.config.nets();
  // A snapshot names no host resources that count: its disk paths and taps
  // are what the host it came from used. A crafted one (the CRC detects
  // damage, it authenticates nothing) must not attach /dev/sda or another
  // VM's image, so the command line names every one.
  if (disks.empty() && snapshot.disks_size() > 0) {
    throw InputError("the " + from + " has " + std::to_string(snapshot.disks_size()) +
                     " disks: name each with --disk path=PATH, in order (a " + from +
                     " does not choose host files)");
  }
  if (disks.size() != snapshot.disks_size()) {
    throw InputError("--disk given " + std::to_string(disks.size()) + " times; the " + from +
                     " has " + std::to_string(snapshot.disks_size()) + " disks");
  }
  for (int i = 0; i < disks.size(); ++i) {
    const auto& given = disks[i];
    auto& disk = *config.mutable_disks(i);
    const std::string what = "--disk " + (given.nbd().empty() ? given.path() : given.nbd());
    if (given.readonly() != disk.readonly()) {
      throw InputError(what + ": the " + from + "'s disk " + std::to_string(i) + " is " +
                       (disk.readonly() ? "read-only" : "writable"));
    }
    if (!given.serial().empty() && given.serial() != disk.serial()) {
      throw InputError(what + ": the guest knows disk " + std::to_string(i) + " by serial \"" +
                       disk.serial() + "\"");
    }
    disk.set_path(given.path());
    disk.set_nbd(given.nbd());
    disk.set_nbd_timeout_ms(given.nbd_timeout_ms());
  }
  if (nets.empty() && snapshot.nets_size() > 0) {
    throw InputError("the " + from + " has " + std::to_string(snapshot.nets_size()) +
                     " network adapters: name each with --net tap=NAME, in order (a " + from +
                     " does not choose host taps)");
  }
  if (nets.size() != snapshot.nets_size()) {
    throw InputError("--net given " + std::to_string(nets.size()) + " times; the " + from +
                     " has " + std::to_string(snapshot.nets_size()) + " network adapters");
  }
  for (int i = 0; i < nets.size(); ++i) {
    const auto& given = nets[i];
    auto& net = *config.mutable_nets(i);
    if (!given.mac().empty() && given.mac() != net.mac()) {
      throw InputError("--net tap=" + given.tap() + ": the guest knows adapter " +
                       std::to_string(i) + " by MAC " + mac_text(net.mac()));
    }
    net.set_tap(given.tap());
  }
  return config;
}

}  // namespace keel
