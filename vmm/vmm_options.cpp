#include "vmm/vmm_options.h"

#include <charconv>

#include "common/error.h"
#include "common/size_parse.h"

namespace keel {

const char* const kVmmUsage =
    "usage: keel-vmm --kernel PATH [--initrd PATH] [--cmdline STRING] [--cpus N]\n"
    "                [--memory SIZE] [--serial stdout|file=PATH]\n"
    "\n"
    "Runs one virtual machine on /dev/kvm until the guest powers off.\n"
    "  --kernel PATH     bzImage (Linux boot protocol, 64-bit entry) or ELF with a PVH note\n"
    "  --initrd PATH     initial ramdisk\n"
    "  --cmdline STRING  kernel command line\n"
    "  --cpus N          vCPUs (default 1, at most 255 and what KVM allows)\n"
    "  --memory SIZE     guest RAM, e.g. 512M or 4G (default 512M, at least 16M)\n"
    "  --serial WHERE    COM1 output: stdout (default) or file=PATH\n"
    "\n"
    "Exit codes: 0 guest powered off; 1 bad input or start-up failure;\n"
    "  10 guest asked for a reboot; 11 guest crashed (triple fault, pvpanic);\n"
    "  12 KVM could not run the guest (internal error, failed entry);\n"
    "  13 VMM failure while running; 130/143 stopped by SIGINT/SIGTERM.\n"
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

}  // namespace

VmmOptions parse_vmm_options(const std::vector<std::string>& args) {
  VmmOptions options;
  bool have_kernel = false;
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
      options.kernel = value();
      have_kernel = !options.kernel.empty();
    } else if (name == "--initrd") {
      options.initrd = value();
    } else if (name == "--cmdline") {
      options.cmdline = value();
    } else if (name == "--cpus") {
      options.cpus = parse_count(value(), "--cpus");
      if (options.cpus > kMaxVcpus) {
        throw InputError("too many vCPUs: " + std::to_string(options.cpus) + " (at most " +
                         std::to_string(kMaxVcpus) + ")");
      }
    } else if (name == "--memory") {
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
    } else {
      throw InputError("unknown option '" + args[i] + "' (see --help)");
    }
  }
  if (!options.help && !have_kernel) throw InputError("missing --kernel PATH (see --help)");
  return options;
}

}  // namespace keel
