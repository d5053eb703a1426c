// testos: PCI discovery and the virtio 1.x modern PCI transport (virtio 1.x,
// 4.1), with split virtqueues polled from ring 3. No interrupts: the driver
// polls the used ring (and the device status for DEVICE_NEEDS_RESET).
#pragma once

#include "testos.h"

// ------------------------------------------------------------------ PCI

struct pci_fn {
  u8 dev, fn;
  u16 vendor, device;
  u16 subsys;
  u8 class_code, subclass;
};

#define PCI_MAX_FNS 64
extern struct pci_fn pci_fns[PCI_MAX_FNS];
extern u32 pci_nfns;

// Configuration mechanism #1 (ports 0xcf8/0xcfc), bus 0.
u32 pci_read32(const struct pci_fn* f, u32 off);
u16 pci_read16(const struct pci_fn* f, u32 off);
u8 pci_read8(const struct pci_fn* f, u32 off);
void pci_write32(const struct pci_fn* f, u32 off, u32 v);
void pci_write16(const struct pci_fn* f, u32 off, u16 v);
void pci_write8(const struct pci_fn* f, u32 off, u8 v);
// Scans bus 0 once (later calls return at once).
void pci_scan(void);
// The physical address of memory BAR `bar` (64-bit BARs read as a pair). A
// BAR that is unassigned or outside the identity map is (re)assigned in
// [0xc0000000, 0xfc000000) clear of every other BAR and e820 entry; memory
// decoding is turned on. Dies if `bar` is not a memory BAR.
u64 pci_bar_address(const struct pci_fn* f, u32 bar);

// -------------------------------------------------------------- virtio

// 2.1 device status.
#define VIRTIO_ACKNOWLEDGE 1
#define VIRTIO_DRIVER 2
#define VIRTIO_DRIVER_OK 4
#define VIRTIO_FEATURES_OK 8
#define VIRTIO_NEEDS_RESET 0x40
#define VIRTIO_FAILED 0x80

// 6: reserved feature bits.
#define VIRTIO_F_INDIRECT_DESC (1ULL << 28)
#define VIRTIO_F_EVENT_IDX (1ULL << 29)
#define VIRTIO_F_VERSION_1 (1ULL << 32)

// 5: device types.
#define VIRTIO_ID_NET 1
#define VIRTIO_ID_BLOCK 2
#define VIRTIO_ID_RNG 4

// 2.7.5 descriptor flags.
#define VIRTQ_DESC_F_NEXT 1
#define VIRTQ_DESC_F_WRITE 2
#define VIRTQ_DESC_F_INDIRECT 4
#define VIRTQ_AVAIL_F_NO_INTERRUPT 1
#define VIRTQ_USED_F_NO_NOTIFY 1

struct virtq_desc {
  u64 addr;
  u32 len;
  u16 flags;
  u16 next;
};

struct virtq_avail {
  u16 flags;
  u16 idx;
  u16 ring[];  // then used_event
};

struct virtq_used_elem {
  u32 id;
  u32 len;
};

struct virtq_used {
  u16 flags;
  u16 idx;
  struct virtq_used_elem ring[];  // then avail_event
};

#define VQ_MAX 256  // queue size used here at most

struct virtq {
  u16 index, size;
  volatile struct virtq_desc* desc;
  volatile struct virtq_avail* avail;
  volatile struct virtq_used* used;
  volatile u16* notify;
  u16 free_head, num_free;
  u16 avail_idx;   // next avail->idx we publish
  u16 last_used;   // next used->idx slot we read
  u16 kicked_idx;  // avail_idx at the last kick (EVENT_IDX)
  u32 event_idx, indirect;
  u64 cookie[VQ_MAX];
  u16 chain_len[VQ_MAX];
  u64 kicks;
};

struct virtio_dev {
  const struct pci_fn* pci;
  u16 type;
  volatile u8* common;
  volatile u8* isr;
  volatile u8* devcfg;
  volatile u8* notify_base;
  u32 notify_mult;
  u32 devcfg_len;
  u64 bar_addr[6];
  u64 offered, features;
  u16 num_queues;
  u64 next_status_check;  // virtio_broken_poll: TSC of the next real read
};

