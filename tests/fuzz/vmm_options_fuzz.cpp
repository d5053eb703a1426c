// libFuzzer target: keel-vmm's command line and the configuration checks
// (vmm/config). The input is the argument list, NUL-separated. Whatever
// parse_vmm_options accepts must pass check_vm_config as a configuration
// from elsewhere would, and must restore onto itself (config_for_restore
// with its own disks and taps given again); everything else is refused
// with InputError. A machine that comes over a stream (--incoming,
// --replica-of) learns the rest of its configuration from it.
//
// Seeds (tests/fuzz/corpus/vmm_options_fuzz): command lines from the
// README and the tests.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "common/error.h"
#include "tests/fuzz/fuzz_memory.h"
#include "vmm/config/vmm_options.h"

using namespace keel;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<std::string> args(1);
  for (size_t i = 0; i < size; ++i) {
    if (data[i] == 0) {
      args.emplace_back();
    } else {
      args.back().push_back(static_cast<char>(data[i]));
    }
  }
  VmmOptions options;
  try {
    options = parse_vmm_options(args);
  } catch (const InputError&) {
    return 0;
  }
  if (options.help || !options.restore_dir.empty() || options.streamed()) return 0;
  check_vm_config(options.config, "fuzz");  // must not throw: the parser checked
  VmmOptions again;
  again.restore_dir = "/snap";
  for (const auto& d : options.config.disks()) {
    auto* disk = again.config.add_disks();
    disk->set_path(d.path());
    disk->set_nbd(d.nbd());
    disk->set_nbd_timeout_ms(d.nbd_timeout_ms());
    disk->set_readonly(d.readonly());
  }
  for (const auto& n : options.config.nets()) again.config.add_nets()->set_tap(n.tap());
  const state::v1::VmConfig restored = config_for_restore(again, options.config);
  FUZZ_CHECK(restored.SerializeAsString() == options.config.SerializeAsString());
  return 0;
}
