// testos: reading the platform (e820, ACPI, TSC) and powering off. Ring 3.
#include "testos.h"

struct platform plat;
const struct bootinfo* binfo;

static u32 acpi_failed;

static void acpi_fail(const char* fmt, const char* sig, u64 addr) {
  if (!acpi_failed) ksnprintf(plat.acpi_why, sizeof plat.acpi_why, fmt, sig, addr);
  acpi_failed = 1;
}

static int mapped(u64 addr, u64 len) {
  return addr != 0 && len <= binfo->map_limit && addr <= binfo->map_limit - len;
}

static u8 sum(const u8* p, u64 n) {
  u8 s = 0;
  for (u64 i = 0; i < n; i++) s += p[i];
  return s;
}

// Returns a checksummed ACPI table at addr, or 0.
static const u8* acpi_table(u64 addr) {
  static char sig[5];
  if (!mapped(addr, 36)) {
    acpi_fail("%s table address 0x%llx not mapped", "?", addr);
    return 0;
  }
  const u8* t = (const u8*)(uptr)addr;
  u32 len = *(const u32*)(t + 4);
  memcpy(sig, t, 4);
  if (len < 36 || !mapped(addr, len)) {
    acpi_fail("%s table at 0x%llx has a bad length", sig, addr);
    return 0;
  }
  if (sum(t, len) != 0) {
    acpi_fail("%s table at 0x%llx has a bad checksum", sig, addr);
    return 0;
  }
  plat.tables++;
  return t;
}

static int rsdp_valid(const u8* p) {
  if (memcmp(p, "RSD PTR ", 8) != 0 || sum(p, 20) != 0) return 0;
  if (p[15] >= 2 && (*(const u32*)(p + 20) < 36 || sum(p, 36) != 0)) return 0;
  return 1;
}

static u64 find_rsdp(void) {
  if (binfo->rsdp) return binfo->rsdp;
  for (u64 a = 0xe0000; a < 0x100000; a += 16)
    if (rsdp_valid((const u8*)(uptr)a)) return a;
  return 0;
}

// One element of the _S5_ package: ByteConst, Zero, One, WordConst or a bare byte.
static u32 aml_small_int(const u8* p, const u8* end, const u8** next) {
  u32 v = 0;
  const u8* q = p;
  if (q >= end) return 0;
  if (*q == 0x0a && q + 1 < end) {
    v = q[1];
    q += 2;
  } else if (*q == 0x0b && q + 2 < end) {
    v = q[1] | (q[2] << 8);
    q += 3;
  } else if (*q == 0x00) {
    v = 0;
    q++;
  } else if (*q == 0x01) {
    v = 1;
    q++;
  } else {
    v = *q;
    q++;
  }
  *next = q;
  return v;
}

static void find_s5(const u8* dsdt) {
  u32 len = *(const u32*)(dsdt + 4);
  const u8* end = dsdt + len;
  for (const u8* p = dsdt + 36; p + 4 < end; p++) {
    if (memcmp(p, "_S5_", 4) != 0) continue;
    int named = (p[-1] == 0x08) || (p[-1] == '\\' && p[-2] == 0x08);
    const u8* q = p + 4;
    if (!named || q >= end || *q != 0x12) continue;
    q++;
    if (q >= end) continue;
    q += 1 + (*q >> 6);  // PkgLength
    q++;                 // NumElements
    if (q >= end) continue;
    const u8* next;
    plat.slp_typa = aml_small_int(q, end, &next);
    plat.slp_typb = next < end ? aml_small_int(next, end, &next) : plat.slp_typa;
    plat.s5_found = 1;
    return;
  }
}

static void read_madt(const u8* t) {
  u32 len = *(const u32*)(t + 4);
  plat.madt_found = 1;
  for (u32 off = 44; off + 2 <= len;) {
    u8 type = t[off], elen = t[off + 1];
    if (elen < 2 || off + elen > len) break;
    if (type == 0 && elen >= 8 && (*(const u32*)(t + off + 4) & 1)) plat.cpus++;
    if (type == 9 && elen >= 16 && (*(const u32*)(t + off + 8) & 1)) plat.cpus++;
    if (type == 1) plat.ioapics++;
    off += elen;
  }
}

