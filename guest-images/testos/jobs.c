// testos jobs: platform, dirtier, heartbeat, fault. Ring 3, IOPL 3.
#include "testos.h"

// ---------------------------------------------------------------- platform

static char failed[160];

static void add_failure(const char* what) {
  unsigned long n = strlen(failed);
  ksnprintf(failed + n, sizeof failed - n, "%s%s", n ? "," : "", what);
}

void job_platform(void) {
  // e820: sorted, non-overlapping, usable RAM; nothing usable in the legacy
  // hole 0xa0000-0xfffff. QEMU's PVH option ROM hands over fw_cfg's raw
  // e820 (one RAM entry from 0), so under PVH that is reported, not failed.
  u32 hole_usable = 0;
  for (u32 i = 0; i < binfo->e820_count; i++) {
    const struct e820_entry* e = &binfo->e820[i];
    if (e->type == E820_RAM && e->addr < 0x100000 && e->addr + e->size > 0xa0000) hole_usable = 1;
  }
  if (plat.e820_ok && hole_usable && binfo->boot_kind != BOOT_PVH) {
    plat.e820_ok = 0;
    ksnprintf(plat.e820_why, sizeof plat.e820_why, "usable RAM overlaps 0xa0000-0xfffff");
  }
  if (plat.e820_ok)
    kprintf("testos: check e820 ok entries=%u usable_mib=%llu legacy_hole=%s\n", binfo->e820_count,
            plat.usable_bytes >> 20, hole_usable ? "usable" : "reserved");
  else
    kprintf("testos: check e820 FAIL %s\n", plat.e820_why), add_failure("e820");

  if (plat.acpi_ok)
    kprintf("testos: check acpi ok rsdp=0x%llx tables=%u\n", plat.rsdp, plat.tables);
  else
    kprintf("testos: check acpi FAIL %s\n", plat.acpi_why), add_failure("acpi");

  if (!plat.madt_found)
    kprintf("testos: check madt FAIL no MADT\n"), add_failure("madt");
  else if (plat.cpus == 0 || plat.ioapics == 0)
    kprintf("testos: check madt FAIL cpus=%u ioapics=%u\n", plat.cpus, plat.ioapics),
        add_failure("madt");
  else
    kprintf("testos: check madt ok cpus=%u ioapics=%u\n", plat.cpus, plat.ioapics);

  if (!plat.fadt_found)
    kprintf("testos: check fadt FAIL no FADT\n"), add_failure("fadt");
  else if (plat.pm1a_cnt == 0)
    kprintf("testos: check fadt FAIL PM1a_CNT_BLK is 0\n"), add_failure("fadt");
  else
    kprintf("testos: check fadt ok pm1a_cnt=0x%x pm1b_cnt=0x%x dsdt=0x%llx\n", plat.pm1a_cnt,
            plat.pm1b_cnt, plat.dsdt);

  if (plat.s5_found)
    kprintf("testos: check s5 ok slp_typa=%u slp_typb=%u\n", plat.slp_typa, plat.slp_typb);
  else
    kprintf("testos: check s5 FAIL no _S5_ package in the DSDT\n"), add_failure("s5");

  if (failed[0])
    kprintf("testos: platform FAIL %s\n", failed);
  else
    kprintf("testos: platform OK\n");
  poweroff();
}

// ----------------------------------------------------------------- dirtier

struct region {
  u64 start, pages;
};
static struct region regions[E820_MAX];
static u32 nregions;

#define PAGE 4096ULL
#define PASS_KEY 0x9e3779b97f4a7c15ULL

static inline void fill_page(u64 pa, u64 pass) {
  volatile u64* w = (volatile u64*)(uptr)pa;
  u64 key = pass * PASS_KEY;
  for (u32 j = 0; j < PAGE / 8; j++) w[j] = (pa + 8 * j) ^ key;
}

static inline int check_page(u64 pa, u64 pass) {
  const volatile u64* w = (const volatile u64*)(uptr)pa;
  u64 key = pass * PASS_KEY;
  for (u32 j = 0; j < PAGE / 8; j++)
    if (w[j] != ((pa + 8 * j) ^ key)) return 0;
  return 1;
}

