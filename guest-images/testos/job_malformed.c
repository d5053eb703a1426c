// testos job `malformed`: a hostile driver. It feeds virtio devices broken
// queues and descriptor chains (virtio 1.x 2.7) and expects each to be
// refused: the device sets DEVICE_NEEDS_RESET (2.1.2) or fails the request
// (virtio-blk status != OK). After each case it resets the device and
// proves it still works with a good request.
#include "virtio.h"

#define OUTSIDE 0x3ffffff00000ULL  // 64 TiB - 1 MiB: no RAM, no BAR
#define WAIT_US 2000000ULL

enum outcome { O_NEEDS_RESET, O_FAILED, O_ACCEPTED, O_NO_ANSWER };
static const char* const outcome_name[] = {"needs_reset", "failed", "accepted", "no_answer"};

struct target {
  const char* name;
  u16 type, queue;
  u64 features;
  struct virtio_dev dev;
  struct virtq q;
  u8* scratch;  // 64 KiB of DMA memory for buffers
};

static u32 cases, failures;
// lenient=1: a device may also ignore broken queue registers and nested
// indirect tables (the spec only forbids them to drivers), as QEMU 7.2 does.
static u32 lenient;

// Brings the device up with its queue set up normally (not DRIVER_OK yet).
static void up_begin(struct target* t) {
  const char* why = "";
  if (virtio_init(&t->dev, t->features, &why) != 0) fatal("malformed: %s init: %s", t->name, why);
}

static void up(struct target* t) {
  up_begin(t);
  if (virtq_setup(&t->dev, &t->q, t->queue, 64) != 0) fatal("malformed: %s has no queue %u", t->name, t->queue);
  virtio_driver_ok(&t->dev);
}

// Waits for the device to use something or to set DEVICE_NEEDS_RESET.
// `status` (virtio-blk's status byte, or 0) tells failed from accepted.
static enum outcome wait_outcome(struct target* t, volatile u8* status) {
  u64 t0 = rdtsc(), limit = us_to_tsc(WAIT_US);
  for (;;) {
    if (t->q.used->idx != t->q.last_used) {
      barrier();
      if (virtio_broken(&t->dev)) return O_NEEDS_RESET;
      return status && *status != VIRTIO_BLK_S_OK ? O_FAILED : O_ACCEPTED;
    }
    if (virtio_broken_poll(&t->dev)) return O_NEEDS_RESET;
    if (rdtsc() - t0 > limit) return virtio_broken(&t->dev) ? O_NEEDS_RESET : O_NO_ANSWER;
    cpu_relax();
  }
}

// A good request on a freshly reset device: 1 if it worked.
static int good_request(struct target* t) {
  virtio_reset(&t->dev);
  up(t);
  if (virtio_broken(&t->dev)) return 0;
  u8* buf = t->scratch;
  if (t->type == VIRTIO_ID_BLOCK) {
    // Read sectors 0-7, write them back, read again: same bytes, disk unchanged.
    struct blk_slot* sl = (struct blk_slot*)(t->scratch + 32768);
    u8* again = t->scratch + 16384;
    u32 types[3] = {VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_IN};
    for (u32 k = 0; k < 3; k++) {
      sl->hdr = (struct blk_hdr){types[k], 0, 0};
      sl->status = 0xff;
      struct vbuf v[3] = {{(u64)(uptr)&sl->hdr, 16, 0}, {(u64)(uptr)(k == 2 ? again : buf), 4096, k != 1},
                          {(u64)(uptr)&sl->status, 1, 1}};
      virtq_add(&t->q, v, 3, 0, 0);
      virtq_kick(&t->q);
      if (wait_outcome(t, &sl->status) != O_ACCEPTED) return 0;
      virtq_get(&t->q, 0, 0);
    }
    return memcmp(buf, again, 4096) == 0;
  }
  if (t->type == VIRTIO_ID_RNG) {
    memset(buf, 0, 64);
    struct vbuf v = {(u64)(uptr)buf, 64, 1};
    virtq_add(&t->q, &v, 1, 0, 0);
    virtq_kick(&t->q);
    if (wait_outcome(t, 0) != O_ACCEPTED) return 0;
    u32 len = 0;
    virtq_get(&t->q, 0, &len);
    return len > 0 && len <= 64;
  }
  // virtio-net transmit queue: one broadcast frame (virtio_net_hdr_v1 + 60 bytes).
  memset(buf, 0, 12 + 60);
  memset(buf + 12, 0xff, 6);
  buf[12 + 6] = 0x02;  // a locally administered source MAC
  buf[12 + 12] = 0x88;  // EtherType 0x88b5: local experimental
  buf[12 + 13] = 0xb5;
  struct vbuf v = {(u64)(uptr)buf, 12 + 60, 0};
  virtq_add(&t->q, &v, 1, 0, 0);
  virtq_kick(&t->q);
  if (wait_outcome(t, 0) != O_ACCEPTED) return 0;
  return virtq_get(&t->q, 0, 0);
}

