// testos: polled 8250 UART on COM1 and a tiny printf.
#include <stdarg.h>

#include "testos.h"

#define COM1 0x3f8

void serial_init(void) {
  outb(COM1 + 1, 0x00);  // IER: no interrupts
  outb(COM1 + 3, 0x80);  // LCR: DLAB
  outb(COM1 + 0, 0x01);  // divisor 1: 115200 baud
  outb(COM1 + 1, 0x00);
  outb(COM1 + 3, 0x03);  // 8N1
  outb(COM1 + 2, 0xc7);  // FIFO on, cleared
  outb(COM1 + 4, 0x03);  // DTR | RTS
}

// Polled output: wait for THRE (LSR bit 5), which in FIFO mode means the
// 16-byte transmit FIFO is empty, then write up to 16 bytes with one
// `rep outsb`. Give up waiting after a while rather than hang forever on a
// missing or broken UART. (One string write instead of 16 single ones: on
// PVM hosts each ring-3 port access traps to ring 0, see kernel.c.)
void serial_write(const char* s, unsigned long n) {
  while (n) {
    for (u32 i = 0; i < 1000000; i++) {
      if (inb(COM1 + 5) & 0x20) break;
      cpu_relax();
    }
    unsigned long chunk = n < 16 ? n : 16;
    n -= chunk;
    __asm__ volatile("rep outsb" : "+S"(s), "+c"(chunk) : "d"((u16)COM1) : "memory");
  }
}

unsigned long serial_read(char* buf, unsigned long max) {
  unsigned long n = 0;
  while (n < max && (inb(COM1 + 5) & 0x01)) buf[n++] = (char)inb(COM1);  // LSR: data ready
  return n;
}

struct out {
  char* buf;
  unsigned long size, len;
};

static void put(struct out* o, char c) {
  if (o->len + 1 < o->size) o->buf[o->len] = c;
  o->len++;
}

static void put_u64(struct out* o, u64 v, u32 base) {
  char tmp[24];
  int n = 0;
  do {
    u32 d = (u32)(v % base);
    tmp[n++] = (char)(d < 10 ? '0' + d : 'a' + d - 10);
    v /= base;
  } while (v);
  while (n) put(o, tmp[--n]);
}

static unsigned long vformat(char* buf, unsigned long size, const char* fmt, va_list ap) {
  struct out o = {buf, size, 0};
  for (; *fmt; fmt++) {
    if (*fmt != '%') {
      put(&o, *fmt);
      continue;
    }
    fmt++;
    int lng = 0;
    while (*fmt == 'l') lng++, fmt++;
    switch (*fmt) {
      case 's': {
        const char* s = va_arg(ap, const char*);
        if (!s) s = "(null)";
        while (*s) put(&o, *s++);
        break;
      }
      case 'c':
        put(&o, (char)va_arg(ap, int));
        break;
      case 'd': {
        s64 v = lng ? va_arg(ap, s64) : va_arg(ap, int);
        if (v < 0) {
          put(&o, '-');
          put_u64(&o, (u64)(-(v + 1)) + 1, 10);
        } else {
          put_u64(&o, (u64)v, 10);
        }
        break;
      }
      case 'u':
        put_u64(&o, lng ? va_arg(ap, u64) : va_arg(ap, u32), 10);
        break;
      case 'x':
        put_u64(&o, lng ? va_arg(ap, u64) : va_arg(ap, u32), 16);
        break;
      case '%':
        put(&o, '%');
        break;
      default:
        put(&o, '?');
        if (!*fmt) fmt--;
        break;
    }
  }
  if (size) buf[o.len < size ? o.len : size - 1] = 0;
  return o.len < size ? o.len : (size ? size - 1 : 0);
}

unsigned long ksnprintf(char* buf, unsigned long size, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  unsigned long n = vformat(buf, size, fmt, ap);
  va_end(ap);
  return n;
}

void kprintf(const char* fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  unsigned long n = vformat(buf, sizeof buf, fmt, ap);
  va_end(ap);
  serial_write(buf, n);
}

void fatal(const char* fmt, ...) {
  char buf[400];
  va_list ap;
  va_start(ap, fmt);
  vformat(buf, sizeof buf, fmt, ap);
  va_end(ap);
  kprintf("testos: error %s\n", buf);
  die();
}
