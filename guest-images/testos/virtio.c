// testos: the virtio 1.x modern PCI transport (4.1) and split virtqueues
// (2.7), driver side, polled from ring 3.
#include "virtio.h"

// 4.1.4.3 common configuration.
#define CC_DFSELECT 0x00
#define CC_DF 0x04
#define CC_GFSELECT 0x08
#define CC_GF 0x0c
#define CC_NUM_QUEUES 0x12
#define CC_STATUS 0x14
#define CC_GENERATION 0x15
#define CC_Q_SELECT 0x16
#define CC_Q_SIZE 0x18
#define CC_Q_MSIX 0x1a
#define CC_Q_ENABLE 0x1c
#define CC_Q_NOFF 0x1e
#define CC_Q_DESC 0x20
#define CC_Q_AVAIL 0x28
#define CC_Q_USED 0x30

// 4.1.4 virtio vendor capability.
#define PCI_CAP_VENDOR 0x09
#define CAP_COMMON 1
#define CAP_NOTIFY 2
#define CAP_ISR 3
#define CAP_DEVICE 4

static void write64(volatile u8* p, u64 v) {  // 4.1.3.1: as two dwords
  mmio_write32(p, (u32)v);
  mmio_write32(p + 4, (u32)(v >> 32));
}

int virtio_find(struct virtio_dev* d, u16 type, u32 nth) {
  pci_scan();
  memset(d, 0, sizeof *d);
  for (u32 i = 0; i < pci_nfns; i++) {
    const struct pci_fn* f = &pci_fns[i];
    if (f->vendor != 0x1af4) continue;
    int match = f->device == 0x1040 + type || (f->device >= 0x1000 && f->device <= 0x103f && f->subsys == type);
    if (!match || nth--) continue;
    d->pci = f;
    d->type = type;
    if (!(pci_read16(f, 6) & 0x10)) fatal("virtio %x.%x has no capability list", f->dev, f->fn);
    u32 guard = 0;
    for (u8 cap = pci_read8(f, 0x34) & 0xfc; cap && guard < 48; cap = pci_read8(f, cap + 1) & 0xfc, guard++) {
      if (pci_read8(f, cap) != PCI_CAP_VENDOR) continue;
      u8 cfg_type = pci_read8(f, cap + 3);
      u8 bar = pci_read8(f, cap + 4);
      u32 off = pci_read32(f, cap + 8);
      u32 len = pci_read32(f, cap + 12);
      if (cfg_type < CAP_COMMON || cfg_type > CAP_DEVICE || bar > 5) continue;
      // 4.1.4.1: the first capability of each type that we can use wins.
      volatile u8** slot = cfg_type == CAP_COMMON ? &d->common
                           : cfg_type == CAP_NOTIFY ? &d->notify_base
                           : cfg_type == CAP_ISR    ? &d->isr
                                                    : &d->devcfg;
      if (*slot) continue;
      if (!d->bar_addr[bar]) d->bar_addr[bar] = pci_bar_address(f, bar);
      *slot = (volatile u8*)(uptr)(d->bar_addr[bar] + off);
      if (cfg_type == CAP_NOTIFY) d->notify_mult = pci_read32(f, cap + 16);
      if (cfg_type == CAP_DEVICE) d->devcfg_len = len;
    }
    if (!d->common || !d->notify_base || !d->isr)
      fatal("virtio %x.%x (type %u) lacks a common/notify/ISR capability", f->dev, f->fn, type);
    // Bus mastering: the device reads and writes our memory.
    u16 cmd = pci_read16(f, 4);
    if ((cmd & 6) != 6) pci_write16(f, 4, cmd | 6);
    return 1;
  }
  return 0;
}

u8 virtio_status(const struct virtio_dev* d) { return mmio_read8(d->common + CC_STATUS); }
void virtio_set_status(struct virtio_dev* d, u8 s) { mmio_write8(d->common + CC_STATUS, s); }

void virtio_reset(struct virtio_dev* d) {
  virtio_set_status(d, 0);
  u64 t0 = rdtsc(), limit = us_to_tsc(2000000);
  while (virtio_status(d) != 0) {
    if (rdtsc() - t0 > limit) fatal("virtio %x.%x: reset not finished after 2 s", d->pci->dev, d->pci->fn);
    cpu_relax();
  }
}

