// testos ring 0: turn the loader's hand-over into a bootinfo, build our own
// page tables, TSS and IDT, then drop to ring 3. Kept short on purpose: on
// PVM hosts every ring-0 instruction is emulated.
#include "testos.h"

struct tss64 {
  u32 reserved0;
  u64 rsp0, rsp1, rsp2;
  u64 reserved1;
  u64 ist[7];
  u64 reserved2;
  u16 reserved3;
  u16 iomap_base;
} PACKED;

struct idt_gate {
  u16 off0;
  u16 sel;
  u8 ist;
  u8 type;
  u16 off1;
  u32 off2;
  u32 reserved;
} PACKED;

struct exc_frame {
  u64 r15, r14, r13, r12, r11, r10, r9, r8, rdi, rsi, rbp, rbx, rdx, rcx, rax;
  u64 vector, error, rip, cs, rflags, rsp, ss;
};

extern u64 gdt[];

static struct bootinfo bi;
static struct tss64 tss;
static struct idt_gate idt[256] __attribute__((aligned(16)));
static u8 kstack[16384] __attribute__((aligned(16)));  // RSP0: exceptions from ring 3
static u8 dfstack[8192] __attribute__((aligned(16)));  // IST1: #DF
static u8 ustack[65536] __attribute__((aligned(16)));  // ring-3 stack

// Final page tables (section .bss.pgt: not cleared at boot, every entry used is written): PML4, one PDPT (512 GiB), and PDs for 2 MiB pages: always
// for the low 4 GiB, beyond that when 1 GiB pages are not available (64 GiB at most then).
#define MAX_PD_GIB 64
static u64 pml4[512] __attribute__((section(".bss.pgt"), aligned(4096)));
static u64 pdpt[512] __attribute__((section(".bss.pgt"), aligned(4096)));
static u64 pds[MAX_PD_GIB][512] __attribute__((section(".bss.pgt"), aligned(4096)));

#define PTE_P 0x1ULL
#define PTE_RW 0x2ULL
#define PTE_US 0x4ULL
#define PTE_PS 0x80ULL
#define PTE_UC 0x18ULL  // PWT | PCD
#define GIB (1ULL << 30)

static void copy_cmdline(u64 pa) {
  if (pa == 0) return;
  const char* s = (const char*)(uptr)pa;
  u32 i = 0;
  for (; i < CMDLINE_MAX - 1 && s[i]; i++) bi.cmdline[i] = s[i];
  bi.cmdline[i] = 0;
}

static void read_linux(u64 bp) {
  const u8* p = (const u8*)(uptr)bp;
  u32 n = p[0x1e8];
  if (n > E820_MAX) n = E820_MAX;
  const u8* e = p + 0x2d0;
  for (u32 i = 0; i < n; i++, e += 20) {
    bi.e820[i].addr = *(const u64*)e;
    bi.e820[i].size = *(const u64*)(e + 8);
    bi.e820[i].type = *(const u32*)(e + 16);
  }
  bi.e820_count = n;
  bi.rsdp = *(const u64*)(p + 0x70);
  copy_cmdline(*(const u32*)(p + 0x228) | ((u64) * (const u32*)(p + 0xc8) << 32));
}

static void read_pvh(u64 si) {
  const u8* p = (const u8*)(uptr)si;
  if (*(const u32*)p != 0x336ec578) fatal("bad PVH start_info magic");
  u32 version = *(const u32*)(p + 4);
  copy_cmdline(*(const u64*)(p + 24));
  bi.rsdp = *(const u64*)(p + 32);
  if (version < 1 || *(const u64*)(p + 40) == 0) fatal("PVH start_info has no memory map");
  const u8* e = (const u8*)(uptr) * (const u64*)(p + 40);
  u32 n = *(const u32*)(p + 48);
  if (n > E820_MAX) n = E820_MAX;
  for (u32 i = 0; i < n; i++, e += 24) {
    bi.e820[i].addr = *(const u64*)e;
    bi.e820[i].size = *(const u64*)(e + 8);
    bi.e820[i].type = *(const u32*)(e + 16);
  }
  bi.e820_count = n;
}

// Whether [pa, pa+len) overlaps e820 RAM or ACPI tables/NVS (types 1, 3, 4).
static int holds_memory(u64 pa, u64 len) {
  for (u32 i = 0; i < bi.e820_count; i++) {
    const struct e820_entry* e = &bi.e820[i];
    if (e->type != E820_RAM && e->type != 3 && e->type != 4) continue;
    if (e->addr < pa + len && pa < e->addr + e->size) return 1;
  }
  return 0;
}

