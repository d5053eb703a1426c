// testos job `resetstorm`: a hostile virtio-blk driver that tries to freeze
// the VMM through its device reset. Round after round it fills the queue
// with the largest reads the device lets it ask for (every segment over one
// buffer, as many segments as seg_max allows, each as large as size_max
// allows, or mib= MiB where the device names none, up to the disk's
// capacity and below 4 GiB), kicks, and resets the device at once. A device
// that waited for those reads inside the reset would hold up the VMM's
// other work meanwhile; the test measures the control socket's answers.
#include "virtio.h"

#define F_SIZE_MAX (1ULL << 1)
#define F_SEG_MAX (1ULL << 2)
#define MAX_SEGS 1022  // + header + status: the 1024 entries an indirect table may have
#define QUEUE 64

static u8 status_bytes[QUEUE];

// Writes 0 and waits for the status to read 0 (4.1.4.3.1), however long the
// device takes; returns how long, in microseconds.
static u64 reset_and_wait(struct virtio_dev* d) {
  u64 t0 = rdtsc();
  virtio_set_status(d, 0);
  while (virtio_status(d) != 0) cpu_relax();
  return (rdtsc() - t0) * 1000 / plat.tsc_khz;
}

void job_resetstorm(const struct job_args* a) {
  static struct virtio_dev dev;
  static struct virtq q;
  if (!virtio_find(&dev, VIRTIO_ID_BLOCK, 0)) fatal("resetstorm: no virtio-blk device");
  const u64 seconds = a->have_seconds ? a->seconds : 5;
  const u64 buffer_bytes = (a->have_mib ? a->mib : 16) << 20;
  u8* buffer = dma_alloc(buffer_bytes, 4096);
  volatile struct virtq_desc* tables = dma_alloc(sizeof(struct virtq_desc) * (MAX_SEGS + 2) * QUEUE, 4096);
  static struct vbuf bufs[MAX_SEGS + 2];
  static struct blk_hdr hdr = {VIRTIO_BLK_T_IN, 0, 0};

  const u64 end = rdtsc() + us_to_tsc(seconds * 1000000);
  u64 rounds = 0, requests = 0, max_reset_us = 0, request_bytes = 0;
  while ((s64)(rdtsc() - end) < 0) {
    const char* why = "";
    if (virtio_init(&dev, VIRTIO_F_INDIRECT_DESC | F_SIZE_MAX | F_SEG_MAX, &why) != 0)
      fatal("resetstorm: init: %s", why);
    if (!(dev.features & VIRTIO_F_INDIRECT_DESC)) fatal("resetstorm: the device offers no INDIRECT_DESC");
    if (virtq_setup(&dev, &q, 0, QUEUE) != 0) fatal("resetstorm: no queue 0");
    virtio_driver_ok(&dev);

    // The largest read the device allows.
    const u64 capacity = virtio_cfg_read64(&dev, 0) << 9;
    u64 seg = buffer_bytes;
    if (dev.features & F_SIZE_MAX) {
      u64 size_max = virtio_cfg_read(&dev, 8, 4);
      if (size_max && size_max < seg) seg = size_max & ~511ULL;
    }
    u64 segs = MAX_SEGS;
    if (dev.features & F_SEG_MAX) {
      u64 seg_max = virtio_cfg_read(&dev, 12, 4);
      if (seg_max && seg_max < segs) segs = seg_max;
    }
    if (seg == 0 || capacity < seg) fatal("resetstorm: the disk is smaller than one segment");
    if (segs * seg > capacity) segs = capacity / seg;
    if (segs * seg >= (4ULL << 30)) segs = ((4ULL << 30) - 1) / seg;
    request_bytes = segs * seg;

    bufs[0] = (struct vbuf){(u64)(uptr)&hdr, sizeof hdr, 0};
    for (u64 i = 0; i < segs; i++) bufs[1 + i] = (struct vbuf){(u64)(uptr)buffer, (u32)seg, 1};
    for (u32 r = 0; r < q.size; r++) {
      status_bytes[r] = 0xff;
      bufs[1 + segs] = (struct vbuf){(u64)(uptr)&status_bytes[r], 1, 1};
      if (virtq_add(&q, bufs, (u32)segs + 2, r, tables + (u64)r * (MAX_SEGS + 2)) != 0) break;
      requests++;
    }
    virtq_kick(&q);
    // Long enough for the device to take the chains, far too short for
    // the reads to finish.
    for (u64 until = rdtsc() + us_to_tsc(2000); (s64)(rdtsc() - until) < 0;) cpu_relax();
    u64 waited = reset_and_wait(&dev);
    if (waited > max_reset_us) max_reset_us = waited;
    rounds++;
    if (rounds == 1 || rounds % 16 == 0) kprintf("testos: resetstorm round=%llu\n", rounds);
  }
  kprintf("testos: resetstorm OK rounds=%llu requests=%llu request_mib=%llu max_reset_ms=%llu\n", rounds, requests,
          request_bytes >> 20, max_reset_us / 1000);
  poweroff();
}
