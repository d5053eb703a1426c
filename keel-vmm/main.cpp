// keel-vmm: runs one guest. See kVmmUsage for the command line and exit codes.
#include <signal.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/log.h"
#include "migration/incoming_migration.h"
#include "migration/migration_control.h"
#include "vmm/config/vmm_options.h"
#include "vmm/machine.h"
#include "vmm/snapshot.h"

namespace {

std::atomic<bool> g_stop_waiting{false};

// While --incoming waits for a source (before the machine runs and takes
// SIGINT/SIGTERM over): a signal ends the wait.
extern "C" void stop_waiting(int) {
  g_stop_waiting.store(true);
}

}  // namespace

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
    std::unique_ptr<Machine> machine;
    std::unique_ptr<migration::IncomingMigration> incoming;
    if (!options.incoming.empty()) {
      struct sigaction action {};
      action.sa_handler = stop_waiting;
      ::sigaction(SIGINT, &action, nullptr);
      ::sigaction(SIGTERM, &action, nullptr);
      incoming = std::make_unique<migration::IncomingMigration>(options);
      log::info("waiting for a migration on " + incoming->address());
      try {
        machine = incoming->receive(g_stop_waiting);
      } catch (const std::exception& e) {
        log::error(std::string("incoming migration failed: ") + e.what());
        return 1;
      }
      if (!machine) {
        log::info("stopped while waiting for a migration");
        return 0;
      }
      log::info("migration received: " + std::to_string(incoming->pages()) + " pages and " +
                std::to_string(incoming->zero_pages()) + " zero pages, " +
                std::to_string(incoming->bytes() >> 20) + " MiB");
    } else {
      machine = options.restore_dir.empty() ? std::make_unique<Machine>(options)
                                            : restore_snapshot(options);
    }
    migration::MigrationControl migrations(*machine);
    machine->set_extension(&migrations);
    MachineStop stop;
    try {
      stop = machine->run([&incoming, &machine] {
        if (incoming) {
          machine->announce_network();
          incoming->confirm_running();
        }
      });
    } catch (const std::exception& e) {
      stop = {StopReason::kVmmError, e.what()};
    }
    int code = exit_code(stop);
    if (stop.reason == StopReason::kMigrated) {
      log::info("migrated: " + stop.detail);
    } else if (code != 0) {
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