// Finds the `nth` (from 0) virtio device of `type` (modern ID 0x1040+type or
// transitional 0x1000-0x103f with that subsystem ID) and locates its
// structures through the vendor capabilities (4.1.4). Returns 0 if absent.
int virtio_find(struct virtio_dev* d, u16 type, u32 nth);
// Reset, ACKNOWLEDGE, DRIVER, features (`want` & offered, plus VERSION_1,
// which must be offered), FEATURES_OK and its check (3.1.1 steps 1-6).
// Returns 0, or -1 with a reason in *why.
int virtio_init(struct virtio_dev* d, u64 want, const char** why);
// Resets the device and waits until status reads back 0 (4.1.4.3.2).
void virtio_reset(struct virtio_dev* d);
u8 virtio_status(const struct virtio_dev* d);
void virtio_set_status(struct virtio_dev* d, u8 s);
// Queue setup (4.1.5.1.3): size = min(device max, want); rings in DMA
// memory. Returns 0, or -1 if the queue does not exist.
int virtq_setup(struct virtio_dev* d, struct virtq* q, u16 index, u16 want);
// Writes raw queue registers (the malformed job): size, ring addresses, enable.
void virtq_setup_raw(struct virtio_dev* d, u16 index, u16 size, u64 desc, u64 avail, u64 used);
// DRIVER_OK (3.1.1 step 8).
void virtio_driver_ok(struct virtio_dev* d);
// Device configuration: one read of 1, 2, 4 bytes; 8-byte fields as a
// consistent pair under config_generation (4.1.4.3.1).
u32 virtio_cfg_read(const struct virtio_dev* d, u32 off, u32 width);
u64 virtio_cfg_read64(const struct virtio_dev* d, u32 off);

struct vbuf {
  u64 addr;
  u32 len;
  u32 write;  // device-writable
};

// Adds a chain (readable buffers first), returns 0, or -1 when the ring
// has no room. With INDIRECT_DESC the chain goes into `indirect_table`
// (when given: n entries of DMA memory) as one ring descriptor.
int virtq_add(struct virtq* q, const struct vbuf* b, u32 n, u64 cookie,
              volatile struct virtq_desc* indirect_table);
// Publishes what was added and notifies the device if it wants it.
void virtq_kick(struct virtq* q);
// The next used chain: returns 1 and its cookie and written length, or 0.
int virtq_get(struct virtq* q, u64* cookie, u32* len);
// Publishes one raw head (the malformed job) and notifies.
void virtq_push_raw(struct virtq* q, u16 head);

// Whether polling should give up: the device set DEVICE_NEEDS_RESET.
static inline int virtio_broken(const struct virtio_dev* d) {
  return (virtio_status(d) & VIRTIO_NEEDS_RESET) != 0;
}
// The same for busy-wait loops: reads the status register (an MMIO exit,
// costly on PVM and nested hosts) at most once a millisecond, else says no.
int virtio_broken_poll(struct virtio_dev* d);

// ---------------------------------------------------------- virtio-blk

#define VIRTIO_BLK_T_IN 0
#define VIRTIO_BLK_T_OUT 1
#define VIRTIO_BLK_T_FLUSH 4
#define VIRTIO_BLK_S_OK 0
#define VIRTIO_BLK_S_IOERR 1
#define VIRTIO_BLK_S_UNSUPP 2
#define BLK_STATUS_TIMEOUT 0x100  // blk_wait: no answer in time
#define BLK_STATUS_RESET 0x101    // blk_wait: the device set DEVICE_NEEDS_RESET

#define BLK_MAX_INFLIGHT 64

struct blk_hdr {
  u32 type;
  u32 reserved;
  u64 sector;
};

struct blk_slot {
  struct blk_hdr hdr;
  u8 status;
  u8 pad[15];
  struct virtq_desc table[8];  // indirect table
};

struct blk {
  struct virtio_dev dev;
  struct virtq q;
  struct blk_slot* slots;
  u32 slot_busy[BLK_MAX_INFLIGHT];
  u32 max_inflight, inflight;
  u64 capacity;  // sectors
  u32 seg_max, size_max;
  u32 max_bytes;  // largest request data length used here
  u32 flush, ro;
};

// Finds, initialises and starts the first virtio-blk device. `extra`: more
// features to ask for (EVENT_IDX, INDIRECT_DESC). Returns 0 or -1 (+why).
int blk_open(struct blk* b, u64 extra, const char** why);
// Submits one request (IN, OUT: len bytes at buf; FLUSH: none); returns the
// slot, or -1 when max_inflight requests are out. Call blk_kick after.
int blk_submit(struct blk* b, u32 type, u64 sector, void* buf, u32 len);
void blk_kick(struct blk* b);
// A completed request: returns 1 with its slot and status byte, or 0.
int blk_reap(struct blk* b, u32* slot, u32* status);
// Submits and waits (up to timeout_us): the status, or BLK_STATUS_*.
u32 blk_do(struct blk* b, u32 type, u64 sector, void* buf, u32 len, u64 timeout_us);
