// The backend a disk's configuration names: its image file (RawDisk) or
// its NBD export (NbdDisk).
#pragma once

#include <memory>

#include "proto/vm_config.pb.h"
#include "storage/block_backend.h"

namespace keel::storage {

// `claim`: take the image (its lock, or the NBD connection) at once; false
// leaves that to BlockBackend::claim(). Throws InputError naming the disk.
std::unique_ptr<BlockBackend> open_disk(const state::v1::DiskConfig& config, bool claim);

}  // namespace keel::storage
