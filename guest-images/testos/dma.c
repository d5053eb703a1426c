// testos: memory for devices to read and write (rings, request headers,
// data buffers). A bump allocator over usable e820 RAM above the kernel,
// below 4 GiB (any device can reach it, and it is inside the identity map).
#include "testos.h"

static u64 next, limit;
static u32 region = ~0u;

static int next_region(void) {
  for (u32 i = region + 1; i < binfo->e820_count; i++) {
    const struct e820_entry* e = &binfo->e820[i];
    if (e->type != E820_RAM) continue;
    u64 s = e->addr, end = e->addr + e->size;
    if (s < binfo->kernel_end) s = binfo->kernel_end;
    if (end > (4ULL << 30)) end = 4ULL << 30;
    if (end > binfo->map_limit) end = binfo->map_limit;
    if (s >= end) continue;
    region = i;
    next = s;
    limit = end;
    return 1;
  }
  return 0;
}

void* dma_alloc(u64 size, u64 align) {
  if (region == ~0u && !next_region()) fatal("no usable RAM for device buffers");
  for (;;) {
    u64 a = (next + align - 1) & ~(align - 1);
    if (a + size <= limit && a + size > a) {
      next = a + size;
      memset((void*)(uptr)a, 0, size);
      return (void*)(uptr)a;
    }
    if (!next_region()) fatal("out of RAM for device buffers (%llu bytes wanted)", size);
  }
}