static void build_page_tables(void) {
  u64 top = 4 * GIB;
  for (u32 i = 0; i < bi.e820_count; i++) {
    u64 end = bi.e820[i].addr + bi.e820[i].size;
    if (end > top) top = end;
  }
  u32 a, b, c, d;
  cpuid(0x80000000, 0, &a, &b, &c, &d);
  u32 gb = 0;
  if (a >= 0x80000001) {
    cpuid(0x80000001, 0, &a, &b, &c, &d);
    gb = (d >> 26) & 1;
  }
  u64 gibs = (top + GIB - 1) / GIB;
  u64 max = gb ? 512 : MAX_PD_GIB;
  if (gibs > max) gibs = max;

  for (u32 i = 0; i < 512; i++) pml4[i] = 0;
  pml4[0] = (u64)(uptr)pdpt | PTE_P | PTE_RW | PTE_US;
  for (u32 i = 0; i < 512; i++) {
    u64 e = 0;
    if (i < 4) {
      // The low 4 GiB always in 2 MiB pages: device BARs (the PCI hole,
      // 0xc0000000 up) are mapped uncached, PCD|PWT = PAT entry 3 (UC), so
      // MMIO is never cached or write-combined; RAM and ACPI tables stay WB.
      for (u32 j = 0; j < 512; j++) {
        u64 pa = (u64)i * GIB + (u64)j * (2ULL << 20);
        pds[i][j] = pa | PTE_P | PTE_RW | PTE_US | PTE_PS | (holds_memory(pa, 2ULL << 20) ? 0 : PTE_UC);
      }
      e = (u64)(uptr)pds[i] | PTE_P | PTE_RW | PTE_US;
    } else if (i < gibs) {
      if (gb) {
        e = ((u64)i * GIB) | PTE_P | PTE_RW | PTE_US | PTE_PS;
      } else {
        for (u32 j = 0; j < 512; j++)
          pds[i][j] = ((u64)i * GIB + (u64)j * (2ULL << 20)) | PTE_P | PTE_RW | PTE_US | PTE_PS;
        e = (u64)(uptr)pds[i] | PTE_P | PTE_RW | PTE_US;
      }
    }
    pdpt[i] = e;
  }
  __asm__ volatile("mov %0, %%cr3" : : "r"((u64)(uptr)pml4) : "memory");
  bi.map_limit = gibs * GIB;
  bi.gb_pages = gb;
}

static void set_gate(u32 vec, u64 handler, u8 type, u8 ist) {
  idt[vec].off0 = (u16)handler;
  idt[vec].sel = SEL_KCODE;
  idt[vec].ist = ist;
  idt[vec].type = type;
  idt[vec].off1 = (u16)(handler >> 16);
  idt[vec].off2 = (u32)(handler >> 32);
  idt[vec].reserved = 0;
}

static void setup_cpu_tables(void) {
  tss.rsp0 = (u64)(uptr)(kstack + sizeof kstack);
  tss.ist[0] = (u64)(uptr)(dfstack + sizeof dfstack);
  tss.iomap_base = sizeof tss;
  u64 base = (u64)(uptr)&tss;
  u64 limit = sizeof tss - 1;
  gdt[SEL_TSS / 8] = (limit & 0xffff) | ((base & 0xffffff) << 16) | (0x89ULL << 40) |
                     (((limit >> 16) & 0xf) << 48) | (((base >> 24) & 0xff) << 56);
  gdt[SEL_TSS / 8 + 1] = base >> 32;
  __asm__ volatile("ltr %w0" : : "r"(SEL_TSS));

  for (u32 v = 0; v < 32; v++) set_gate(v, isr_table[v], 0x8e, v == 8 ? 1 : 0);
  struct {
    u16 limit;
    u64 base;
  } PACKED desc = {sizeof idt - 1, (u64)(uptr)idt};
  __asm__ volatile("lidt %0" : : "m"(desc));
}

