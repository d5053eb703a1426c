// testos jobs `disk` (write / verify / random: data integrity through
// virtio-blk) and `diskbench` (IOPS and bandwidth). Ring 3, polled.
#include "virtio.h"

#define SECTOR 512ULL
#define WORDS_PER_SECTOR 64
#define IO_TIMEOUT_US 30000000ULL

static struct blk blk;

static void open_disk(void) {
  const char* why = "";
  if (blk_open(&blk, VIRTIO_F_INDIRECT_DESC | VIRTIO_F_EVENT_IDX, &why) != 0) fatal("disk: %s", why);
  kprintf("testos: disk device pci=%x.%x capacity_sectors=%llu features=0x%llx queue=%u max_inflight=%u max_bytes=%u "
          "ro=%u\n",
          blk.dev.pci->dev, blk.dev.pci->fn, blk.capacity, blk.dev.features, blk.q.size, blk.max_inflight,
          blk.max_bytes, blk.ro);
}

static u64 ms_since(u64 t0) {
  return (rdtsc() - t0) / plat.tsc_khz;
}

// rate_mbps: requests are started no faster than that many MiB per second
// from the job's start (so a run lasts long enough to be paused or
// snapshotted in the middle, on any host); 0 = as fast as the device goes.
static u64 pace_t0, pace_units_per_s;  // units of 4 KiB

static void pace_start(u64 rate_mbps) {
  pace_t0 = rdtsc();
  pace_units_per_s = rate_mbps * 256;
}

// True once `sectors` sectors may have been started.
static int pace_allows(u64 sectors) {
  if (!pace_units_per_s) return 1;
  u64 u = sectors / 8, hz = plat.tsc_khz * 1000;
  u64 due = pace_t0 + u / pace_units_per_s * hz + (u % pace_units_per_s) * hz / pace_units_per_s;
  return (s64)(rdtsc() - due) >= 0;
}

// The pattern: word i of sector s under `seed`.
static inline u64 pattern(u64 s, u32 i, u64 seed) { return mix64((s << 6 | i) ^ (seed * 0xd6e8feb86659fd93ULL)); }

static void fill(u64* buf, u64 sector, u64 nsect, u64 seed) {
  for (u64 s = 0; s < nsect; s++)
    for (u32 i = 0; i < WORDS_PER_SECTOR; i++) buf[s * WORDS_PER_SECTOR + i] = pattern(sector + s, i, seed);
}

static u64 sum_words(const u64* buf, u64 nsect) {
  u64 sum = 0;
  for (u64 k = 0; k < nsect * WORDS_PER_SECTOR; k++) sum += buf[k];
  return sum;
}

// Position-dependent checksum (random mode): catches misplaced data too.
static u64 checksum(const u64* buf, u64 nsect) {
  u64 h = 0xcbf29ce484222325ULL;
  for (u64 k = 0; k < nsect * WORDS_PER_SECTOR; k++) h = (h ^ buf[k]) * 0x100000001b3ULL;
  return h;
}

static NORETURN void io_fail(const char* mode, u32 status, u64 sector) {
  const char* what = status == BLK_STATUS_TIMEOUT ? "timeout" : status == BLK_STATUS_RESET ? "needs_reset" : "status";
  kprintf("testos: disk FAIL mode=%s io=%s status=%u sector=%llu\n", mode, what, status, sector);
  poweroff();
}

