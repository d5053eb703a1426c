// keelctl's pool, image and vm commands: one host's Btrfs pool through the
// storage library (storage/pool.h, image_store.h, vm_store.h), and the VMs'
// keel-vmm processes started from their stored configuration.
#pragma once

namespace keel {

// Whether argv's first command word is pool, image or vm.
bool is_pool_command(int argc, char** argv);
// Runs it; the exit code (0 done, 1 refused or failed, 2 bad command line).
int run_pool_command(int argc, char** argv);

extern const char* const kPoolUsage;

}  // namespace keel
