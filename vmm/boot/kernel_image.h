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
  uint64_t setup_size = 0;    // bytes before the protected-mode part
  uint32_t cmdline_size = 0;  // longest command line the kernel accepts
  uint32_t initrd_addr_max = 0;
  // boot.rst "kernel runtime start address": where the kernel decompresses
  // itself to, from the load address, pref_address and kernel_alignment;
  // init_size counts from there.
  uint64_t runtime_start = 0;
  uint64_t init_size = 0;

  // kPvhElf
  std::vector<ElfLoadSegment> segments;
  uint32_t pvh_entry = 0;
};

// Throws InputError naming what is wrong with `file` (from `path`).
KernelImage parse_kernel_image(std::vector<uint8_t> file, const std::string& path);

// Reads a whole regular file of at most `max_size` bytes; throws InputError
// naming the path and the reason otherwise (a FIFO or /dev/zero as an initrd
// must not hang or exhaust the VMM).
std::vector<uint8_t> read_file(const std::string& path, const char* what, uint64_t max_size);

}  // namespace keel