static void read_fadt(const u8* t) {
  u32 len = *(const u32*)(t + 4);
  plat.fadt_found = 1;
  if (len >= 72) {
    plat.pm1a_evt = *(const u32*)(t + 56);
    plat.pm1_evt_len = len > 88 ? t[88] : 0;
    plat.pm1a_cnt = *(const u32*)(t + 64);
    plat.pm1b_cnt = *(const u32*)(t + 68);
  }
  // ACPI 6.4 5.2.9 Table 5.10: flag PWR_BUTTON (bit 4) clear means the power
  // button is the fixed-feature one, reported in PM1_STS.
  if (len >= 116) plat.fixed_power_button = !(*(const u32*)(t + 112) & (1u << 4));
  // X_PM1a_EVT_BLK (GAS at 148) when the legacy field is empty; system I/O only.
  if (plat.pm1a_evt == 0 && len >= 160 && t[148] == 1) plat.pm1a_evt = (u32) * (const u64*)(t + 152);
  // ACPI 2.0+ X_PM1a_CNT_BLK (GAS at 172) when the legacy field is empty.
  if (plat.pm1a_cnt == 0 && len >= 184 && t[172] == 1) plat.pm1a_cnt = (u32) * (const u64*)(t + 176);
  plat.dsdt = len >= 44 ? *(const u32*)(t + 40) : 0;
  if (len >= 148 && *(const u64*)(t + 140)) plat.dsdt = *(const u64*)(t + 140);
  if (plat.dsdt) {
    const u8* d = acpi_table(plat.dsdt);
    if (d) find_s5(d);
  }
}

static void read_acpi(void) {
  u64 rsdp = find_rsdp();
  plat.rsdp = rsdp;
  if (!mapped(rsdp, 36)) {
    acpi_fail("%sno RSDP found (rsdp=0x%llx)", "", rsdp);
    return;
  }
  const u8* r = (const u8*)(uptr)rsdp;
  if (!rsdp_valid(r)) {
    acpi_fail("%sRSDP at 0x%llx is invalid", "", rsdp);
    return;
  }
  u64 root = 0;
  u32 esize = 4;
  if (r[15] >= 2 && *(const u64*)(r + 24)) {
    root = *(const u64*)(r + 24);
    esize = 8;
  } else {
    root = *(const u32*)(r + 16);
  }
  const u8* rt = acpi_table(root);
  if (!rt) return;
  u32 n = (*(const u32*)(rt + 4) - 36) / esize;
  for (u32 i = 0; i < n; i++) {
    u64 a = esize == 8 ? *(const u64*)(rt + 36 + 8 * i) : *(const u32*)(rt + 36 + 4 * i);
    const u8* t = acpi_table(a);
    if (!t) continue;
    if (memcmp(t, "APIC", 4) == 0 && !plat.madt_found) read_madt(t);
    if (memcmp(t, "FACP", 4) == 0 && !plat.fadt_found) read_fadt(t);
  }
}

static void check_e820(void) {
  const struct bootinfo* bi = binfo;
  plat.e820_ok = 1;
  for (u32 i = 0; i < bi->e820_count; i++) {
    const struct e820_entry* e = &bi->e820[i];
    if (e->type == E820_RAM) plat.usable_bytes += e->size;
    if (e->size == 0 || e->addr + e->size < e->addr) {
      ksnprintf(plat.e820_why, sizeof plat.e820_why, "entry %u is empty or wraps", i);
      plat.e820_ok = 0;
    } else if (i > 0 && e->addr < bi->e820[i - 1].addr) {
      ksnprintf(plat.e820_why, sizeof plat.e820_why, "entry %u is out of order", i);
      plat.e820_ok = 0;
    } else if (i > 0 && e->addr < bi->e820[i - 1].addr + bi->e820[i - 1].size) {
      ksnprintf(plat.e820_why, sizeof plat.e820_why, "entry %u overlaps entry %u", i, i - 1);
      plat.e820_ok = 0;
    }
  }
  if (bi->e820_count == 0) {
    ksnprintf(plat.e820_why, sizeof plat.e820_why, "no entries");
    plat.e820_ok = 0;
  } else if (plat.usable_bytes == 0) {
    ksnprintf(plat.e820_why, sizeof plat.e820_why, "no usable RAM");
    plat.e820_ok = 0;
  }
}

// TSC frequency: command line, CPUID 0x40000010, CPUID 0x15, PIT channel 2.
//
// PIT: channel 2 counts down from 0xffff at 1.193182 MHz (gate on through
// port 0x61 bit 0, speaker off). The counter is latched and read at both
// ends of a ~40 ms window, with the TSC read right after each read: the two
// ends take the same path, so the latency of trapped port I/O cancels out
// (timing the gate-on write against OUT2 does not, on PVM hosts).
static u32 pit2_read(void) {
  outb(0x43, 0x80);  // latch channel 2
  u32 lo = inb(0x42);
  u32 hi = inb(0x42);
  return lo | (hi << 8);
}

static u64 pit_calibrate(void) {
  u8 saved = inb(0x61);
  outb(0x61, (saved & ~0x02) | 0x01);
  outb(0x43, 0xb4);  // channel 2, lobyte/hibyte, mode 2 (rate generator), binary
  outb(0x42, 0xff);
  outb(0x42, 0xff);
  u32 c0 = pit2_read();
  u64 t0 = rdtsc();
  u32 c = c0;
  u64 t = t0;
  for (u32 i = 0; i < 10000000; i++) {
    c = pit2_read();
    t = rdtsc();
    if (c > c0) break;  // wrapped: the read took too long
    if (c0 - c >= 47727) break;  // 40 ms
  }
  outb(0x61, saved);
  if (c > c0 || c0 - c < 11932) return 0;  // less than 10 ms measured
  return (t - t0) * 1193182ULL / ((u64)(c0 - c) * 1000);
}

