/* Shared helpers of the Linux guest image's test programs (static, no deps).
 * Every line a program prints starts with "keel-guest: " and is flushed at
 * once. Exit codes: 0 success, 1 verification failed (a BAD line was printed),
 * 2 usage or system error (a "keel-guest: error ..." line was printed). */
#ifndef KEEL_GUEST_H
#define KEEL_GUEST_H

#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define KG_EXIT_OK 0
#define KG_EXIT_BAD 1
#define KG_EXIT_ERROR 2

/* Print one "keel-guest: ..." line and flush it; exit 2 if stdout is gone. */
__attribute__((format(printf, 1, 2))) static inline void kg_line(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("keel-guest: ", stdout);
  vfprintf(stdout, fmt, ap);
  fputc('\n', stdout);
  va_end(ap);
  if (fflush(stdout) != 0 || ferror(stdout)) exit(KG_EXIT_ERROR);
}

/* "keel-guest: error <prog>: <text>", then exit 2. */
__attribute__((format(printf, 2, 3), noreturn)) static inline void kg_fail(const char* prog,
                                                                           const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  printf("keel-guest: error %s: ", prog);
  vprintf(fmt, ap);
  putchar('\n');
  va_end(ap);
  fflush(stdout);
  exit(KG_EXIT_ERROR);
}

/* Strict decimal (or 0x hex) unsigned parse: the whole string, no sign. */
static inline bool kg_parse_u64(const char* s, uint64_t* out) {
  if (s == NULL || *s == '\0' || *s == '-' || *s == '+' || *s == ' ') return false;
  int base = 10;
  if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
    base = 16;
    s += 2;
    if (*s == '\0') return false;
  }
  char* end = NULL;
  errno = 0;
  unsigned long long v = strtoull(s, &end, base);
  if (errno != 0 || end == NULL || *end != '\0') return false;
  *out = (uint64_t)v;
  return true;
}

static inline uint64_t kg_ts_ns(const struct timespec* ts) {
  return (uint64_t)ts->tv_sec * 1000000000ull + (uint64_t)ts->tv_nsec;
}

static inline struct timespec kg_ns_ts(uint64_t ns) {
  struct timespec ts = {.tv_sec = (time_t)(ns / 1000000000ull),
                        .tv_nsec = (long)(ns % 1000000000ull)};
  return ts;
}

static inline uint64_t kg_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return kg_ts_ns(&ts);
}

/* Sleep until CLOCK_MONOTONIC reaches ns (absolute), through signals. */
static inline void kg_sleep_until(uint64_t ns) {
  struct timespec ts = kg_ns_ts(ns);
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
    ;
}

/* Paces writes to rate_mbps MiB/s from start_ns (absolute sleeps, no
 * drift); rate_mbps 0: no pacing. */
struct kg_pace {
  uint64_t rate_mbps, start_ns, bytes;
};

/* Before a write of n bytes: wait until start + bytes so far / rate. */
static inline void kg_pace_write(struct kg_pace* p, uint64_t n) {
  if (p->rate_mbps) {
    /* 128 bits: bytes * 1e9 overflows 64 bits past 16 GiB. */
    unsigned __int128 ns =
        (unsigned __int128)p->bytes * 1000000000u / ((unsigned __int128)p->rate_mbps * 1048576u);
    kg_sleep_until(p->start_ns + (uint64_t)ns);
  }
  p->bytes += n;
}

/* splitmix64: the pattern generator of the dirtier and the disk checker. */
static inline uint64_t kg_mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

#endif
