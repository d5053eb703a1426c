// testos: a tiny x86-64 test guest. Shared declarations.
//
// Ring 0 does the minimum (GDT, TSS, IDT, page tables) and then drops to
// ring 3 with IOPL=3, where everything else runs: serial output, platform
// reading, and the jobs. See guest-images/README.md for the output lines.
#pragma once

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;
typedef long long s64;
typedef signed char s8;
typedef unsigned long uptr;

#define NORETURN __attribute__((noreturn))
#define PACKED __attribute__((packed))

// Kernel link address (boot.rst: protected-mode kernel at 1 MiB).
#define KERNEL_BASE 0x100000ULL

// How we were entered (set by boot.S).
#define BOOT_LINUX64 1  // Linux 64-bit boot protocol, entry at 0x100200
#define BOOT_LINUX32 2  // Linux 32-bit boot protocol, entry at 0x100000
#define BOOT_PVH 3      // Xen PVH boot ABI (XEN_ELFNOTE_PHYS32_ENTRY)

// GDT selectors (must match boot.S).
#define SEL_KCODE 0x08
#define SEL_KDATA 0x10
#define SEL_UDATA 0x18
#define SEL_UCODE 0x20
#define SEL_TSS 0x28
#define SEL_KCODE32 0x38

#define E820_MAX 128
#define E820_RAM 1
#define CMDLINE_MAX 4096

struct e820_entry {
  u64 addr;
  u64 size;
  u32 type;
};

struct bootinfo {
  u32 boot_kind;  // BOOT_*
  u32 e820_count;
  u64 rsdp;              // 0 if the loader gave none
  u64 map_limit;         // identity map covers [0, map_limit)
  u64 kernel_end;        // end of the kernel footprint (incl. bss, page tables)
  u32 gb_pages;          // 1 GiB pages used for the identity map
  u64 kvmclock_tsc_khz;  // TSC frequency published through kvmclock, 0 if none
  char cmdline[CMDLINE_MAX];
  struct e820_entry e820[E820_MAX];
};

// Linker symbols.
extern char __image_start[], __bss_start[], __bss_end[], _end[];

// Written by boot.S at the very first instruction.
extern u64 tsc_boot;

// boot.S helpers.
NORETURN void triple_fault(void);  // ring 0 only
NORETURN void enter_user(void (*fn)(const struct bootinfo*), u64 rsp, const struct bootinfo* arg);
extern const u64 isr_table[32];
NORETURN void user_die(void);  // ring 3: ud2 that exception_handler turns into triple_fault

// Ring 0 (kernel.c).
NORETURN void kernel_start(u32 kind, u64 ptr);

// Ring 3 entry (main.c).
NORETURN void kmain(const struct bootinfo* bi);

// Works in ring 0 and ring 3: triple-faults the machine without printing.
NORETURN void die(void);
// Prints "testos: error <msg>" and dies.
NORETURN void fatal(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

// lib.c
void* memset(void* d, int c, unsigned long n);
void* memcpy(void* d, const void* s, unsigned long n);
void* memmove(void* d, const void* s, unsigned long n);
int memcmp(const void* a, const void* b, unsigned long n);
unsigned long strlen(const char* s);
int streq(const char* a, const char* b);
// Parses a decimal (or 0x hex) u64; returns 0 on success.
int parse_u64(const char* s, u64* out);

// serial.c
void serial_init(void);
// The bytes COM1's receive FIFO holds now, at most `max`; polled.
unsigned long serial_read(char* buf, unsigned long max);
void serial_write(const char* s, unsigned long n);
void kprintf(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
// Formats into buf (always NUL-terminated), returns length.
// Supports %s %c %d %u %x %lu %ld %lx %llu %llx %lld and %%.
unsigned long ksnprintf(char* buf, unsigned long size, const char* fmt, ...)
    __attribute__((format(printf, 3, 4)));

// Port I/O, TSC, CPUID.
static inline void outb(u16 port, u8 v) {
  __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}
static inline void outw(u16 port, u16 v) {
  __asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(port));
}
static inline void outl(u16 port, u32 v) {
  __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port));
}
static inline u32 inl(u16 port) {
  u32 v;
  __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
  return v;
}
static inline u16 inw(u16 port) {
  u16 v;
  __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port));
  return v;
}
static inline u8 inb(u16 port) {
  u8 v;
  __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
  return v;
}
static inline u64 rdtsc(void) {
  u32 lo, hi;
  __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
  return ((u64)hi << 32) | lo;
}
static inline void wrmsr(u32 msr, u64 v) {
  __asm__ volatile("wrmsr" : : "c"(msr), "a"((u32)v), "d"((u32)(v >> 32)) : "memory");
}
static inline void cpuid(u32 leaf, u32 sub, u32* a, u32* b, u32* c, u32* d) {
  __asm__ volatile("cpuid" : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d) : "a"(leaf), "c"(sub));
}
static inline u32 current_cpl(void) {
  u16 cs;
  __asm__ volatile("mov %%cs, %0" : "=r"(cs));
  return cs & 3;
}
static inline void cpu_relax(void) {
  __asm__ volatile("pause");
}

