#include "vmm/vmm_options.h"

#include <charconv>
#include <initializer_list>
#include <utility>

#include "common/error.h"
#include "common/size_parse.h"

namespace keel {

const char* const kVmmUsage =
    "usage: keel-vmm --kernel PATH [--initrd PATH] [--cmdline STRING] [--cpus N]\n"
    "                [--memory SIZE] [--serial stdout|file=PATH]\n"
    "                [--disk path=PATH[,readonly=on]]... [--net tap=NAME[,mac=MAC]]... [--rng]\n"
    "                [--api-socket PATH]\n"
    "       keel-vmm --restore DIR [--serial ...] [--api-socket PATH] [--disk ...]... [--net ...]...\n"
    "\n"
    "Runs one virtual machine on /dev/kvm until the guest powers off.\n"
    "  --kernel PATH     bzImage (Linux boot protocol, 64-bit entry) or ELF with a PVH note\n"
    "  --initrd PATH     initial ramdisk\n"
    "  --cmdline STRING  kernel command line\n"
    "  --cpus N          vCPUs (default 1, at most 255 and what KVM allows)\n"
    "  --memory SIZE     guest RAM, e.g. 512M or 4G (default 512M, at least 16M)\n"
    "  --serial WHERE    COM1 output: stdout (default) or file=PATH\n"
    "  --disk SPEC       virtio-blk disk on a raw image file, read with io_uring:\n"
    "                    path=PATH[,readonly=on]; repeatable, the first is the\n"
    "                    guest's vda\n"
    "  --net SPEC        virtio-net adapter on an existing tap device:\n"
    "                    tap=NAME[,mac=MAC]; repeatable\n"
    "  --rng             virtio-rng entropy source (from getrandom)\n"
    "  --api-socket PATH control socket (Unix, mode 0600) for keelctl: status,\n"
    "                    pause, resume, shutdown (ACPI power button), kill, snapshot\n"
    "  --restore DIR     start from a snapshot (keelctl snapshot DIR): the guest\n"
    "                    carries on where it was; --disk/--net, when given, replace\n"
    "                    the snapshot's disks and taps in order (same count)\n"
    "\n"
    "Exit codes: 0 guest powered off; 1 bad input or start-up failure;\n"
    "  10 guest asked for a reboot; 11 guest crashed (triple fault, pvpanic);\n"
    "  12 KVM could not run the guest (internal error, failed entry);\n"
    "  13 VMM failure while running; 14 killed through the control socket (kill,\n"
    "  or a shutdown the guest did not honour in time); 130/143 stopped by\n"
    "  SIGINT/SIGTERM.\n"
    "\n"
    "Environment: KEEL_KVM_DEVICE overrides /dev/kvm.\n";

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
std::vector<std::pair<std::string, std::string>> parse_fields(const std::string& text,
                                                             const char* option,
                                                             std::initializer_list<const char*> known) {
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

DiskSpec parse_disk(const std::string& text) {
  DiskSpec disk;
  for (const auto& [key, value] : parse_fields(text, "--disk", {"path", "readonly"})) {
    if (key == "path") disk.path = value;
    if (key == "readonly") disk.readonly = parse_on_off(value, "--disk readonly");
  }
  if (disk.path.empty()) throw InputError("--disk needs path=PATH");
  return disk;
}

NetSpec parse_net(const std::string& text) {
  NetSpec net;
  for (const auto& [key, value] : parse_fields(text, "--net", {"tap", "mac"})) {
    if (key == "tap") net.tap = value;
    if (key == "mac") net.mac = parse_mac_address(value);
  }
  // IFNAMSIZ is 16 with the terminating zero.
  if (net.tap.empty() || net.tap.size() > 15) {
    throw InputError("--net needs tap=NAME (1 to 15 characters)");
  }
  return net;
}

}  // namespace

VmmOptions parse_vmm_options(const std::vector<std::string>& args) {
  VmmOptions options;
  bool have_kernel = false;
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
      options.kernel = value();
      have_kernel = !options.kernel.empty();
    } else if (name == "--initrd") {
      machine_shape.push_back(name);
      options.initrd = value();
    } else if (name == "--cmdline") {
      machine_shape.push_back(name);
      options.cmdline = value();
    } else if (name == "--cpus") {
      machine_shape.push_back(name);
      options.cpus = parse_count(value(), "--cpus");
      if (options.cpus > kMaxVcpus) {
        throw InputError("too many vCPUs: " + std::to_string(options.cpus) + " (at most " +
                         std::to_string(kMaxVcpus) + ")");
      }
    } else if (name == "--memory") {
      machine_shape.push_back(name);
      options.memory = parse_size(value());
      if (options.memory < kMinGuestMemory) {
        throw InputError("guest memory too small: at least " +
                         std::to_string(kMinGuestMemory >> 20) + "M is needed");
      }
      if (options.memory % 4096 != 0) throw InputError("guest memory must be a multiple of 4K");
    } else if (name == "--serial") {
      std::string where = value();
      if (where == "stdout") {
        options.serial_file.clear();
      } else if (where.rfind("file=", 0) == 0 && where.size() > 5) {
        options.serial_file = where.substr(5);
      } else {
        throw InputError("invalid value for --serial: '" + where + "' (expected stdout or file=PATH)");
      }
    } else if (name == "--disk") {
      options.disks.push_back(parse_disk(value()));
    } else if (name == "--net") {
      options.nets.push_back(parse_net(value()));
    } else if (name == "--api-socket") {
      options.api_socket = value();
      if (options.api_socket.empty()) throw InputError("--api-socket needs a PATH");
    } else if (name == "--rng") {
      if (inline_value) throw InputError("--rng takes no value");
      machine_shape.push_back(name);
      options.rng = true;
    } else if (name == "--restore") {
      options.restore_dir = value();
      if (options.restore_dir.empty()) throw InputError("--restore needs a DIR");
    } else {
      throw InputError("unknown option '" + args[i] + "' (see --help)");
    }
  }
  if (!options.restore_dir.empty()) {
    if (!machine_shape.empty()) {
      throw InputError(machine_shape.front() + " cannot be used with --restore: the snapshot fixes it");
    }
  } else if (!options.help && !have_kernel) {
    throw InputError("missing --kernel PATH (see --help)");
  }
  if (options.disks.size() + options.nets.size() + (options.rng ? 1 : 0) > kMaxVirtioDevices) {
    throw InputError("too many virtio devices: at most " + std::to_string(kMaxVirtioDevices));
  }
  return options;
}

}  // namespace keel
