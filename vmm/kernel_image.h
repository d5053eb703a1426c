// Recognises and validates a guest kernel file: a Linux bzImage with a
// 64-bit entry (Documentation/arch/x86/boot.rst), or an ELF with a Xen PVH
// entry note (the PVH boot ABI). The file is untrusted input.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace keel {

struct ElfLoadSegment {
  uint64_t guest_phys;
  uint64_t file_offset;
  uint64_t file_size;
  uint64_t memory_size;
};

struct KernelImage {
  enum class Format { kLinuxBzImage, kPvhElf };
  Format format;
  std::vector<uint8_t> file;

  // kLinuxBzImage: the protected-mode part follows the setup sectors.
  uint16_t protocol_version = 0;
  uint64_t setup_size = 0;      // bytes before the protected-mode part
  uint32_t cmdline_size = 0;    // longest command line the kernel accepts
  uint32_t initrd_addr_max = 0;
  uint64_t init_size = 0;       // memory the kernel needs from its load address

  // kPvhElf
  std::vector<ElfLoadSegment> segments;
  uint32_t pvh_entry = 0;
};

// Throws InputError naming what is wrong with `file` (from `path`).
KernelImage parse_kernel_image(std::vector<uint8_t> file, const std::string& path);

// Reads a whole file; throws InputError naming the path when it cannot.
std::vector<uint8_t> read_file(const std::string& path, const char* what);

}  // namespace keel
