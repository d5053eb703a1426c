#include "storage/open_disk.h"

#include "storage/nbd_disk.h"
#include "storage/raw_disk.h"

namespace keel::storage {

std::unique_ptr<BlockBackend> open_disk(const state::v1::DiskConfig& config, bool claim) {
  if (!config.nbd().empty()) {
    NbdDiskOptions options{.address = config.nbd(), .read_only = config.readonly(), .claim = claim};
    if (config.nbd_timeout_ms() != 0)
      options.io_timeout = std::chrono::milliseconds(config.nbd_timeout_ms());
    return std::make_unique<NbdDisk>(options);
  }
  return std::make_unique<RawDisk>(
      RawDiskOptions{.path = config.path(), .read_only = config.readonly(), .claim = claim});
}

}  // namespace keel::storage