// The dirtier's memory (also the heartbeat's with mib=): `mib` MiB of usable
// e820 RAM from right after the kernel (or start_mib), lowest pages first.
static void pick_regions(const struct job_args* a, const char* job) {
  u64 want = a->mib * 256;  // 4 KiB pages
  u64 low = (binfo->kernel_end + PAGE - 1) & ~(PAGE - 1);
  // start_mib lets a small run cross the PCI hole into RAM above 4 GiB.
  if (a->start_mib << 20 > low) low = a->start_mib << 20;
  u64 have = 0;
  nregions = 0;
  for (u32 i = 0; i < binfo->e820_count && have < want; i++) {
    const struct e820_entry* e = &binfo->e820[i];
    if (e->type != E820_RAM) continue;
    u64 s = e->addr > low ? e->addr : low;
    u64 end = e->addr + e->size;
    if (end > binfo->map_limit) end = binfo->map_limit;
    s = (s + PAGE - 1) & ~(PAGE - 1);
    end &= ~(PAGE - 1);
    if (end <= s) continue;
    u64 n = (end - s) / PAGE;
    if (n > want - have) n = want - have;
    regions[nregions].start = s;
    regions[nregions].pages = n;
    nregions++;
    have += n;
  }
  if (have < want)
    fatal("%s mib=%llu is more than the usable RAM above the kernel and start_mib (%llu MiB)", job, a->mib,
          have / 256);
}

void job_dirtier(const struct job_args* a) {
  u64 want = a->mib * 256;
  pick_regions(a, "dirtier");
  struct region* last = &regions[nregions - 1];
  kprintf("testos: dirtier start mib=%llu pages=%llu low=0x%llx high=0x%llx rate_mbps=%llu\n",
          a->mib, want, regions[0].start, last->start + last->pages * PAGE, a->rate_mbps);

  u64 max_passes = a->have_passes ? a->passes : (a->have_seconds ? 0 : 1);
  u64 t0 = rdtsc();
  u64 deadline = a->have_seconds ? t0 + us_to_tsc(a->seconds * 1000000) : 0;
  u64 hz = plat.tsc_khz * 1000;
  u64 pages_per_s = a->rate_mbps * 256;
  u64 written = 0, pass = 0, done = 0;
  // interval_ms=: heartbeat lines while dirtying (and the power button
  // polled at each), for migration benchmarks.
  u64 beat_every = a->have_interval ? us_to_tsc(a->interval_ms * 1000) : 0;
  u64 beat_due = t0, seq = 0;
  int stop = 0;
  while (!stop && (max_passes == 0 || pass < max_passes)) {
    pass++;
    done = 0;
    for (u32 r = 0; r < nregions && !stop; r++) {
      for (u64 p = 0; p < regions[r].pages; p++) {
        if (deadline && (s64)(rdtsc() - deadline) >= 0) {
          stop = 1;
          break;
        }
        if (beat_every && (s64)(rdtsc() - beat_due) >= 0) {
          if (power_button_pressed()) {
            stop = 1;
            break;
          }
          kprintf("testos: beat seq=%llu t_us=%llu\n", ++seq, now_us());
          beat_due += beat_every;
          u64 now = rdtsc();
          if ((s64)(now - beat_due) > 0) beat_due = now + beat_every;
        }
        if (pages_per_s) {
          u64 due = t0 + written / pages_per_s * hz + (written % pages_per_s) * hz / pages_per_s;
          while ((s64)(rdtsc() - due) < 0) {
            if (deadline && (s64)(rdtsc() - deadline) >= 0) break;
            cpu_relax();
          }
          if (deadline && (s64)(rdtsc() - deadline) >= 0) {
            stop = 1;
            break;
          }
        }
        fill_page(regions[r].start + p * PAGE, pass);
        done++;
        written++;
      }
    }
    if (done) kprintf("testos: dirtier pass=%llu mib=%llu\n", pass, done / 256);
    if (!stop && power_button_pressed()) stop = 1;
  }

  // Pages before `done` carry the last pass, the rest the one before.
  u64 idx = 0, checked = 0, bad = 0;
  for (u32 r = 0; r < nregions; r++) {
    for (u64 p = 0; p < regions[r].pages; p++, idx++) {
      u64 expect = idx < done ? pass : pass - 1;
      if (expect == 0) continue;
      u64 pa = regions[r].start + p * PAGE;
      checked++;
      if (!check_page(pa, expect)) {
        if (bad < 8) kprintf("testos: dirtier bad_page addr=0x%llx pass=%llu\n", pa, expect);
        bad++;
      }
    }
  }
  if (bad)
    kprintf("testos: dirtier BAD bad_pages=%llu\n", bad);
  else
    kprintf("testos: dirtier OK pages=%llu\n", checked);
  poweroff();
}