// Streams [0, total) sectors through `depth` buffers of `chunk` bytes:
// writes the pattern (write) or reads and checks it (verify).
static void stream(const char* mode, int write, u64 total, u64 seed, u64* sum, u64* bad, u64* first_bad) {
  u32 chunk = blk.max_bytes < (256u << 10) ? blk.max_bytes : (256u << 10);
  u32 depth = blk.max_inflight < 8 ? blk.max_inflight : 8;
  static u64* bufs[BLK_MAX_INFLIGHT];
  static u64 buf_sector[BLK_MAX_INFLIGHT], buf_n[BLK_MAX_INFLIGHT];
  static u64* pool;
  if (!pool) {
    pool = dma_alloc((u64)chunk * 8, 4096);
  }
  u64 next = 0;
  u32 free_mask = (1u << depth) - 1;
  u64 last_progress = rdtsc();
  while (next < total || blk.inflight) {
    int added = 0;
    while (next < total && free_mask && pace_allows(next)) {
      u32 bi = (u32)__builtin_ctz(free_mask);
      u64 n = total - next < chunk / SECTOR ? total - next : chunk / SECTOR;
      u64* buf = pool + (u64)bi * (chunk / 8);
      if (write) {
        fill(buf, next, n, seed);
        *sum += sum_words(buf, n);
      }
      int s = blk_submit(&blk, write ? VIRTIO_BLK_T_OUT : VIRTIO_BLK_T_IN, next, buf, (u32)(n * SECTOR));
      if (s < 0) break;
      bufs[s] = buf;
      buf_sector[s] = next;
      buf_n[s] = n;
      free_mask &= ~(1u << bi);
      next += n;
      added = 1;
      last_progress = rdtsc();
    }
    if (added) blk_kick(&blk);
    u32 slot, status;
    int got = 0;
    while (blk_reap(&blk, &slot, &status)) {
      got = 1;
      last_progress = rdtsc();
      if (status != VIRTIO_BLK_S_OK) io_fail(mode, status, buf_sector[slot]);
      u64* buf = bufs[slot];
      if (!write) {
        *sum += sum_words(buf, buf_n[slot]);
        for (u64 s = 0; s < buf_n[slot]; s++) {
          u64 sec = buf_sector[slot] + s;
          for (u32 i = 0; i < WORDS_PER_SECTOR; i++) {
            if (buf[s * WORDS_PER_SECTOR + i] != pattern(sec, i, seed)) {
              if (*bad < 8) kprintf("testos: disk bad sector=%llu word=%u got=0x%llx want=0x%llx\n", sec, i,
                                    buf[s * WORDS_PER_SECTOR + i], pattern(sec, i, seed));
              if (*bad == 0) *first_bad = sec;
              (*bad)++;
              break;
            }
          }
        }
      }
      free_mask |= 1u << (u32)((buf - pool) / (chunk / 8));
    }
    if (!got) {
      if (virtio_broken_poll(&blk.dev)) io_fail(mode, BLK_STATUS_RESET, next);
      // No answer to a request in flight for 30 s (waiting for the pace is not that).
      if (blk.inflight && rdtsc() - last_progress > us_to_tsc(IO_TIMEOUT_US)) io_fail(mode, BLK_STATUS_TIMEOUT, next);
      cpu_relax();
    }
  }
}

static void flush(const char* mode) {
  if (!blk.flush) return;
  u32 st = blk_do(&blk, VIRTIO_BLK_T_FLUSH, 0, 0, 0, IO_TIMEOUT_US);
  if (st != VIRTIO_BLK_S_OK) io_fail(mode, st, 0);
}

struct op_rec {
  u64 sector, n, sum;
};