int virtio_init(struct virtio_dev* d, u64 want, const char** why) {
  virtio_reset(d);
  virtio_set_status(d, VIRTIO_ACKNOWLEDGE);
  virtio_set_status(d, VIRTIO_ACKNOWLEDGE | VIRTIO_DRIVER);
  u64 offered = 0;
  for (u32 sel = 0; sel < 2; sel++) {
    mmio_write32(d->common + CC_DFSELECT, sel);
    offered |= (u64)mmio_read32(d->common + CC_DF) << (32 * sel);
  }
  d->offered = offered;
  if (!(offered & VIRTIO_F_VERSION_1)) {
    *why = "device does not offer VERSION_1";
    virtio_set_status(d, VIRTIO_FAILED);
    return -1;
  }
  d->features = (want | VIRTIO_F_VERSION_1) & offered;
  for (u32 sel = 0; sel < 2; sel++) {
    mmio_write32(d->common + CC_GFSELECT, sel);
    mmio_write32(d->common + CC_GF, (u32)(d->features >> (32 * sel)));
  }
  virtio_set_status(d, VIRTIO_ACKNOWLEDGE | VIRTIO_DRIVER | VIRTIO_FEATURES_OK);
  if (!(virtio_status(d) & VIRTIO_FEATURES_OK)) {
    *why = "device refused FEATURES_OK";
    virtio_set_status(d, VIRTIO_FAILED);
    return -1;
  }
  d->num_queues = mmio_read16(d->common + CC_NUM_QUEUES);
  return 0;
}

void virtq_setup_raw(struct virtio_dev* d, u16 index, u16 size, u64 desc, u64 avail, u64 used) {
  volatile u8* c = d->common;
  mmio_write16(c + CC_Q_SELECT, index);
  mmio_write16(c + CC_Q_SIZE, size);
  mmio_write16(c + CC_Q_MSIX, 0xffff);  // polled: no vector
  write64(c + CC_Q_DESC, desc);
  write64(c + CC_Q_AVAIL, avail);
  write64(c + CC_Q_USED, used);
  mmio_write16(c + CC_Q_ENABLE, 1);
}

int virtq_setup(struct virtio_dev* d, struct virtq* q, u16 index, u16 want) {
  volatile u8* c = d->common;
  if (index >= d->num_queues) return -1;
  mmio_write16(c + CC_Q_SELECT, index);
  u16 max = mmio_read16(c + CC_Q_SIZE);
  if (max == 0) return -1;
  u16 size = want < max ? want : max;
  if (size > VQ_MAX) size = VQ_MAX;
  memset(q, 0, sizeof *q);
  q->index = index;
  q->size = size;
  q->desc = dma_alloc(16ULL * size, 4096);
  q->avail = dma_alloc(6 + 2ULL * size, 4096);
  q->used = dma_alloc(6 + 8ULL * size, 4096);
  for (u16 i = 0; i < size; i++) q->desc[i].next = (u16)(i + 1);
  q->num_free = size;
  q->event_idx = (d->features & VIRTIO_F_EVENT_IDX) != 0;
  q->indirect = (d->features & VIRTIO_F_INDIRECT_DESC) != 0;
  // Polling: ask for no interrupts (2.7.7.1; with EVENT_IDX used_event
  // stays at 0, which the device crosses once per 65536 buffers).
  q->avail->flags = VIRTQ_AVAIL_F_NO_INTERRUPT;
  u16 noff = mmio_read16(c + CC_Q_NOFF);
  q->notify = (volatile u16*)(d->notify_base + (u64)noff * d->notify_mult);
  virtq_setup_raw(d, index, size, (u64)(uptr)q->desc, (u64)(uptr)q->avail, (u64)(uptr)q->used);
  return 0;
}

void virtio_driver_ok(struct virtio_dev* d) {
  virtio_set_status(d, VIRTIO_ACKNOWLEDGE | VIRTIO_DRIVER | VIRTIO_FEATURES_OK | VIRTIO_DRIVER_OK);
}

u32 virtio_cfg_read(const struct virtio_dev* d, u32 off, u32 width) {
  if (!d->devcfg || off + width > d->devcfg_len) return 0;
  if (width == 1) return mmio_read8(d->devcfg + off);
  if (width == 2) return mmio_read16(d->devcfg + off);
  return mmio_read32(d->devcfg + off);
}