// Heartbeat with mib=N: memory written once before the first beat and
// checked after the last one, so a snapshot taken between them must carry
// every page (restored memory, not rewritten memory, is what is checked).

static u64 hb_pages;

static void heartbeat_fill(const struct job_args* a) {
  pick_regions(a, "heartbeat");
  u64 t0 = rdtsc();
  hb_pages = 0;
  for (u32 r = 0; r < nregions; r++)
    for (u64 p = 0; p < regions[r].pages; p++, hb_pages++) fill_page(regions[r].start + p * PAGE, 1);
  struct region* last = &regions[nregions - 1];
  kprintf("testos: heartbeat filled mib=%llu pages=%llu low=0x%llx high=0x%llx ms=%llu\n", a->mib, hb_pages,
          regions[0].start, last->start + last->pages * PAGE, (rdtsc() - t0) / plat.tsc_khz);
}

static void heartbeat_check(void) {
  u64 bad = 0;
  for (u32 r = 0; r < nregions; r++) {
    for (u64 p = 0; p < regions[r].pages; p++) {
      u64 pa = regions[r].start + p * PAGE;
      if (check_page(pa, 1)) continue;
      if (bad < 8) kprintf("testos: heartbeat bad_page addr=0x%llx\n", pa);
      bad++;
    }
  }
  if (bad)
    kprintf("testos: heartbeat memory BAD bad_pages=%llu\n", bad);
  else
    kprintf("testos: heartbeat memory OK pages=%llu\n", hb_pages);
}

// --------------------------------------------------------------- heartbeat

// heartbeat listen=1: the console's input, a line at a time. COM1 is
// looked at every 20 ms (each look is a VM exit): typing reaches the guest
// at 16 bytes (the FIFO) per look, paced by the VMM.
static char heard[128];
static unsigned long heard_len;

static void listen_serial(void) {
  char got[16];
  unsigned long n = serial_read(got, sizeof got);
  for (unsigned long i = 0; i < n; i++) {
    if (got[i] == '\r' || got[i] == '\n') {
      if (heard_len) kprintf("testos: heard %s\n", heard);
      heard_len = 0;
      heard[0] = 0;
    } else if (heard_len + 1 < sizeof heard) {
      heard[heard_len++] = got[i];
      heard[heard_len] = 0;
    }
  }
}

void job_heartbeat(const struct job_args* a) {
  if (a->have_mib) heartbeat_fill(a);
  u64 interval = us_to_tsc(a->interval_ms * 1000);
  const u64 look = us_to_tsc(20000);
  u64 due = rdtsc(), next_look = due;
  for (u64 seq = 1; a->count == 0 || seq <= a->count; seq++) {
    while ((s64)(rdtsc() - due) < 0) {
      if (a->listen && (s64)(rdtsc() - next_look) >= 0) {
        listen_serial();
        next_look = rdtsc() + look;
      }
      cpu_relax();
    }
    // Pressed: the memory is checked all the same (a run ended from outside).
    if (power_button_pressed()) break;
    kprintf("testos: beat seq=%llu t_us=%llu\n", seq, now_us());
    due += interval;
    // Late (the VM was paused, or output is slow): restart the schedule
    // from now instead of printing a burst of catch-up beats.
    u64 now = rdtsc();
    if ((s64)(now - due) > 0) due = now + interval;
  }
  if (a->have_mib) heartbeat_check();
  poweroff();
}

// ------------------------------------------------------------------- fault

void job_fault(const struct job_args* a) {
  static volatile u32 zero = 0;
  if (streq(a->kind, "triple")) die();
  if (streq(a->kind, "ud")) __asm__ volatile("ud2");
  if (streq(a->kind, "gp")) (void)*(volatile u64*)0x8000000000000000ULL;  // non-canonical
  if (streq(a->kind, "pf")) (void)*(volatile u64*)0x8000000000ULL;  // 512 GiB: never mapped
  if (streq(a->kind, "de")) {
    u32 q = 1, r = 0, d = zero;
    __asm__ volatile("divl %2" : "+a"(q), "+d"(r) : "r"(d));
  }
  fatal("fault kind=%s did not fault", a->kind);
}
