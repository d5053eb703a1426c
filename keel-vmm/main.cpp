// keel-vmm: runs one guest. See kVmmUsage for the command line and exit codes.
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/log.h"
#include "vmm/config/vmm_options.h"
#include "vmm/machine.h"
#include "vmm/snapshot.h"

int main(int argc, char** argv) {
  using namespace keel;
  // A reader that goes away (a closed pipe on the console) must not kill the guest.
  ::signal(SIGPIPE, SIG_IGN);
  log::init("keel-vmm");
  std::vector<std::string> args(argv + 1, argv + argc);
  try {
    VmmOptions options = parse_vmm_options(args);
    if (const char* device = std::getenv("KEEL_KVM_DEVICE")) options.kvm_device = device;
    if (options.help) {
      std::fputs(kVmmUsage, stdout);
      return 0;
    }
    std::unique_ptr<Machine> machine = options.restore_dir.empty()
                                           ? std::make_unique<Machine>(options)
                                           : restore_snapshot(options);
    MachineStop stop;
    try {
      stop = machine->run();
    } catch (const std::exception& e) {
      stop = {StopReason::kVmmError, e.what()};
    }
    int code = exit_code(stop);
    if (code != 0) {
      log::error(std::string(describe(stop.reason)) + (stop.detail.empty() ? "" : ": ") +
                 stop.detail + " (exit code " + std::to_string(code) + ")");
    }
    return code;
  } catch (const InputError& e) {
    log::error(e.what());
    return 1;
  } catch (const std::exception& e) {
    log::error(std::string("start-up failed: ") + e.what());
    return 1;
  }
}
