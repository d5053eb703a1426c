// testos: the few libc pieces the compiler and the code need.
#include "testos.h"

void* memset(void* d, int c, unsigned long n) {
  u8* p = d;
  while (n--) *p++ = (u8)c;
  return d;
}

void* memcpy(void* d, const void* s, unsigned long n) {
  u8* a = d;
  const u8* b = s;
  while (n--) *a++ = *b++;
  return d;
}

void* memmove(void* d, const void* s, unsigned long n) {
  u8* a = d;
  const u8* b = s;
  if (a < b) {
    while (n--) *a++ = *b++;
  } else {
    while (n--) a[n] = b[n];
  }
  return d;
}

int memcmp(const void* x, const void* y, unsigned long n) {
  const u8* a = x;
  const u8* b = y;
  for (unsigned long i = 0; i < n; i++)
    if (a[i] != b[i]) return a[i] < b[i] ? -1 : 1;
  return 0;
}

unsigned long strlen(const char* s) {
  unsigned long n = 0;
  while (s[n]) n++;
  return n;
}

int streq(const char* a, const char* b) {
  while (*a && *a == *b) a++, b++;
  return *a == *b;
}

int parse_u64(const char* s, u64* out) {
  u64 v = 0;
  u32 base = 10;
  if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
    base = 16;
    s += 2;
  }
  if (!*s) return -1;
  for (; *s; s++) {
    u32 d;
    if (*s >= '0' && *s <= '9')
      d = *s - '0';
    else if (base == 16 && *s >= 'a' && *s <= 'f')
      d = *s - 'a' + 10;
    else if (base == 16 && *s >= 'A' && *s <= 'F')
      d = *s - 'A' + 10;
    else
      return -1;
    if (v > (~0ULL - d) / base) return -1;  // overflow
    v = v * base + d;
  }
  *out = v;
  return 0;
}
