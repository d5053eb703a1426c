// testos job `rng`: reads bytes from virtio-rng (virtio 1.x, 5.4) and checks
// they look random: not all zero, not one repeated value, both bit values
// about equally often, and no two requests answered with the same bytes.
#include "virtio.h"

#define CHUNK 4096

void job_rng(const struct job_args* a) {
  static struct virtio_dev dev;
  static struct virtq q;
  const char* why = "";
  if (!virtio_find(&dev, VIRTIO_ID_RNG, 0)) fatal("rng: no virtio-rng device");
  if (virtio_init(&dev, VIRTIO_F_EVENT_IDX, &why) != 0) fatal("rng: %s", why);
  if (virtq_setup(&dev, &q, 0, 64) != 0) fatal("rng: no queue 0");
  virtio_driver_ok(&dev);
  u8* buf = dma_alloc(CHUNK, 4096);
  u8* prev = dma_alloc(CHUNK, 4096);
  u64 got = 0, requests = 0, ones = 0, repeats = 0;
  u32 counts[256];
  memset(counts, 0, sizeof counts);
  u32 prev_len = 0;
  u64 t0 = rdtsc();
  while (got < a->bytes) {
    u32 want = a->bytes - got < CHUNK ? (u32)(a->bytes - got) : CHUNK;
    struct vbuf v = {(u64)(uptr)buf, want, 1};
    virtq_add(&q, &v, 1, 0, 0);
    virtq_kick(&q);
    u32 len = 0;
    u64 w0 = rdtsc();
    while (!virtq_get(&q, 0, &len)) {
      if (virtio_broken_poll(&dev)) {
        kprintf("testos: rng FAIL device set DEVICE_NEEDS_RESET\n");
        poweroff();
      }
      if (rdtsc() - w0 > us_to_tsc(10000000)) {
        kprintf("testos: rng FAIL no answer in 10 s after %llu bytes\n", got);
        poweroff();
      }
      cpu_relax();
    }
    if (len > want) {
      kprintf("testos: rng FAIL device wrote %u bytes into a %u-byte buffer\n", len, want);
      poweroff();
    }
    requests++;
    for (u32 i = 0; i < len; i++) {
      counts[buf[i]]++;
      for (u8 x = buf[i]; x; x &= (u8)(x - 1)) ones++;
    }
    if (len >= 16 && len == prev_len && memcmp(buf, prev, len) == 0) repeats++;
    memcpy(prev, buf, len);
    prev_len = len;
    got += len;
  }
  u64 us = (rdtsc() - t0) * 1000 / plat.tsc_khz;
  u32 distinct = 0, top = 0;
  for (u32 i = 0; i < 256; i++) {
    if (counts[i]) distinct++;
    if (counts[i] > top) top = counts[i];
  }
  u64 permille = got ? ones * 1000 / (got * 8) : 0;
  const char* fail = 0;
  if (counts[0] == got)
    fail = "all bytes are zero";
  else if (distinct == 1)
    fail = "all bytes are the same";
  else if (repeats)
    fail = "two requests returned the same bytes";
  else if (got >= 1024 && (permille < 450 || permille > 550))
    fail = "bit balance off";
  else if (got >= 4096 && distinct < 200)
    fail = "too few distinct byte values";
  if (fail)
    kprintf("testos: rng FAIL %s bytes=%llu distinct=%u ones_permille=%llu\n", fail, got, distinct, permille);
  else
    kprintf("testos: rng OK bytes=%llu requests=%llu distinct=%u ones_permille=%llu us=%llu\n", got, requests,
            distinct, permille, us);
  poweroff();
}
