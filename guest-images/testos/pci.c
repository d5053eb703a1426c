// testos: PCI bus 0 through configuration mechanism #1 (ports 0xcf8/0xcfc).
// Port I/O is for discovery only: on PVM hosts each ring-3 IN/OUT traps to
// the #GP handler (kernel.c), so the data path uses memory BARs.
#include "virtio.h"

struct pci_fn pci_fns[PCI_MAX_FNS];
u32 pci_nfns;
static int scanned;

static u32 cfg_addr(const struct pci_fn* f, u32 off) {
  return 0x80000000u | ((u32)f->dev << 11) | ((u32)f->fn << 8) | (off & 0xfc);
}

u32 pci_read32(const struct pci_fn* f, u32 off) {
  outl(0xcf8, cfg_addr(f, off));
  return inl(0xcfc);
}
u16 pci_read16(const struct pci_fn* f, u32 off) { return (u16)(pci_read32(f, off) >> (8 * (off & 2))); }
u8 pci_read8(const struct pci_fn* f, u32 off) { return (u8)(pci_read32(f, off) >> (8 * (off & 3))); }

void pci_write32(const struct pci_fn* f, u32 off, u32 v) {
  outl(0xcf8, cfg_addr(f, off));
  outl(0xcfc, v);
}
void pci_write16(const struct pci_fn* f, u32 off, u16 v) {
  outl(0xcf8, cfg_addr(f, off));
  outw((u16)(0xcfc + (off & 2)), v);
}
void pci_write8(const struct pci_fn* f, u32 off, u8 v) {
  outl(0xcf8, cfg_addr(f, off));
  outb((u16)(0xcfc + (off & 3)), v);
}

void pci_scan(void) {
  if (scanned) return;
  scanned = 1;
  for (u8 dev = 0; dev < 32; dev++) {
    for (u8 fn = 0; fn < 8; fn++) {
      struct pci_fn probe = {.dev = dev, .fn = fn};
      u32 id = pci_read32(&probe, 0);
      if ((id & 0xffff) == 0xffff) {
        if (fn == 0) break;
        continue;
      }
      if (pci_nfns == PCI_MAX_FNS) return;
      struct pci_fn* f = &pci_fns[pci_nfns++];
      *f = probe;
      f->vendor = (u16)id;
      f->device = (u16)(id >> 16);
      u32 cls = pci_read32(f, 8);
      f->class_code = (u8)(cls >> 24);
      f->subclass = (u8)(cls >> 16);
      f->subsys = (u16)(pci_read32(f, 0x2c) >> 16);
      // Header type bit 7: multi-function; otherwise only function 0.
      if (fn == 0 && !(pci_read8(f, 0x0e) & 0x80)) break;
    }
  }
}

// Reads a memory BAR (both halves of a 64-bit one); *is64, *size (sized
// with decoding off, then restored). Returns the address.
static u64 bar_info(const struct pci_fn* f, u32 bar, u32* is64, u64* size) {
  u32 off = 0x10 + 4 * bar;
  u32 lo = pci_read32(f, off);
  if (lo & 1) fatal("PCI %x.%x BAR%u is an I/O BAR", f->dev, f->fn, bar);
  *is64 = ((lo >> 1) & 3) == 2;
  u32 hi = *is64 ? pci_read32(f, off + 4) : 0;
  if (size) {
    u16 cmd = pci_read16(f, 4);
    pci_write16(f, 4, cmd & ~3);
    pci_write32(f, off, ~0u);
    u32 mlo = pci_read32(f, off) & ~0xfu;
    u32 mhi = ~0u;
    if (*is64) {
      pci_write32(f, off + 4, ~0u);
      mhi = pci_read32(f, off + 4);
      pci_write32(f, off + 4, hi);
    }
    pci_write32(f, off, lo);
    pci_write16(f, 4, cmd);
    u64 mask = ((u64)mhi << 32) | mlo;
    *size = mlo ? (~mask + 1) : 0;
  }
  return ((u64)hi << 32) | (lo & ~0xfu);
}

// True if [a, a+len) overlaps an e820 entry or another function's memory BAR.
static int window_busy(u64 a, u64 len, const struct pci_fn* self, u32 self_bar) {
  for (u32 i = 0; i < binfo->e820_count; i++) {
    const struct e820_entry* e = &binfo->e820[i];
    if (e->addr < a + len && a < e->addr + e->size) return 1;
  }
  for (u32 i = 0; i < pci_nfns; i++) {
    const struct pci_fn* f = &pci_fns[i];
    u32 nbars = (pci_read8(f, 0x0e) & 0x7f) == 0 ? 6 : 2;
    for (u32 b = 0; b < nbars; b++) {
      u32 v = pci_read32(f, 0x10 + 4 * b);
      if (v & 1) continue;
      u32 is64;
      u64 size;
      if (f == self && b == self_bar) {
        if (((v >> 1) & 3) == 2) b++;
        continue;
      }
      u64 base = bar_info(f, b, &is64, &size);
      if (is64) b++;
      if (base && size && base < a + len && a < base + size) return 1;
    }
  }
  // The IOAPIC, HPET and local APIC live at 0xfec00000 and up.
  return a + len > 0xfc000000ULL;
}

u64 pci_bar_address(const struct pci_fn* f, u32 bar) {
  u32 is64;
  u64 size;
  u64 base = bar_info(f, bar, &is64, 0);
  if (base == 0 || base >= binfo->map_limit) {
    bar_info(f, bar, &is64, &size);
    if (size == 0) fatal("PCI %x.%x BAR%u is not implemented", f->dev, f->fn, bar);
    u64 a = 0xc0000000ULL;
    while (window_busy(a, size, f, bar)) {
      a += size;
      if (a + size > 0xfc000000ULL) fatal("no room for PCI %x.%x BAR%u (0x%llx bytes)", f->dev, f->fn, bar, size);
    }
    u16 cmd = pci_read16(f, 4);
    pci_write16(f, 4, cmd & ~2);
    pci_write32(f, 0x10 + 4 * bar, (u32)a);
    if (is64) pci_write32(f, 0x14 + 4 * bar, 0);
    kprintf("testos: pci %x.%x bar%u moved from 0x%llx to 0x%llx size=0x%llx\n", f->dev, f->fn, bar,
            base, a, size);
    base = a;
  }
  u16 cmd = pci_read16(f, 4);
  if (!(cmd & 2)) pci_write16(f, 4, cmd | 2);
  return base;
}
