// Small synthetic kernel files for the boot tests.
#pragma once

#include <asm/bootparam.h>
#include <elf.h>

#include <cstdint>
#include <cstring>
#include <vector>

namespace keel::testing {

// A bzImage with one setup sector and `payload` bytes of kernel.
inline std::vector<uint8_t> make_bzimage(size_t payload = 4096, uint16_t version = 0x020f,
                                         uint16_t xloadflags = XLF_KERNEL_64,
                                         uint64_t pref_address = 0x100000,
                                         bool relocatable = false) {
  std::vector<uint8_t> file(1024 + payload, 0);
  setup_header hdr{};
  hdr.setup_sects = 1;
  hdr.boot_flag = 0xaa55;
  hdr.jump = 0x66eb;        // short jump over the header: offset byte 0x66
  hdr.header = 0x53726448;  // "HdrS"
  hdr.version = version;
  hdr.loadflags = LOADED_HIGH;
  hdr.code32_start = 0x100000;
  hdr.cmdline_size = 255;
  hdr.initrd_addr_max = 0x7fffffff;
  hdr.xloadflags = xloadflags;
  hdr.init_size = 0x10000;
  hdr.pref_address = pref_address;
  hdr.relocatable_kernel = relocatable ? 1 : 0;
  hdr.kernel_alignment = 0x200000;
  std::memcpy(file.data() + 0x1f1, &hdr, sizeof hdr);
  for (size_t i = 1024; i < file.size(); ++i) file[i] = static_cast<uint8_t>(i * 7);
  return file;
}

// An ELF64 with one PT_LOAD at `paddr` and, if `with_note`, a PVH entry note.
inline std::vector<uint8_t> make_pvh_elf(uint64_t paddr = 0x100000, uint32_t entry = 0x100040,
                                         bool with_note = true) {
  struct Note {
    Elf64_Nhdr hdr;
    char name[4];
    uint32_t desc;
  } note{{4, 4, 18}, {'X', 'e', 'n', 0}, entry};
  const size_t phoff = sizeof(Elf64_Ehdr);
  const size_t phnum = with_note ? 2 : 1;
  const size_t note_off = phoff + phnum * sizeof(Elf64_Phdr);
  const size_t code_off = 0x200;
  std::vector<uint8_t> file(code_off + 0x100, 0);
  Elf64_Ehdr eh{};
  std::memcpy(eh.e_ident, ELFMAG, SELFMAG);
  eh.e_ident[EI_CLASS] = ELFCLASS64;
  eh.e_ident[EI_DATA] = ELFDATA2LSB;
  eh.e_ident[EI_VERSION] = EV_CURRENT;
  eh.e_type = ET_EXEC;
  eh.e_machine = EM_X86_64;
  eh.e_version = EV_CURRENT;
  eh.e_entry = entry;
  eh.e_phoff = phoff;
  eh.e_ehsize = sizeof(Elf64_Ehdr);
  eh.e_phentsize = sizeof(Elf64_Phdr);
  eh.e_phnum = static_cast<uint16_t>(phnum);
  std::memcpy(file.data(), &eh, sizeof eh);
  Elf64_Phdr load{};
  load.p_type = PT_LOAD;
  load.p_offset = code_off;
  load.p_paddr = load.p_vaddr = paddr;
  load.p_filesz = 0x100;
  load.p_memsz = 0x2000;
  std::memcpy(file.data() + phoff, &load, sizeof load);
  if (with_note) {
    Elf64_Phdr ph{};
    ph.p_type = PT_NOTE;
    ph.p_offset = note_off;
    ph.p_filesz = sizeof note;
    std::memcpy(file.data() + phoff + sizeof(Elf64_Phdr), &ph, sizeof ph);
    std::memcpy(file.data() + note_off, &note, sizeof note);
  }
  for (size_t i = code_off; i < file.size(); ++i) file[i] = 0x90;
  return file;
}

}  // namespace keel::testing
