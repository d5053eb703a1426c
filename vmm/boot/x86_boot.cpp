#include "vmm/boot/x86_boot.h"

#include <algorithm>
#include <cstring>

#include "common/error.h"
#include "common/hex.h"
#include "vmm/boot/memory_layout.h"
#include "vmm/boot/page_tables.h"

namespace keel {

namespace {

// PVH boot ABI: struct hvm_start_info (version 1) and its memory map entry.
struct HvmStartInfo {
  uint32_t magic;
  uint32_t version;
  uint32_t flags;
  uint32_t nr_modules;
  uint64_t modlist_paddr;
  uint64_t cmdline_paddr;
  uint64_t rsdp_paddr;
  uint64_t memmap_paddr;
  uint32_t memmap_entries;
  uint32_t reserved;
};
static_assert(sizeof(HvmStartInfo) == 56);
struct HvmModlistEntry {
  uint64_t paddr;
  uint64_t size;
  uint64_t cmdline_paddr;
  uint64_t reserved;
};
struct HvmMemmapEntry {
  uint64_t addr;
  uint64_t size;
  uint32_t type;
  uint32_t reserved;
};
constexpr uint32_t kHvmStartMagic = 0x336ec578;

// GDT entries: null, null, code (selector 0x10), data (0x18), as boot.rst
// names __BOOT_CS and __BOOT_DS.
constexpr uint64_t kGdtCode64 = 0x00af9b000000ffff;
constexpr uint64_t kGdtCode32 = 0x00cf9b000000ffff;
constexpr uint64_t kGdtData = 0x00cf93000000ffff;
constexpr uint16_t kBootCs = 0x10;
constexpr uint16_t kBootDs = 0x18;

uint64_t low_ram_end(const GuestMemory& memory) {
  return memory.regions().front().size;
}

uint64_t place_initrd(const GuestMemory& memory, uint64_t size, uint64_t max_addr,
                      uint64_t lowest) {
  uint64_t end = low_ram_end(memory);
  if (max_addr != 0 && max_addr + 1 < end) end = max_addr + 1;
  if (size > end || ((end - size) & ~uint64_t{0xfff}) < lowest) {
    throw InputError("initrd of " + std::to_string(size >> 20) +
                     " MiB does not fit in guest memory below 4 GiB; give the guest more memory");
  }
  return (end - size) & ~uint64_t{0xfff};
}

void write_gdt(GuestMemory& memory, bool long_mode) {
  const uint64_t gdt[4] = {0, 0, long_mode ? kGdtCode64 : kGdtCode32, kGdtData};
  memory.write_obj(layout::kGdt, gdt);
}

BootEntry load_bzimage(GuestMemory& memory, const KernelImage& image, const BootSetup& setup) {
  // The kernel decompresses itself to its runtime start and needs init_size
  // bytes from there; the file itself goes to 1 MiB.
  uint64_t payload_end = layout::kKernelLoad + (image.file.size() - image.setup_size);
  uint64_t kernel_end = std::max(image.runtime_start + image.init_size, payload_end);
  if (kernel_end > low_ram_end(memory)) {
    throw InputError("guest memory is too small for the kernel (it needs " +
                     std::to_string((kernel_end >> 20) + 1) + " MiB below 4 GiB)");
  }
  if (setup.cmdline.size() > image.cmdline_size || setup.cmdline.size() >= layout::kCmdlineMax) {
    throw InputError("kernel command line is " + std::to_string(setup.cmdline.size()) +
                     " bytes; this kernel accepts at most " + std::to_string(image.cmdline_size));
  }
  std::span<const uint8_t> payload(image.file.data() + image.setup_size,
                                   image.file.size() - image.setup_size);
  memory.write(layout::kKernelLoad, payload);

  std::vector<uint8_t> cmdline(setup.cmdline.begin(), setup.cmdline.end());
  cmdline.push_back(0);
  memory.write(layout::kCmdline, cmdline);

  uint64_t initrd_addr = 0;
  if (!setup.initrd.empty()) {
    initrd_addr =
        place_initrd(memory, setup.initrd.size(),
                     image.initrd_addr_max ? image.initrd_addr_max : 0x37ffffff, kernel_end);
    memory.write(initrd_addr, setup.initrd);
  }
  auto zero_page = build_zero_page(image, layout::kCmdline, initrd_addr, setup.initrd.size(),
                                   build_e820(memory.regions()), setup.acpi_rsdp);
  memory.write_obj(layout::kZeroPage, zero_page);
  write_gdt(memory, true);
  uint64_t cr3 = write_identity_page_tables(memory, layout::kPageTables);
  // boot.rst, 64-bit boot protocol: enter at the load address plus 0x200.
  return BootEntry{true, layout::kKernelLoad + 0x200, layout::kZeroPage, 0, cr3};
}

BootEntry load_pvh_elf(GuestMemory& memory, const KernelImage& image, const BootSetup& setup) {
  uint64_t kernel_end = 0;
  for (const auto& seg : image.segments) {
    if (!memory.contains(seg.guest_phys, seg.memory_size) || seg.guest_phys < layout::kKernelLoad) {
      throw InputError("kernel segment at " + hex(seg.guest_phys) +
                       " does not fit in guest RAM from 1 MiB on");
    }
    uint8_t* dst = memory.host_range_for_write(seg.guest_phys, seg.memory_size);
    std::memcpy(dst, image.file.data() + seg.file_offset, seg.file_size);
    std::memset(dst + seg.file_size, 0, seg.memory_size - seg.file_size);
    kernel_end = std::max(kernel_end, seg.guest_phys + seg.memory_size);
  }
  if (setup.cmdline.size() >= layout::kCmdlineMax) {
    throw InputError("kernel command line is longer than " +
                     std::to_string(layout::kCmdlineMax - 1));
  }
  std::vector<uint8_t> cmdline(setup.cmdline.begin(), setup.cmdline.end());
  cmdline.push_back(0);
  memory.write(layout::kCmdline, cmdline);

  auto e820 = build_e820(memory.regions());
  HvmStartInfo info{};
  info.magic = kHvmStartMagic;
  info.version = 1;
  info.cmdline_paddr = layout::kCmdline;
  info.rsdp_paddr = setup.acpi_rsdp;
  uint64_t next = layout::kPvhStartInfo + sizeof(HvmStartInfo);
  if (!setup.initrd.empty()) {
    HvmModlistEntry module{};
    module.paddr = place_initrd(memory, setup.initrd.size(), 0, (kernel_end + 0xfff) & ~0xfffull);
    module.size = setup.initrd.size();
    memory.write(module.paddr, setup.initrd);
    memory.write_obj(next, module);
    info.nr_modules = 1;
    info.modlist_paddr = next;
    next += sizeof(HvmModlistEntry);
  }
  info.memmap_paddr = next;
  info.memmap_entries = static_cast<uint32_t>(e820.size());
  for (const auto& e : e820) {
    memory.write_obj(next, HvmMemmapEntry{e.address, e.size, e.type, 0});
    next += sizeof(HvmMemmapEntry);
  }
  if (next > layout::kZeroPage) throw InputError("too many PVH memory map entries");
  memory.write_obj(layout::kPvhStartInfo, info);
  write_gdt(memory, false);
  return BootEntry{false, image.pvh_entry, 0, layout::kPvhStartInfo, 0};
}

kvm_segment flat_segment(uint16_t selector, uint8_t type, bool code64) {
  kvm_segment seg{};
  seg.base = 0;
  seg.limit = 0xffffffff;
  seg.selector = selector;
  seg.type = type;
  seg.present = 1;
  seg.dpl = 0;
  seg.db = code64 ? 0 : 1;
  seg.s = 1;
  seg.l = code64 ? 1 : 0;
  seg.g = 1;
  return seg;
}

}  // namespace

boot_params build_zero_page(const KernelImage& image, uint64_t cmdline_addr, uint64_t initrd_addr,
                            uint64_t initrd_size, const std::vector<E820Entry>& e820,
                            uint64_t acpi_rsdp) {
  boot_params params{};
  // The setup header runs from 0x1f1 to 0x202 plus the jump's offset byte;
  // never past the header we know, whatever the file says.
  const size_t hdr_offset = offsetof(boot_params, hdr);
  size_t hdr_end = size_t{0x202} + image.file[0x201];
  hdr_end = std::min({hdr_end, hdr_offset + sizeof(setup_header), image.file.size()});
  std::memcpy(reinterpret_cast<uint8_t*>(&params) + hdr_offset, image.file.data() + hdr_offset,
              hdr_end - hdr_offset);
  params.hdr.type_of_loader = 0xff;  // boot.rst: undefined loader
  params.hdr.cmd_line_ptr = static_cast<uint32_t>(cmdline_addr);
  params.ext_cmd_line_ptr = static_cast<uint32_t>(cmdline_addr >> 32);
  params.hdr.ramdisk_image = static_cast<uint32_t>(initrd_addr);
  params.ext_ramdisk_image = static_cast<uint32_t>(initrd_addr >> 32);
  params.hdr.ramdisk_size = static_cast<uint32_t>(initrd_size);
  params.ext_ramdisk_size = static_cast<uint32_t>(initrd_size >> 32);
  params.acpi_rsdp_addr = acpi_rsdp;
  if (e820.size() > E820_MAX_ENTRIES_ZEROPAGE) throw InputError("too many e820 entries");
  params.e820_entries = static_cast<uint8_t>(e820.size());
  for (size_t i = 0; i < e820.size(); ++i) {
    params.e820_table[i].addr = e820[i].address;
    params.e820_table[i].size = e820[i].size;
    params.e820_table[i].type = e820[i].type;
  }
  return params;
}

BootEntry load_guest_kernel(GuestMemory& memory, const KernelImage& image, const BootSetup& setup) {
  if (image.format == KernelImage::Format::kLinuxBzImage) return load_bzimage(memory, image, setup);
  return load_pvh_elf(memory, image, setup);
}

std::vector<kvm_msr_entry> boot_msrs() {
  constexpr uint32_t kMsrTsc = 0x10;
  constexpr uint32_t kMsrMiscEnable = 0x1a0;
  constexpr uint64_t kMiscEnableFastString = 1;
  constexpr uint32_t kMsrMtrrDefType = 0x2ff;
  constexpr uint64_t kMtrrEnable = 1 << 11, kMtrrTypeWriteBack = 6;
  auto msr = [](uint32_t index, uint64_t value) {
    kvm_msr_entry e{};
    e.index = index;
    e.data = value;
    return e;
  };
  return {msr(kMsrTsc, 0), msr(kMsrMiscEnable, kMiscEnableFastString),
          msr(kMsrMtrrDefType, kMtrrEnable | kMtrrTypeWriteBack)};
}

void set_boot_vcpu_state(kvm::Vcpu& vcpu, const BootEntry& entry) {
  kvm_sregs sregs = vcpu.get_sregs();
  sregs.cs = flat_segment(kBootCs, 0xb, entry.long_mode);
  kvm_segment data = flat_segment(kBootDs, 0x3, false);
  sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = data;
  sregs.gdt.base = layout::kGdt;
  sregs.gdt.limit = 4 * 8 - 1;
  sregs.idt.base = 0;
  sregs.idt.limit = 0;
  // A usable busy 32-bit TSS: VMX refuses to enter with an unusable TR.
  sregs.tr = kvm_segment{};
  sregs.tr.limit = 0xffff;
  sregs.tr.type = 0xb;
  sregs.tr.present = 1;
  constexpr uint64_t kCr0Pe = 1, kCr0Et = 1 << 4, kCr0Pg = 1ull << 31;
  constexpr uint64_t kCr4Pae = 1 << 5;
  constexpr uint64_t kEferLme = 1 << 8, kEferLma = 1 << 10;
  if (entry.long_mode) {
    sregs.cr0 = kCr0Pe | kCr0Et | kCr0Pg;
    sregs.cr3 = entry.cr3;
    sregs.cr4 = kCr4Pae;
    sregs.efer = kEferLme | kEferLma;
  } else {
    sregs.cr0 = kCr0Pe | kCr0Et;
    sregs.cr3 = 0;
    sregs.cr4 = 0;
    sregs.efer = 0;
  }
  vcpu.set_sregs(sregs);

  kvm_regs regs{};
  regs.rflags = 0x2;
  regs.rip = entry.rip;
  regs.rsi = entry.rsi;
  regs.rbx = entry.rbx;
  regs.rsp = layout::kBootStackTop;
  vcpu.set_regs(regs);

  kvm_fpu fpu{};
  fpu.fcw = 0x37f;
  fpu.mxcsr = 0x1f80;
  vcpu.set_fpu(fpu);
}

}  // namespace keel
