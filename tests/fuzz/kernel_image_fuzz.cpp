// libFuzzer target: a guest kernel file (keel-vmm --kernel) is untrusted
// input. parse_kernel_image (bzImage setup header, or ELF program headers
// and the PVH note) must accept it or refuse it with InputError; what it
// accepts must load into a guest of 64 MiB (load_guest_kernel: segments,
// command line, boot parameters, e820, page tables) or be refused there,
// never written outside guest memory.
//
// Seeds (tests/fuzz/corpus/kernel_image_fuzz): the first 16 KiB of the test
// guest's bzImage and ELF, and a few hand-made headers.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "common/error.h"
#include "common/guest_memory.h"
#include "tests/fuzz/fuzz_memory.h"
#include "vmm/boot/kernel_image.h"
#include "vmm/boot/memory_layout.h"
#include "vmm/boot/x86_boot.h"

using namespace keel;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<uint8_t> file(data, data + size);
  KernelImage image;
  try {
    image = parse_kernel_image(std::move(file), "fuzz");
  } catch (const InputError&) {
    return 0;
  }
  FUZZ_CHECK(image.format == KernelImage::Format::kLinuxBzImage ||
             image.format == KernelImage::Format::kPvhElf);
  static GuestMemory memory(layout::guest_ram_regions(64ull << 20));
  BootSetup setup;
  setup.cmdline = "console=ttyS0 job=fuzz";
  setup.initrd.assign(size % 4096, 0x5a);
  try {
    const BootEntry entry = load_guest_kernel(memory, image, setup);
    FUZZ_CHECK(memory.contains(entry.rip, 1));
  } catch (const InputError&) {
  }
  return 0;
}
