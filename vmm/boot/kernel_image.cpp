#include "vmm/boot/kernel_image.h"

#include <asm/bootparam.h>
#include <elf.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/error.h"
#include "common/unique_fd.h"

namespace keel {

namespace {

template <typename T>
T load(const std::vector<uint8_t>& file, uint64_t offset) {
  T value;
  std::memcpy(&value, file.data() + offset, sizeof(T));
  return value;
}

bool fits(const std::vector<uint8_t>& file, uint64_t offset, uint64_t length) {
  return offset <= file.size() && length <= file.size() - offset;
}

// boot.rst: the protected-mode kernel is loaded at 1 MiB.
constexpr uint64_t kBzImageLoadAddress = 0x100000;

// XEN_ELFNOTE_PHYS32_ENTRY from the PVH boot ABI.
constexpr uint32_t kXenElfNotePhys32Entry = 18;

void parse_bzimage(KernelImage& image, const std::string& path) {
  const auto& file = image.file;
  auto bad = [&](const std::string& why) { return InputError("kernel " + path + ": " + why); };
  // boot.rst: the setup header starts at 0x1f1; "HdrS" at 0x202.
  auto hdr = load<setup_header>(file, 0x1f1);
  image.protocol_version = hdr.version;
  if (hdr.version < 0x020c) {
    throw bad("boot protocol " + std::to_string(hdr.version >> 8) + "." +
              std::to_string(hdr.version & 0xff) +
              " is too old (2.12 needed for the 64-bit entry)");
  }
  if (!(hdr.xloadflags & XLF_KERNEL_64)) throw bad("bzImage has no 64-bit entry point");
  if (!(hdr.loadflags & LOADED_HIGH)) throw bad("bzImage does not load at 1 MiB");
  uint32_t setup_sects = hdr.setup_sects == 0 ? 4 : hdr.setup_sects;
  image.setup_size = (static_cast<uint64_t>(setup_sects) + 1) * 512;
  if (image.setup_size >= file.size()) throw bad("bzImage is truncated after its setup sectors");
  image.cmdline_size = hdr.cmdline_size;
  image.initrd_addr_max = hdr.initrd_addr_max;
  image.init_size = hdr.init_size;
  uint64_t payload = file.size() - image.setup_size;
  if (image.init_size < payload) image.init_size = payload;
  // boot.rst: a relocatable kernel runs from the load address raised to
  // pref_address and aligned to kernel_alignment, any other one from pref_address.
  uint64_t load = kBzImageLoadAddress;
  if (hdr.relocatable_kernel) {
    uint64_t align = hdr.kernel_alignment;
    if (align == 0 || (align & (align - 1)) != 0 || align > (1ull << 30)) {
      throw bad("bzImage has a bad kernel_alignment " + std::to_string(align));
    }
    uint64_t start = std::max<uint64_t>(load, hdr.pref_address);
    image.runtime_start = (start + align - 1) & ~(align - 1);
  } else {
    image.runtime_start = hdr.pref_address ? hdr.pref_address : load;
  }
}

void parse_pvh_elf(KernelImage& image, const std::string& path) {
  const auto& file = image.file;
  auto bad = [&](const std::string& why) { return InputError("kernel " + path + ": " + why); };
  if (file[EI_CLASS] != ELFCLASS64) throw bad("only 64-bit ELF kernels are supported");
  if (!fits(file, 0, sizeof(Elf64_Ehdr))) throw bad("ELF header truncated");
  auto ehdr = load<Elf64_Ehdr>(file, 0);
  if (ehdr.e_machine != EM_X86_64) throw bad("ELF kernel is not for x86-64");
  if (ehdr.e_phentsize != sizeof(Elf64_Phdr)) throw bad("ELF program header size is wrong");
  if (ehdr.e_phnum == 0 || ehdr.e_phnum > 64) throw bad("ELF kernel has no or too many segments");
  if (!fits(file, ehdr.e_phoff, uint64_t{ehdr.e_phnum} * sizeof(Elf64_Phdr))) {
    throw bad("ELF program headers lie outside the file");
  }
  bool found_entry = false;
  for (unsigned i = 0; i < ehdr.e_phnum; ++i) {
    auto ph = load<Elf64_Phdr>(file, ehdr.e_phoff + i * sizeof(Elf64_Phdr));
    if (ph.p_type == PT_LOAD) {
      if (!fits(file, ph.p_offset, ph.p_filesz)) throw bad("ELF segment lies outside the file");
      if (ph.p_filesz > ph.p_memsz) throw bad("ELF segment is larger in the file than in memory");
      if (ph.p_paddr + ph.p_memsz < ph.p_paddr) throw bad("ELF segment wraps around");
      image.segments.push_back({ph.p_paddr, ph.p_offset, ph.p_filesz, ph.p_memsz});
    } else if (ph.p_type == PT_NOTE) {
      if (!fits(file, ph.p_offset, ph.p_filesz)) throw bad("ELF note lies outside the file");
      uint64_t at = ph.p_offset;
      uint64_t end = ph.p_offset + ph.p_filesz;
      while (end - at >= sizeof(Elf64_Nhdr)) {
        auto note = load<Elf64_Nhdr>(file, at);
        uint64_t name_at = at + sizeof(Elf64_Nhdr);
        uint64_t desc_at = name_at + ((uint64_t{note.n_namesz} + 3) & ~uint64_t{3});
        uint64_t next = desc_at + ((uint64_t{note.n_descsz} + 3) & ~uint64_t{3});
        if (next > end) throw bad("ELF note runs past its segment");
        if (note.n_type == kXenElfNotePhys32Entry && note.n_namesz == 4 &&
            std::memcmp(file.data() + name_at, "Xen", 4) == 0) {
          if (note.n_descsz != 4 && note.n_descsz != 8) throw bad("PVH entry note has a bad size");
          image.pvh_entry = load<uint32_t>(file, desc_at);
          found_entry = true;
        }
        at = next;
      }
    }
  }
  if (!found_entry) throw bad("ELF kernel has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY)");
  if (image.segments.empty()) throw bad("ELF kernel has no loadable segment");
}

}  // namespace

KernelImage parse_kernel_image(std::vector<uint8_t> file, const std::string& path) {
  KernelImage image{};
  image.file = std::move(file);
  const auto& f = image.file;
  if (fits(f, 0x1f1, sizeof(setup_header)) && std::memcmp(f.data() + 0x202, "HdrS", 4) == 0 &&
      load<uint16_t>(f, 0x1fe) == 0xaa55) {
    image.format = KernelImage::Format::kLinuxBzImage;
    parse_bzimage(image, path);
  } else if (f.size() >= EI_NIDENT && std::memcmp(f.data(), ELFMAG, SELFMAG) == 0) {
    image.format = KernelImage::Format::kPvhElf;
    parse_pvh_elf(image, path);
  } else {
    throw InputError("kernel " + path +
                     ": not a recognised kernel (neither a bzImage nor an ELF with a PVH note)");
  }
  return image;
}

std::vector<uint8_t> read_file(const std::string& path, const char* what, uint64_t max_size) {
  auto bad = [&](const std::string& why) {
    return InputError(std::string(what) + " " + path + ": " + why);
  };
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw bad(std::string("cannot open: ") + std::strerror(errno));
  UniqueFd owned(fd);
  struct stat st {};
  if (::fstat(fd, &st) < 0) throw bad(std::string("cannot stat: ") + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) throw bad("not a regular file");
  if (static_cast<uint64_t>(st.st_size) > max_size) {
    throw bad("too large (" + std::to_string(st.st_size >> 20) + " MiB, at most " +
              std::to_string(max_size >> 20) + " MiB)");
  }
  std::vector<uint8_t> bytes(static_cast<size_t>(st.st_size));
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::read(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw bad(std::string("read failed: ") + std::strerror(errno));
    if (n == 0) throw bad("file shrank while being read");
    done += static_cast<size_t>(n);
  }
  return bytes;
}

}  // namespace keel