// MMIO (device BARs, mapped uncached by kernel.c): one access of the given
// width each, never merged or split by the compiler.
static inline u8 mmio_read8(const volatile void* p) {
  return *(const volatile u8*)p;
}
static inline u16 mmio_read16(const volatile void* p) {
  return *(const volatile u16*)p;
}
static inline u32 mmio_read32(const volatile void* p) {
  return *(const volatile u32*)p;
}
static inline void mmio_write8(volatile void* p, u8 v) {
  *(volatile u8*)p = v;
}
static inline void mmio_write16(volatile void* p, u16 v) {
  *(volatile u16*)p = v;
}
static inline void mmio_write32(volatile void* p, u32 v) {
  *(volatile u32*)p = v;
}
// Ordering against a device that reads and writes guest memory (x86 is TSO:
// stores are not reordered with stores nor loads with loads; only a store
// followed by a load needs a fence).
#define barrier() __asm__ volatile("" : : : "memory")
static inline void mb(void) {
  __asm__ volatile("mfence" : : : "memory");
}

// Platform (platform.c): filled in ring 3 before the job runs.
struct platform {
  u64 usable_bytes;
  u32 e820_ok;
  char e820_why[96];

  u64 rsdp;
  u32 acpi_ok;  // RSDP and every table read had a good checksum
  u32 tables;   // tables read with a good checksum
  char acpi_why[96];

  u32 madt_found;
  u32 cpus;  // enabled local APIC + x2APIC entries
  u32 ioapics;

  u32 fadt_found;
  u32 pm1a_evt;            // PM1a event block (PM1_STS, then PM1_EN)
  u32 pm1_evt_len;         // its length in bytes
  u32 fixed_power_button;  // FADT: the power button is the fixed feature
  u32 pm1a_cnt, pm1b_cnt;
  u64 dsdt;

  u32 s5_found;
  u32 slp_typa, slp_typb;

  u64 tsc_khz;
  const char* tsc_source;

  u32 power_button;  // power_button= on the command line (default 1)
};

extern struct platform plat;
extern const struct bootinfo* binfo;

void platform_read(const struct bootinfo* bi, u64 cmdline_tsc_khz);
// Microseconds since the first guest instruction (needs plat.tsc_khz).
u64 now_us(void);
u64 us_to_tsc(u64 us);
NORETURN void poweroff(void);
// If the ACPI power button was pressed: "testos: power button", then
// poweroff(). Long-running jobs call it once per beat / pass / 10 ms.
void power_button_poll(void);
// The same without the poweroff: 1 (the line printed) when it was pressed.
int power_button_pressed(void);
// Sets PWRBTN_EN (unless power_button=0); see platform.c.
void power_button_enable(void);
NORETURN void job_reboot(void);

// Jobs (jobs.c).
struct job_args {
  const char* job;
  u64 tsc_khz;
  u64 interval_ms, count;
  u64 mib, rate_mbps, seconds, passes, start_mib;
  u32 have_seconds, have_passes, have_interval;
  const char* kind;
  // Device jobs (see README: disk, diskbench, rng, net, malformed).
  const char* mode;
  u64 seed, ops, bytes, size, port;
  u32 have_ops, have_mib, have_count;
  u32 ip, dst_ip;
  u16 dst_port;
  u8 mac[6];
  u32 have_mac, have_dst;
  const char* devs;
  u32 lenient;
  u32 power_button;
  u32 linger;  // disk: after the job, wait for the power button (the VMM's counters read meanwhile)
  u32 listen;  // heartbeat: each line typed on COM1 is answered "testos: heard LINE"
};
NORETURN void job_platform(void);
NORETURN void job_heartbeat(const struct job_args* a);
NORETURN void job_dirtier(const struct job_args* a);
NORETURN void job_fault(const struct job_args* a);
NORETURN void job_disk(const struct job_args* a);
NORETURN void job_diskbench(const struct job_args* a);
NORETURN void job_rng(const struct job_args* a);
NORETURN void job_net(const struct job_args* a);
NORETURN void job_malformed(const struct job_args* a);
NORETURN void job_resetstorm(const struct job_args* a);
NORETURN void job_escape(void);

// dma.c: memory the devices read and write, identity mapped (virtual =
// physical), zeroed, from usable e820 RAM above the kernel below 4 GiB.
// Never freed. Dies if there is not enough.
void* dma_alloc(u64 size, u64 align);

// 64-bit mixing (splitmix64 finalizer) and a small PRNG for the jobs.
static inline u64 mix64(u64 x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}
static inline u64 rand_next(u64* state) {
  return mix64(*state += 0x9e3779b97f4a7c15ULL);
}