static void read_tsc(const struct bootinfo* bi, u64 cmdline_khz) {
  u32 a, b, c, d;
  if (cmdline_khz) {
    plat.tsc_khz = cmdline_khz;
    plat.tsc_source = "cmdline";
    return;
  }
  cpuid(1, 0, &a, &b, &c, &d);
  if (c & (1u << 31)) {
    cpuid(0x40000000, 0, &a, &b, &c, &d);
    if (a >= 0x40000010 && a < 0x40010000) {
      cpuid(0x40000010, 0, &a, &b, &c, &d);
      if (a) {
        plat.tsc_khz = a;
        plat.tsc_source = "cpuid40000010";
        return;
      }
    }
  }
  if (bi->kvmclock_tsc_khz) {
    plat.tsc_khz = bi->kvmclock_tsc_khz;
    plat.tsc_source = "kvmclock";
    return;
  }
  cpuid(0, 0, &a, &b, &c, &d);
  if (a >= 0x15) {
    cpuid(0x15, 0, &a, &b, &c, &d);
    if (a && b && c) {
      plat.tsc_khz = (u64)c * b / a / 1000;
      plat.tsc_source = "cpuid15";
      return;
    }
  }
  plat.tsc_khz = pit_calibrate();
  plat.tsc_source = "pit";
  if (plat.tsc_khz == 0) fatal("TSC calibration with the PIT failed (no PIT channel 2?)");
}

void platform_read(const struct bootinfo* bi, u64 cmdline_tsc_khz) {
  binfo = bi;
  check_e820();
  read_acpi();
  plat.acpi_ok = !acpi_failed;
  read_tsc(bi, cmdline_tsc_khz);
  kprintf("testos: tsc_khz=%llu source=%s\n", plat.tsc_khz, plat.tsc_source);
}

u64 now_us(void) {
  u64 d = rdtsc() - tsc_boot;
  u64 k = plat.tsc_khz;
  return d / k * 1000 + (d % k) * 1000 / k;
}

u64 us_to_tsc(u64 us) { return us / 1000 * plat.tsc_khz + (us % 1000) * plat.tsc_khz / 1000; }

// Asks for a reset the way a PC BIOS-era OS does: the i8042's "pulse reset
// line" command. The VMM ends with its reboot code.
void job_reboot(void) {
  kprintf("testos: reboot\n");
  outb(0x64, 0xfe);
  for (volatile u64 spin = 0; spin < 100000000ull; ++spin) {
  }
  kprintf("testos: reboot failed\n");
  user_die();
}

// ACPI 6.4 4.8.3.1.1: a press of the fixed power button sets PWRBTN_STS
// (bit 8 of PM1_STS, the first word of the PM1a event block) whether or not
// PWRBTN_EN is set, so polling needs no SCI. QEMU's PM1 sets the status only
// while PWRBTN_EN (bit 8 of PM1_EN, the second half of the block) is set, so
// it is set too; the SCI it may raise is never taken (interrupts stay off).
// One port read per poll (on PVM hosts a trap): callers poll once per beat
// or loop iteration, not in tight loops.
#define PWRBTN_STS (1u << 8)
#define PWRBTN_EN (1u << 8)

void power_button_enable(void) {
  if (!plat.power_button || !plat.fixed_power_button || !plat.pm1a_evt) return;
  if (plat.pm1_evt_len < 4) return;
  u16 en = (u16)(plat.pm1a_evt + plat.pm1_evt_len / 2);
  outw(en, (u16)(inw(en) | PWRBTN_EN));
}

int power_button_pressed(void) {
  if (!plat.power_button || !plat.fixed_power_button || !plat.pm1a_evt) return 0;
  if (!(inw((u16)plat.pm1a_evt) & PWRBTN_STS)) return 0;
  outw((u16)plat.pm1a_evt, PWRBTN_STS);  // status bits clear by writing 1
  kprintf("testos: power button\n");
  return 1;
}

void power_button_poll(void) {
  if (power_button_pressed()) poweroff();
}

void poweroff(void) {
  if (plat.fadt_found && plat.s5_found && plat.pm1a_cnt) {
    outw((u16)plat.pm1a_cnt, (u16)((plat.slp_typa << 10) | (1 << 13)));
    if (plat.pm1b_cnt) outw((u16)plat.pm1b_cnt, (u16)((plat.slp_typb << 10) | (1 << 13)));
    // A VMM may take a moment to stop the vCPU: wait up to 1 s.
    u64 t0 = rdtsc(), wait = us_to_tsc(1000000);
    while (rdtsc() - t0 < wait) cpu_relax();
  }
  kprintf("testos: poweroff failed\n");
  die();
}
