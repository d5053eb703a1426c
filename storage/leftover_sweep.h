// What a keelctl (or agent) that died half-way through a pool operation
// left behind: its hidden working names end in its PID (".import-NAME-PID",
// ".create-NAME-PID", ".delete-NAME-PID" in images/ and vms/,
// ".rollback-PID" and ".old-PID" in a VM's directory). Once that process
// is gone they are undone or finished: an unfinished import or create
// removed, a delete finished, a rollback interrupted between its two
// renames put back to the VM's old state. Entries of live processes are
// left alone (they are still at work).
#pragma once

#include <string>
#include <vector>

#include "storage/pool.h"

namespace keel::storage {

// One line per thing done, for the log.
std::vector<std::string> sweep_leftovers(const Pool& pool);

}  // namespace keel::storage