static void random_mode(u64 total, u64 seed, u64 ops) {
  u64 maxn = blk.max_bytes / SECTOR < 64 ? blk.max_bytes / SECTOR : 64;
  u64* wbuf = dma_alloc(maxn * SECTOR, 4096);
  u64* rbuf = dma_alloc(maxn * SECTOR, 4096);
  struct op_rec* rec = dma_alloc(ops * sizeof *rec, 8);
  u64 rng = seed;
  u64 t0 = rdtsc();
  u64 bad = 0, written = 0;
  for (u64 k = 0; k < ops; k++) {
    while (!pace_allows(written)) cpu_relax();
    u64 n = 1 + rand_next(&rng) % maxn;
    if (n > total) n = total;
    u64 sector = rand_next(&rng) % (total - n + 1);
    fill(wbuf, sector, n, seed ^ mix64(k + 1));
    rec[k] = (struct op_rec){sector, n, checksum(wbuf, n)};
    written += n;
    u32 st = blk_do(&blk, VIRTIO_BLK_T_OUT, sector, wbuf, (u32)(n * SECTOR), IO_TIMEOUT_US);
    if (st != VIRTIO_BLK_S_OK) io_fail("random", st, sector);
    memset(rbuf, 0, n * SECTOR);
    st = blk_do(&blk, VIRTIO_BLK_T_IN, sector, rbuf, (u32)(n * SECTOR), IO_TIMEOUT_US);
    if (st != VIRTIO_BLK_S_OK) io_fail("random", st, sector);
    if (checksum(rbuf, n) != rec[k].sum) {
      if (bad < 8) kprintf("testos: disk bad op=%llu sector=%llu sectors=%llu phase=readback\n", k, sector, n);
      bad++;
    }
    // A sign of life a test can wait for (pausing a job that is running).
    if ((k + 1) % 50 == 0 && k + 1 < ops)
      kprintf("testos: disk progress mode=random ops=%llu\n", k + 1);
  }
  flush("random");
  // Re-read every write no later write overlapped: it must still be there.
  u64 rechecked = 0;
  for (u64 k = 0; k < ops; k++) {
    int covered = 0;
    for (u64 j = k + 1; j < ops && !covered; j++)
      covered = rec[j].sector < rec[k].sector + rec[k].n && rec[k].sector < rec[j].sector + rec[j].n;
    if (covered) continue;
    u32 st = blk_do(&blk, VIRTIO_BLK_T_IN, rec[k].sector, rbuf, (u32)(rec[k].n * SECTOR), IO_TIMEOUT_US);
    if (st != VIRTIO_BLK_S_OK) io_fail("random", st, rec[k].sector);
    rechecked++;
    if (checksum(rbuf, rec[k].n) != rec[k].sum) {
      if (bad < 8)
        kprintf("testos: disk bad op=%llu sector=%llu sectors=%llu phase=recheck\n", k, rec[k].sector, rec[k].n);
      bad++;
    }
  }
  if (bad)
    kprintf("testos: disk FAIL mode=random bad_ops=%llu\n", bad);
  else
    kprintf("testos: disk OK mode=random mib=%llu seed=%llu ops=%llu rechecked=%llu ms=%llu\n", total / 2048, seed,
            ops, rechecked, ms_since(t0));
}

