// testos: virtio-blk driver (virtio 1.x, 5.2), polled.
#include "virtio.h"

#define VIRTIO_BLK_F_SIZE_MAX (1ULL << 1)
#define VIRTIO_BLK_F_SEG_MAX (1ULL << 2)
#define VIRTIO_BLK_F_RO (1ULL << 5)
#define VIRTIO_BLK_F_FLUSH (1ULL << 9)

#define BLK_MAX_SEGS 6  // data segments per request here (slot table: 8 entries)

int blk_open(struct blk* b, u64 extra, const char** why) {
  memset(b, 0, sizeof *b);
  if (!virtio_find(&b->dev, VIRTIO_ID_BLOCK, 0)) {
    *why = "no virtio-blk device";
    return -1;
  }
  u64 want = VIRTIO_BLK_F_SIZE_MAX | VIRTIO_BLK_F_SEG_MAX | VIRTIO_BLK_F_RO | VIRTIO_BLK_F_FLUSH | extra;
  if (virtio_init(&b->dev, want, why) != 0) return -1;
  if (virtq_setup(&b->dev, &b->q, 0, 256) != 0) {
    *why = "virtio-blk has no queue 0";
    return -1;
  }
  u64 f = b->dev.features;
  b->capacity = virtio_cfg_read64(&b->dev, 0);
  b->size_max = f & VIRTIO_BLK_F_SIZE_MAX ? virtio_cfg_read(&b->dev, 8, 4) : 0;
  b->seg_max = f & VIRTIO_BLK_F_SEG_MAX ? virtio_cfg_read(&b->dev, 12, 4) : 0;
  b->flush = (f & VIRTIO_BLK_F_FLUSH) != 0;
  b->ro = (f & VIRTIO_BLK_F_RO) != 0;
  // Largest data length: 1 MiB, within seg_max segments of size_max bytes.
  u32 segs = b->seg_max && b->seg_max < BLK_MAX_SEGS ? b->seg_max : BLK_MAX_SEGS;
  u64 max = 1 << 20;
  if (b->size_max && (u64)segs * b->size_max < max) max = (u64)segs * b->size_max & ~4095ULL;
  if (max < 4096) max = 4096;
  b->max_bytes = (u32)max;
  // Without indirect descriptors a request takes 2 + segments ring entries.
  u32 per = b->q.indirect ? 1 : 2 + (b->size_max ? (b->max_bytes + b->size_max - 1) / b->size_max : 1);
  b->max_inflight = b->q.size / per;
  if (b->max_inflight > BLK_MAX_INFLIGHT) b->max_inflight = BLK_MAX_INFLIGHT;
  b->slots = dma_alloc(sizeof(struct blk_slot) * BLK_MAX_INFLIGHT, 4096);
  virtio_driver_ok(&b->dev);
  if (virtio_status(&b->dev) & VIRTIO_NEEDS_RESET) {
    *why = "virtio-blk set DEVICE_NEEDS_RESET at DRIVER_OK";
    return -1;
  }
  return 0;
}

int blk_submit(struct blk* b, u32 type, u64 sector, void* buf, u32 len) {
  if (b->inflight >= b->max_inflight) return -1;
  u32 s = 0;
  while (b->slot_busy[s]) s++;
  struct blk_slot* sl = &b->slots[s];
  sl->hdr.type = type;
  sl->hdr.reserved = 0;
  sl->hdr.sector = sector;
  sl->status = 0xff;
  struct vbuf v[BLK_MAX_SEGS + 2];
  u32 n = 0;
  v[n++] = (struct vbuf){(u64)(uptr)&sl->hdr, sizeof sl->hdr, 0};
  u64 a = (u64)(uptr)buf;
  u32 left = len;
  while (left) {
    u32 seg = b->size_max && left > b->size_max ? b->size_max : left;
    if (n == BLK_MAX_SEGS + 1) fatal("blk request of %u bytes needs too many segments", len);
    v[n++] = (struct vbuf){a, seg, type == VIRTIO_BLK_T_IN};
    a += seg;
    left -= seg;
  }
  v[n++] = (struct vbuf){(u64)(uptr)&sl->status, 1, 1};
  if (virtq_add(&b->q, v, n, s, sl->table) != 0) return -1;
  b->slot_busy[s] = 1;
  b->inflight++;
  return (int)s;
}

void blk_kick(struct blk* b) { virtq_kick(&b->q); }

int blk_reap(struct blk* b, u32* slot, u32* status) {
  u64 cookie;
  if (!virtq_get(&b->q, &cookie, 0)) return 0;
  *slot = (u32)cookie;
  *status = *(volatile u8*)&b->slots[cookie].status;
  b->slot_busy[cookie] = 0;
  b->inflight--;
  return 1;
}

u32 blk_do(struct blk* b, u32 type, u64 sector, void* buf, u32 len, u64 timeout_us) {
  int s = blk_submit(b, type, sector, buf, len);
  if (s < 0) fatal("blk_do with requests in flight");
  blk_kick(b);
  u64 t0 = rdtsc(), limit = us_to_tsc(timeout_us);
  u32 slot, status;
  for (u32 spin = 0;; spin++) {
    if (blk_reap(b, &slot, &status)) return status;
    if ((spin & 255) == 0) {
      if (virtio_broken_poll(&b->dev)) return BLK_STATUS_RESET;
      if (rdtsc() - t0 > limit) return BLK_STATUS_TIMEOUT;
    }
    cpu_relax();
  }
}