u64 virtio_cfg_read64(const struct virtio_dev* d, u32 off) {
  u8 gen;
  u64 v;
  do {
    gen = mmio_read8(d->common + CC_GENERATION);
    v = virtio_cfg_read(d, off, 4) | ((u64)virtio_cfg_read(d, off + 4, 4) << 32);
  } while (gen != mmio_read8(d->common + CC_GENERATION));
  return v;
}

int virtq_add(struct virtq* q, const struct vbuf* b, u32 n, u64 cookie,
              volatile struct virtq_desc* table) {
  if (n == 0) return -1;
  u32 use_indirect = q->indirect && table && n > 1;
  u32 need = use_indirect ? 1 : n;
  if (q->num_free < need) return -1;
  u16 head = q->free_head;
  if (use_indirect) {
    for (u32 i = 0; i < n; i++) {
      table[i].addr = b[i].addr;
      table[i].len = b[i].len;
      table[i].flags = (u16)((b[i].write ? VIRTQ_DESC_F_WRITE : 0) | (i + 1 < n ? VIRTQ_DESC_F_NEXT : 0));
      table[i].next = (u16)(i + 1);
    }
    volatile struct virtq_desc* d = &q->desc[head];
    d->addr = (u64)(uptr)table;
    d->len = 16 * n;
    d->flags = VIRTQ_DESC_F_INDIRECT;
    q->free_head = d->next;
  } else {
    u16 i = head, last = head;
    for (u32 k = 0; k < n; k++) {
      volatile struct virtq_desc* d = &q->desc[i];
      d->addr = b[k].addr;
      d->len = b[k].len;
      d->flags = (u16)((b[k].write ? VIRTQ_DESC_F_WRITE : 0) | (k + 1 < n ? VIRTQ_DESC_F_NEXT : 0));
      last = i;
      i = d->next;
    }
    q->free_head = q->desc[last].next;
  }
  q->num_free -= (u16)need;
  q->cookie[head] = cookie;
  q->chain_len[head] = (u16)need;
  q->avail->ring[q->avail_idx % q->size] = head;
  q->avail_idx++;
  return 0;
}

void virtq_kick(struct virtq* q) {
  barrier();  // ring entries before the index (TSO: stores stay in order)
  q->avail->idx = q->avail_idx;
  mb();  // the index before reading the device's suppression state
  int need;
  if (q->event_idx) {
    // 2.7.10: notify if avail_event lies in (kicked_idx, avail_idx].
    u16 ev = *(volatile u16*)&q->used->ring[q->size];
    need = (u16)(q->avail_idx - ev - 1) < (u16)(q->avail_idx - q->kicked_idx);
  } else {
    need = !(q->used->flags & VIRTQ_USED_F_NO_NOTIFY);
  }
  q->kicked_idx = q->avail_idx;
  if (need) {
    mmio_write16(q->notify, q->index);
    q->kicks++;
  }
}

void virtq_push_raw(struct virtq* q, u16 head) {
  q->avail->ring[q->avail_idx % q->size] = head;
  q->avail_idx++;
  barrier();
  q->avail->idx = q->avail_idx;
  mb();
  q->kicked_idx = q->avail_idx;
  mmio_write16(q->notify, q->index);
}

int virtq_get(struct virtq* q, u64* cookie, u32* len) {
  if (q->last_used == q->used->idx) return 0;
  barrier();  // the index before the element (TSO: loads stay in order)
  volatile struct virtq_used_elem* e = &q->used->ring[q->last_used % q->size];
  u32 id = e->id;
  if (len) *len = e->len;
  q->last_used++;
  if (id >= q->size) fatal("virtq %u: device returned head %u >= size %u", q->index, id, q->size);
  if (cookie) *cookie = q->cookie[id];
  // Return the chain to the free list: walk it to find its end.
  u16 n = q->chain_len[id], last = (u16)id;
  for (u16 k = 1; k < n; k++) last = q->desc[last].next;
  q->desc[last].next = q->free_head;
  q->free_head = (u16)id;
  q->num_free += n;
  return 1;
}

int virtio_broken_poll(struct virtio_dev* d) {
  u64 now = rdtsc();
  if ((s64)(now - d->next_status_check) < 0) return 0;
  d->next_status_check = now + plat.tsc_khz;  // 1 ms
  return virtio_broken(d);
}
