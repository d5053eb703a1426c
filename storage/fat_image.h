// A small FAT16 file system image with a volume label and files in its root
// directory under long (VFAT) names: the cloud-init seed disk, which Keel
// writes itself rather than needing mkfs.fat and mtools on the host.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace keel::storage {

struct FatFile {
  std::string name;  // 1 to 255 bytes of printable ASCII, no '/', '\' or ':'
  std::string data;
};

// The image's bytes: at least 2 MiB (FAT16 needs 4085 clusters of 512
// bytes), larger as the files need, at most 32 MiB. InputError when a name
// is not allowed or twice there, or the files do not fit.
std::vector<uint8_t> make_fat_image(const std::string& label, const std::vector<FatFile>& files);

}  // namespace keel::storage