static void report(struct target* t, const char* name, enum outcome o, int allowed) {
  int ok_after = good_request(t);
  cases++;
  int pass = allowed && ok_after;
  if (!pass) failures++;
  kprintf("testos: malformed dev=%s case=%s outcome=%s recovered=%u %s\n", t->name, name, outcome_name[o], ok_after,
          pass ? "ok" : "FAIL");
}

static void set_desc(struct target* t, u16 i, u64 addr, u32 len, u16 flags, u16 next) {
  volatile struct virtq_desc* d = &t->q.desc[i];
  d->addr = addr;
  d->len = len;
  d->flags = flags;
  d->next = next;
}

// A three-part chain in descriptors 0 -> 1 -> 2, of the shape each device
// type expects, with `data_addr`/`data_len` in the middle. Returns the blk
// status byte (or 0).
static volatile u8* chain(struct target* t, u64 data_addr, u32 data_len) {
  u8* s = t->scratch + 32768;
  if (t->type == VIRTIO_ID_BLOCK) {
    struct blk_hdr* h = (struct blk_hdr*)s;
    *h = (struct blk_hdr){VIRTIO_BLK_T_OUT, 0, 0};  // device only reads guest memory
    volatile u8* status = s + 16;
    *status = 0xff;
    set_desc(t, 0, (u64)(uptr)h, 16, VIRTQ_DESC_F_NEXT, 1);
    set_desc(t, 1, data_addr, data_len, VIRTQ_DESC_F_NEXT, 2);
    set_desc(t, 2, (u64)(uptr)status, 1, VIRTQ_DESC_F_WRITE, 0);
    return status;
  }
  u16 w = t->type == VIRTIO_ID_RNG ? VIRTQ_DESC_F_WRITE : 0;  // rng fills, net transmits
  if (t->type == VIRTIO_ID_NET) memset(s, 0, 12 + 60);
  set_desc(t, 0, (u64)(uptr)s, t->type == VIRTIO_ID_NET ? 12 : 16, (u16)(w | VIRTQ_DESC_F_NEXT), 1);
  set_desc(t, 1, data_addr, data_len, (u16)(w | VIRTQ_DESC_F_NEXT), 2);
  set_desc(t, 2, (u64)(uptr)(s + 64), 60, w, 0);
  return 0;
}

enum chain_bug { LOOP, NEXT_OUT_OF_RANGE, DATA_ONLY };

static void run_chain_case(struct target* t, const char* name, enum chain_bug bug, u64 data_addr, u32 data_len) {
  virtio_reset(&t->dev);
  up(t);
  volatile u8* status = chain(t, data_addr, data_len);
  if (bug == LOOP) t->q.desc[1].next = 0;  // 0 -> 1 -> 0 -> 1 ... (same direction: no order error)
  if (bug == NEXT_OUT_OF_RANGE) t->q.desc[1].next = (u16)(t->q.size + 5);
  virtq_push_raw(&t->q, 0);
  enum outcome o = wait_outcome(t, status);
  report(t, name, o, o == O_NEEDS_RESET || o == O_FAILED);
}

static void nested_indirect(struct target* t) {
  virtio_reset(&t->dev);
  up(t);
  if (!(t->dev.features & VIRTIO_F_INDIRECT_DESC)) {
    kprintf("testos: malformed dev=%s case=nested_indirect skipped (no INDIRECT_DESC)\n", t->name);
    return;
  }
  volatile struct virtq_desc* outer = (volatile struct virtq_desc*)(t->scratch + 40960);
  volatile struct virtq_desc* inner = outer + 16;
  volatile u8* status = chain(t, (u64)(uptr)t->scratch, 512);
  for (u32 i = 0; i < 3; i++) inner[i] = t->q.desc[i];
  // The outer table's only entry points to another table.
  outer[0] = (struct virtq_desc){(u64)(uptr)inner, 3 * 16, VIRTQ_DESC_F_INDIRECT, 0};
  set_desc(t, 0, (u64)(uptr)outer, 16, VIRTQ_DESC_F_INDIRECT, 0);
  virtq_push_raw(&t->q, 0);
  enum outcome o = wait_outcome(t, status);
  report(t, "nested_indirect", o, o == O_NEEDS_RESET || o == O_FAILED || lenient);
}

