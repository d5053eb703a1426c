#include "storage/fat_image.h"

#include <algorithm>
#include <cstring>
#include <set>

#include "common/error.h"
#include "common/little_endian.h"

namespace keel::storage {

namespace {

// Microsoft's FAT specification (FAT: General Overview of On-Disk Format,
// 1.03) is what the numbers below follow: its BPB offsets, the rule that
// the cluster count alone makes a volume FAT16 (4085 to 65524 clusters),
// and the long-name entries of VFAT.
constexpr uint32_t kSector = 512;
constexpr uint32_t kRootEntries = 512;
constexpr uint32_t kRootSectors = kRootEntries * 32 / kSector;
constexpr uint32_t kMinClusters = 4096;  // safely above FAT12's 4084
constexpr uint32_t kMaxClusters = 65524;
constexpr uint16_t kDate1980 = (0 << 9) | (1 << 5) | 1;  // 1980-01-01: the image is reproducible

void put16(std::vector<uint8_t>& b, size_t at, uint16_t v) {
  store_le(std::span<uint8_t>(b.data() + at, 2), v);
}
void put32(std::vector<uint8_t>& b, size_t at, uint32_t v) {
  store_le(std::span<uint8_t>(b.data() + at, 4), v);
}

void check_name(const std::string& name) {
  const bool ok = !name.empty() && name.size() <= 255 && name != "." && name != ".." &&
                  std::all_of(name.begin(), name.end(), [](char c) {
                    return c >= 0x20 && c < 0x7f && c != '/' && c != '\\' && c != ':' && c != '*' &&
                           c != '?' && c != '"' && c != '<' && c != '>' && c != '|';
                  });
  if (!ok) throw InputError("seed disk: the file name '" + name + "' is not allowed on FAT");
}

// 8.3 names KEEL0001 ...: unique, valid, and hidden behind the long name.
std::string short_name(size_t index) {
  char buf[8];  // index < 512 (the root directory's entries)
  std::snprintf(buf, sizeof buf, "%04u", static_cast<unsigned>(index + 1) % 10000);
  return "KEEL" + std::string(buf, 4) + "   ";
}

uint8_t short_name_checksum(const std::string& name11) {
  uint8_t sum = 0;
  for (unsigned char c : name11) sum = static_cast<uint8_t>(((sum & 1) << 7) + (sum >> 1) + c);
  return sum;
}

// The long-name entries of `name`, in the order they sit on disk (last
// part first), then the short entry.
void put_directory_entries(std::vector<uint8_t>& img, size_t& at, const std::string& name,
                           const std::string& name11, uint16_t cluster, uint32_t size) {
  const size_t parts = (name.size() + 12) / 13;
  const uint8_t sum = short_name_checksum(name11);
  static constexpr size_t kCharAt[13] = {1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30};
  for (size_t p = parts; p-- > 0;) {
    uint8_t* e = img.data() + at;
    e[0] = static_cast<uint8_t>((p + 1) | (p + 1 == parts ? 0x40 : 0));
    e[11] = 0x0F;  // long name
    e[13] = sum;
    for (size_t i = 0; i < 13; ++i) {
      const size_t c = p * 13 + i;
      uint16_t ch =
          c < name.size() ? static_cast<uint8_t>(name[c]) : (c == name.size() ? 0 : 0xFFFF);
      e[kCharAt[i]] = static_cast<uint8_t>(ch);
      e[kCharAt[i] + 1] = static_cast<uint8_t>(ch >> 8);
    }
    at += 32;
  }
  std::memcpy(img.data() + at, name11.data(), 11);
  img[at + 11] = 0x20;             // archive
  put16(img, at + 16, kDate1980);  // created
  put16(img, at + 18, kDate1980);  // accessed
  put16(img, at + 24, kDate1980);  // written
  put16(img, at + 26, cluster);
  put32(img, at + 28, size);
  at += 32;
}

}  // namespace

std::vector<uint8_t> make_fat_image(const std::string& label, const std::vector<FatFile>& files) {
  if (label.empty() || label.size() > 11)
    throw InputError("seed disk: the label '" + label + "' is not 1 to 11 characters");
  std::set<std::string> names;
  uint32_t data_clusters = 0;
  size_t root_entries = 1;  // the volume label
  for (const auto& f : files) {
    check_name(f.name);
    std::string folded = f.name;
    std::transform(folded.begin(), folded.end(), folded.begin(), ::tolower);
    if (!names.insert(folded).second)
      throw InputError("seed disk: the file name '" + f.name + "' is there twice");
    data_clusters += static_cast<uint32_t>((f.data.size() + kSector - 1) / kSector);
    root_entries += (f.name.size() + 12) / 13 + 1;
  }
  if (root_entries > kRootEntries) throw InputError("seed disk: too many files");
  const uint32_t clusters = std::max(kMinClusters, data_clusters + 64);
  if (clusters > kMaxClusters)
    throw InputError("seed disk: the files take more than the 32 MiB a seed disk may hold");
  const uint32_t fat_sectors = ((clusters + 2) * 2 + kSector - 1) / kSector;
  const uint32_t first_data = 1 + 2 * fat_sectors + kRootSectors;
  const uint32_t total = first_data + clusters;
  std::vector<uint8_t> img(static_cast<size_t>(total) * kSector, 0);

  // Boot sector and BIOS parameter block.
  const uint8_t jump[3] = {0xEB, 0x3C, 0x90};
  std::memcpy(img.data(), jump, 3);
  std::memcpy(img.data() + 3, "KEEL    ", 8);
  put16(img, 11, kSector);
  img[13] = 1;        // sectors per cluster
  put16(img, 14, 1);  // reserved sectors
  img[16] = 2;        // FATs
  put16(img, 17, kRootEntries);
  if (total < 0x10000) {
    put16(img, 19, static_cast<uint16_t>(total));
  } else {
    put32(img, 32, total);
  }
  img[21] = 0xF8;  // fixed disk
  put16(img, 22, static_cast<uint16_t>(fat_sectors));
  put16(img, 24, 32);  // sectors per track, heads: geometry nobody uses
  put16(img, 26, 64);
  img[36] = 0x80;              // drive number
  img[38] = 0x29;              // extended boot signature: ID, label and type follow
  put32(img, 39, 0x6b65656c);  // volume ID
  std::string label11 = label + std::string(11 - label.size(), ' ');
  std::memcpy(img.data() + 43, label11.data(), 11);
  std::memcpy(img.data() + 54, "FAT16   ", 8);
  img[510] = 0x55;
  img[511] = 0xAA;

  // Root directory: the label, then each file; data from cluster 2 on,
  // each file's clusters one after the other.
  const size_t fat0 = kSector;
  const size_t fat_bytes = static_cast<size_t>(fat_sectors) * kSector;
  size_t dir = static_cast<size_t>(1 + 2 * fat_sectors) * kSector;
  std::memcpy(img.data() + dir, label11.data(), 11);
  img[dir + 11] = 0x08;  // volume label
  put16(img, dir + 24, kDate1980);
  dir += 32;
  put16(img, fat0 + 0, 0xFFF8);
  put16(img, fat0 + 2, 0xFFFF);
  uint32_t next = 2;
  for (size_t i = 0; i < files.size(); ++i) {
    const auto& f = files[i];
    const uint32_t n = static_cast<uint32_t>((f.data.size() + kSector - 1) / kSector);
    const uint16_t first = n == 0 ? 0 : static_cast<uint16_t>(next);
    for (uint32_t c = 0; c < n; ++c) {
      const uint32_t cluster = next + c;
      put16(img, fat0 + cluster * 2, c + 1 == n ? 0xFFFF : static_cast<uint16_t>(cluster + 1));
    }
    if (n > 0) {
      std::memcpy(img.data() + static_cast<size_t>(first_data + next - 2) * kSector, f.data.data(),
                  f.data.size());
    }
    next += n;
    put_directory_entries(img, dir, f.name, short_name(i), first,
                          static_cast<uint32_t>(f.data.size()));
  }
  std::memcpy(img.data() + fat0 + fat_bytes, img.data() + fat0, fat_bytes);  // the second FAT
  return img;
}

}  // namespace keel::storage