// mode=hold: memory that only the device writes (a live migration must
// carry it: KVM's dirty log never sees a VMM's writes). Round after round
// the guest writes each chunk of the region with a new seed, has the device
// read it back into a buffer of the chunk's own that the CPU never touches
// again, and notes the seed. On the power button every buffer is checked
// against its chunk's last seed.
static void hold_mode(u64 total, u64 seed) {
  u64 n = blk.max_bytes / SECTOR < 64 ? blk.max_bytes / SECTOR : 64;
  u64 chunks = total / n;
  if (chunks == 0) fatal("disk: mode=hold needs at least %llu sectors", n);
  u64* wbuf = dma_alloc(n * SECTOR, 4096);
  u64* hold = dma_alloc(chunks * n * SECTOR, 4096);
  u64* seeds = dma_alloc(chunks * sizeof *seeds, 8);
  u64 t0 = rdtsc(), done = 0, round = 0;
  for (;;) {
    round++;
    for (u64 c = 0; c < chunks; c++) {
      while (!pace_allows(done)) cpu_relax();
      if (power_button_pressed()) goto check;  // once per chunk: a port read
      u64 sector = c * n, s = seed ^ mix64(round << 32 | c);
      fill(wbuf, sector, n, s);
      u32 st = blk_do(&blk, VIRTIO_BLK_T_OUT, sector, wbuf, (u32)(n * SECTOR), IO_TIMEOUT_US);
      if (st != VIRTIO_BLK_S_OK) io_fail("hold", st, sector);
      st = blk_do(&blk, VIRTIO_BLK_T_IN, sector, hold + c * n * WORDS_PER_SECTOR, (u32)(n * SECTOR), IO_TIMEOUT_US);
      if (st != VIRTIO_BLK_S_OK) io_fail("hold", st, sector);
      seeds[c] = s;
      done += n;
    }
    kprintf("testos: disk progress mode=hold round=%llu\n", round);
  }
check:;
  u64 bad = 0, held = 0;
  for (u64 c = 0; c < chunks; c++) {
    if (!seeds[c]) continue;
    held++;
    const u64* b = hold + c * n * WORDS_PER_SECTOR;
    for (u64 k = 0; k < n * WORDS_PER_SECTOR; k++) {
      if (b[k] != pattern(c * n + k / WORDS_PER_SECTOR, (u32)(k % WORDS_PER_SECTOR), seeds[c])) {
        if (bad < 8) kprintf("testos: disk bad chunk=%llu sector=%llu word=%llu\n", c, c * n + k / WORDS_PER_SECTOR,
                             k % WORDS_PER_SECTOR);
        bad++;
        break;
      }
    }
  }
  if (bad)
    kprintf("testos: disk FAIL mode=hold bad_chunks=%llu chunks=%llu\n", bad, held);
  else
    kprintf("testos: disk OK mode=hold rounds=%llu chunks=%llu ms=%llu\n", round, held, ms_since(t0));
}

void job_disk(const struct job_args* a) {
  open_disk();
  u64 total = a->mib * 2048;
  if (a->mib == 0 || total > blk.capacity) total = blk.capacity & ~7ULL;
  if (total == 0) fatal("disk: the disk is empty");
  const char* mode = a->mode ? a->mode : "write";
  // A read-only disk (VIRTIO_BLK_F_RO) still gets the writes: the device
  // must refuse them (a FAIL line with io=status), which is worth checking.
  u64 sum = 0, bad = 0, first_bad = 0;
  u64 t0 = rdtsc();
  pace_start(a->rate_mbps);
  if (streq(mode, "write")) {
    stream(mode, 1, total, a->seed, &sum, &bad, &first_bad);
    flush(mode);
    kprintf("testos: disk OK mode=write mib=%llu sectors=%llu seed=%llu sum=0x%llx flush=%u ms=%llu\n", total / 2048,
            total, a->seed, sum, blk.flush, ms_since(t0));
  } else if (streq(mode, "verify")) {
    stream(mode, 0, total, a->seed, &sum, &bad, &first_bad);
    if (bad)
      kprintf("testos: disk FAIL mode=verify bad_sectors=%llu first_bad=%llu\n", bad, first_bad);
    else
      kprintf("testos: disk OK mode=verify mib=%llu sectors=%llu seed=%llu sum=0x%llx ms=%llu\n", total / 2048, total,
              a->seed, sum, ms_since(t0));
  } else if (streq(mode, "hold")) {
    hold_mode(total, a->seed);
  } else {
    random_mode(total, a->seed, a->have_ops ? a->ops : 256);
  }
  if (a->linger) {
    kprintf("testos: disk lingering\n");
    while (!power_button_pressed()) cpu_relax();
  }
  poweroff();
}

// ------------------------------------------------------------- diskbench

struct bench {
  const char* name;
  u32 write, bs, qd, seq;
};

static const struct bench benches[] = {
    {"randread", 0, 4096, 1, 0},   {"randread", 0, 4096, 32, 0}, {"randwrite", 1, 4096, 1, 0},
    {"randwrite", 1, 4096, 32, 0}, {"seqread", 0, 1 << 20, 4, 1}, {"seqwrite", 1, 1 << 20, 4, 1},
};