// Queue registers broken at setup: the device must refuse them at
// DRIVER_OK, or at the latest when kicked.
static void bad_setup(struct target* t, const char* name, u16 size, u64 desc, u64 avail, u64 used) {
  virtio_reset(&t->dev);
  up_begin(t);
  virtq_setup_raw(&t->dev, t->queue, size, desc, avail, used);
  virtio_driver_ok(&t->dev);
  enum outcome o;
  if (virtio_broken(&t->dev)) {
    o = O_NEEDS_RESET;
  } else {
    // Kick it and see: the device may notice only now.
    volatile u16* notify =
        (volatile u16*)(t->dev.notify_base +
                        (u64)mmio_read16(t->dev.common + 0x1e) * t->dev.notify_mult);  // queue_notify_off
    mmio_write16(notify, t->queue);
    u64 t0 = rdtsc();
    o = O_ACCEPTED;
    while (rdtsc() - t0 < us_to_tsc(200000)) {
      if (virtio_broken_poll(&t->dev)) {
        o = O_NEEDS_RESET;
        break;
      }
      cpu_relax();
    }
    if (o == O_ACCEPTED && virtio_broken(&t->dev)) o = O_NEEDS_RESET;
  }
  report(t, name, o, o == O_NEEDS_RESET || lenient);
}

static void run_target(struct target* t) {
  t->scratch = dma_alloc(65536, 4096);
  u64 good = (u64)(uptr)t->scratch;
  kprintf("testos: malformed dev=%s pci=%x.%x queue=%u\n", t->name, t->dev.pci->dev, t->dev.pci->fn, t->queue);
  // Sanity first: the device works before anything is broken.
  if (!good_request(t)) {
    kprintf("testos: malformed dev=%s FAIL a good request failed before any bad one\n", t->name);
    failures++;
    return;
  }
  // The device's own queue size (at most 64, what the rings below hold).
  mmio_write16(t->dev.common + 0x16, t->queue);  // queue_select
  u16 size = mmio_read16(t->dev.common + 0x18);   // queue_size: the maximum after reset
  if (size > 64) size = 64;
  run_chain_case(t, "loop", LOOP, good, 512);
  run_chain_case(t, "next_out_of_range", NEXT_OUT_OF_RANGE, good, 512);
  run_chain_case(t, "addr_outside_memory", DATA_ONLY, OUTSIDE, 8192);
  run_chain_case(t, "huge_length", DATA_ONLY, good, 0xffffffffu);
  nested_indirect(t);
  // Rings: sized for 64 entries, 4 KiB-aligned, inside scratch.
  u64 d = good + 4096, av = good + 8192, us = good + 12288;
  bad_setup(t, "avail_outside_memory", size, d, OUTSIDE, us);
  bad_setup(t, "used_outside_memory", size, d, av, OUTSIDE);
  bad_setup(t, "desc_outside_memory", size, OUTSIDE, av, us);
  if (size >= 4) bad_setup(t, "size_not_power_of_two", (u16)(size - size / 4), d, av, us);
  virtio_reset(&t->dev);
}

static int wanted(const char* devs, const char* name) {
  if (!devs) return 1;
  u32 n = (u32)strlen(name);
  for (const char* p = devs; *p;) {
    const char* e = p;
    while (*e && *e != ',') e++;
    if ((u32)(e - p) == n && memcmp(p, name, n) == 0) return 1;
    p = *e ? e + 1 : e;
  }
  return 0;
}

void job_malformed(const struct job_args* a) {
  static struct target targets[] = {
      {"blk", VIRTIO_ID_BLOCK, 0, VIRTIO_F_INDIRECT_DESC, {0}, {0}, 0},
      {"net", VIRTIO_ID_NET, 1, VIRTIO_F_INDIRECT_DESC, {0}, {0}, 0},
      {"rng", VIRTIO_ID_RNG, 0, VIRTIO_F_INDIRECT_DESC, {0}, {0}, 0},
  };
  u32 devices = 0;
  lenient = a->lenient;
  for (u32 i = 0; i < sizeof targets / sizeof targets[0]; i++) {
    struct target* t = &targets[i];
    if (!wanted(a->devs, t->name)) continue;
    if (!virtio_find(&t->dev, t->type, 0)) {
      if (a->devs) fatal("malformed: no virtio-%s device", t->name);
      continue;
    }
    devices++;
    run_target(t);
  }
  if (!devices) fatal("malformed: no virtio device to test");
  if (failures)
    kprintf("testos: malformed FAIL cases=%u failed=%u\n", cases, failures);
  else
    kprintf("testos: malformed OK cases=%u devices=%u\n", cases, devices);
  poweroff();
}