// kvmclock (KVM's paravirtual clock, MSR_KVM_SYSTEM_TIME_NEW) publishes the
// TSC-to-nanoseconds scale, from which the TSC frequency follows exactly. On
// PVM hosts guest CPUID is the host's, so this is how the guest learns the
// frequency there without a 40 ms PIT calibration. Ring 0: WRMSR.
static u64 kvmclock_tsc_khz(void) {
  u32 a, b, c, d;
  cpuid(1, 0, &a, &b, &c, &d);
  if (!(c & (1u << 31))) return 0;  // no hypervisor
  cpuid(0x40000000, 0, &a, &b, &c, &d);
  if (b != 0x4b4d564b || c != 0x564b4d56 || d != 0x4d) return 0;  // "KVMKVMKVM\0\0\0"
  cpuid(0x40000001, 0, &a, &b, &c, &d);
  if (!(a & (1u << 3))) return 0;  // KVM_FEATURE_CLOCKSOURCE2
  static volatile struct {
    u32 version, pad0;
    u64 tsc_timestamp, system_time;
    u32 tsc_to_system_mul;
    s8 tsc_shift;
    u8 flags, pad[2];
  } clock __attribute__((aligned(64)));
  wrmsr(0x4b564d01, (u64)(uptr)&clock | 1);
  u32 version, mul;
  s8 shift;
  do {  // the hypervisor updates the structure under an odd version
    version = clock.version;
    mul = clock.tsc_to_system_mul;
    shift = clock.tsc_shift;
  } while ((version & 1) || version != clock.version);
  wrmsr(0x4b564d01, 0);
  if (mul == 0) return 0;
  u64 khz = (1000000ull << 32) / mul;
  return shift < 0 ? khz << -shift : khz >> shift;
}

void kernel_start(u32 kind, u64 ptr) {
  serial_init();
  kprintf("testos: boot\n");
  // Fatal errors from here on are printed and end in a triple fault.
  bi.boot_kind = kind;
  if (kind == BOOT_PVH)
    read_pvh(ptr);
  else
    read_linux(ptr);
  build_page_tables();
  bi.kernel_end = (u64)(uptr)_end;
  bi.kvmclock_tsc_khz = kvmclock_tsc_khz();
  setup_cpu_tables();
  enter_user(kmain, (u64)(uptr)(ustack + sizeof ustack) - 8, &bi);
}

// Ring-3 IN/OUT (and the serial code's rep outsb) that raised #GP although IOPL is 3 (PVM hosts run guest
// ring 3 in host ring 3 and do not honour the guest's IOPL): do it here and
// step over it. Returns 0 if the instruction is not port I/O.
static int emulate_port_io(struct exc_frame* f) {
  const u8* ip = (const u8*)(uptr)f->rip;
  u32 len = 0, size = 4;
  if (ip[0] == 0xf3 && ip[1] == 0x6e) {  // rep outsb (DF=0)
    u64 src = f->rsi, cnt = f->rcx;
    __asm__ volatile("cld; rep outsb" : "+S"(src), "+c"(cnt) : "d"((u16)f->rdx) : "memory");
    f->rsi = src;
    f->rcx = cnt;
    f->rip += 2;
    return 1;
  }
  if (ip[0] == 0x66) size = 2, len = 1;
  u8 op = ip[len++];
  u16 port;
  if (op >= 0xe4 && op <= 0xe7)
    port = ip[len++];
  else if (op >= 0xec && op <= 0xef)
    port = (u16)f->rdx;
  else
    return 0;
  if (!(op & 1)) size = 1;
  if (op & 2) {  // out
    if (size == 1)
      __asm__ volatile("outb %b0, %w1" : : "a"(f->rax), "Nd"(port));
    else if (size == 2)
      __asm__ volatile("outw %w0, %w1" : : "a"(f->rax), "Nd"(port));
    else
      __asm__ volatile("outl %k0, %w1" : : "a"(f->rax), "Nd"(port));
  } else {
    u32 v;
    if (size == 1) {
      __asm__ volatile("inb %w1, %b0" : "=a"(v) : "Nd"(port));
      f->rax = (f->rax & ~0xffULL) | (v & 0xff);
    } else if (size == 2) {
      __asm__ volatile("inw %w1, %w0" : "=a"(v) : "Nd"(port));
      f->rax = (f->rax & ~0xffffULL) | (v & 0xffff);
    } else {
      __asm__ volatile("inl %w1, %k0" : "=a"(v) : "Nd"(port));
      f->rax = v;
    }
  }
  f->rip += len;
  return 1;
}

void exception_handler(struct exc_frame* f);
void exception_handler(struct exc_frame* f) {
  if (f->vector == 13 && f->error == 0 && (f->cs & 3) == 3 && emulate_port_io(f)) return;
  if (f->vector == 6 && f->rip == (u64)(uptr)user_die) triple_fault();
  u64 cr2;
  __asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
  kprintf("testos: exception vector=%llu error=0x%llx rip=0x%llx cr2=0x%llx\n", f->vector, f->error,
          f->rip, cr2);
  triple_fault();
}

void die(void) {
  if (current_cpl() == 0) triple_fault();
  user_die();
}