static void run_bench(const struct bench* t, u64 region, u64 seconds, u64 ops_limit, u64* rng, u8* pool) {
  u32 bs = t->bs > blk.max_bytes ? blk.max_bytes : t->bs;
  u32 qd = t->qd > blk.max_inflight ? blk.max_inflight : t->qd;
  u64 nsect = bs / SECTOR, blocks = region / nsect;
  if (blocks == 0) fatal("diskbench: region too small for %u-byte blocks", bs);
  u64 done = 0, issued = 0, seq_next = 0;
  u64 t0 = rdtsc(), deadline = t0 + us_to_tsc(seconds * 1000000), last_progress = t0;
  u32 slot_buf[BLK_MAX_INFLIGHT];
  u32 free_mask = qd >= 32 ? ~0u : (1u << qd) - 1;
  for (;;) {
    int stop = ops_limit ? issued >= ops_limit : (s64)(rdtsc() - deadline) >= 0;
    int added = 0;
    while (!stop && free_mask) {
      u32 bi = (u32)__builtin_ctz(free_mask);
      u64 blkno = t->seq ? seq_next++ % blocks : rand_next(rng) % blocks;
      int s = blk_submit(&blk, t->write ? VIRTIO_BLK_T_OUT : VIRTIO_BLK_T_IN, blkno * nsect, pool + (u64)bi * bs, bs);
      if (s < 0) break;
      slot_buf[s] = bi;
      free_mask &= ~(1u << bi);
      issued++;
      added = 1;
      if (ops_limit && issued >= ops_limit) break;
    }
    if (added) blk_kick(&blk);
    if (stop && blk.inflight == 0) break;
    u32 slot, status;
    int got = 0;
    while (blk_reap(&blk, &slot, &status)) {
      if (status != VIRTIO_BLK_S_OK) io_fail(t->name, status, 0);
      free_mask |= 1u << slot_buf[slot];
      done++;
      got = 1;
    }
    u64 now = rdtsc();
    if (got) {
      last_progress = now;
    } else {
      if (virtio_broken_poll(&blk.dev)) io_fail(t->name, BLK_STATUS_RESET, 0);
      if (now - last_progress > us_to_tsc(IO_TIMEOUT_US)) io_fail(t->name, BLK_STATUS_TIMEOUT, 0);
      cpu_relax();
    }
  }
  u64 us = (rdtsc() - t0) * 1000 / plat.tsc_khz;
  if (us == 0) us = 1;
  u64 iops = done * 1000000 / us;
  u64 centi_mib_s = done * bs * 1000000 / us * 100 / (1 << 20);  // MiB/s with 2 decimals
  kprintf("testos: diskbench test=%s bs=%u qd=%u ops=%llu us=%llu iops=%llu mib_s=%llu.%llu%llu\n", t->name, bs, qd,
          done, us, iops, centi_mib_s / 100, centi_mib_s / 10 % 10, centi_mib_s % 10);
}

void job_diskbench(const struct job_args* a) {
  open_disk();
  u64 region = a->have_mib ? a->mib * 2048 : 64 * 2048;
  if (region > blk.capacity) region = blk.capacity;
  u64 seconds = a->have_seconds ? a->seconds : 1;
  u64 ops = a->have_ops ? a->ops : 0;
  u64 rng = a->seed + 1;
  u8* pool = dma_alloc(4ULL << 20, 4096);  // 32 x 4 KiB or 4 x 1 MiB in flight
  for (u64 i = 0; i < (4ULL << 20) / 8; i++) ((u64*)pool)[i] = mix64(i);
  u32 n = 0;
  for (u32 i = 0; i < sizeof benches / sizeof benches[0]; i++) {
    if (benches[i].write && blk.ro) continue;
    run_bench(&benches[i], region, seconds, ops, &rng, pool);
    n++;
  }
  flush("diskbench");
  kprintf("testos: diskbench OK tests=%u mib=%llu\n", n, region / 2048);
  poweroff();
}
