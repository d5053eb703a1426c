// keel-vmm: runs one guest. See kVmmUsage for the command line and exit codes.
#include <signal.h>
#include <sys/stat.h>

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
#include "migration/replica_receiver.h"
#include "vmm/config/vmm_options.h"
#include "vmm/jail/process_jail.h"
#include "vmm/machine.h"
#include "vmm/snapshot.h"

namespace {

std::atomic<bool> g_stop_waiting{false};

// While --incoming or --replica-of waits for a source (before the machine
// runs and takes SIGINT/SIGTERM over): a signal ends the wait.
extern "C" void stop_waiting(int) {
  g_stop_waiting.store(true);
}

// Jailed mode's second step, once the machine holds every file, tap and
// socket it needs: the drop (vmm/jail/process_jail.h).
void confine(const keel::VmmOptions& options, keel::Machine& machine) {
  using namespace keel;
  if (!options.jail) return;
  machine.prepare_for_jail();
  const state::v1::VmConfig& config = machine.config();
  jail::JailLimits limits;
  limits.largest_file = config.memory();
  for (const auto& disk : config.disks()) {
    struct stat st {};
    if (::stat(disk.path().c_str(), &st) == 0)
      limits.largest_file = std::max<uint64_t>(limits.largest_file, st.st_size);
  }
  limits.threads = config.cpus() + 16;
  limits.writable_dir = options.snapshot_root;
  jail::enter_jail(*options.jail, limits);
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
    log::set_name(options.name);
    if (options.help) {
      std::fputs(kVmmUsage, stdout);
      return 0;
    }
    if (options.jail) {
      // Nothing handed over by accident, and a pid namespace: before any
      // file is opened or the VM made (KVM ties a VM to its process).
      jail::close_inherited_fds();
      jail::enter_pid_namespace(options.api_socket);
      if (std::getenv("KEEL_KVM_DEVICE")) log::warning("KEEL_KVM_DEVICE is ignored in jailed mode");
    } else if (const char* device = std::getenv("KEEL_KVM_DEVICE")) {
      options.kvm_device = device;
    }
    std::unique_ptr<Machine> machine;
    std::unique_ptr<migration::IncomingMigration> incoming;
    std::unique_ptr<migration::ReplicaReceiver> replica;  // after machine: ends first
    if (options.streamed()) {
      struct sigaction action {};
      action.sa_handler = stop_waiting;
      ::sigaction(SIGINT, &action, nullptr);
      ::sigaction(SIGTERM, &action, nullptr);
    }
    if (!options.replica_of.empty()) {
      replica = std::make_unique<migration::ReplicaReceiver>(options);
      log::info("waiting for a replica stream on " + replica->address());
      try {
        machine = replica->accept(g_stop_waiting,
                                  [&options](Machine& built) { confine(options, built); });
      } catch (const std::exception& e) {
        log::error(std::string("replica stream refused: ") + e.what());
        return 1;
      }
      if (!machine) {
        log::info("stopped while waiting for a replica stream");
        return 0;
      }
    } else if (!options.incoming.empty()) {
      incoming = std::make_unique<migration::IncomingMigration>(options);
      log::info("waiting for a migration on " + incoming->address());
      try {
        machine = incoming->receive(g_stop_waiting,
                                    [&options](Machine& built) { confine(options, built); });
      } catch (const std::exception& e) {
        log::error(std::string("incoming migration failed: ") + e.what());
        return 1;
      }
      if (!machine) {
        log::info("stopped while waiting for a migration");
        return 0;
      }
    } else {
      machine = options.restore_dir.empty() ? std::make_unique<Machine>(options)
                                            : restore_snapshot(options);
      confine(options, *machine);
    }
    migration::MigrationControl migrations(*machine, replica.get());
    machine->set_extension(&migrations);
    if (replica) replica->start(*machine);
    MachineStop stop;
    try {
      stop = machine->run([&incoming, &machine] {
        if (incoming) {
          machine->announce_network();
          const uint64_t bytes = incoming->bytes();  // the stream's, closed by the confirmation
          incoming->confirm_running();
          // Said once the guest runs: a line on stderr is not free while
          // the guest waits (its reader may take the CPU).
          log::info("migration received: " + std::to_string(incoming->pages()) + " pages and " +
                    std::to_string(incoming->zero_pages()) + " zero pages, " +
                    std::to_string(bytes >> 20) + " MiB");
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
    } else {
      // Said too, for logs of VMMs nobody waits for (keelctl vm start).
      log::info(std::string(describe(stop.reason)) + (stop.detail.empty() ? "" : ": ") +
                stop.detail);
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
