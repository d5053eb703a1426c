// testos ring 3: command line, platform reading, ready line, job dispatch.
#include "testos.h"

static char cmd[CMDLINE_MAX];

static NORETURN void bad_value(const char* key, const char* val) {
  fatal("bad value %s=%s", key, val);
}

static void num(const char* key, const char* val, u64* out) {
  if (parse_u64(val, out) != 0) bad_value(key, val);
}

// a.b.c.d in network byte order as stored in memory (first octet lowest).
static u32 parse_ip(const char* key, const char* v, const char** rest) {
  u32 ip = 0;
  const char* p = v;
  for (u32 i = 0; i < 4; i++) {
    u32 x = 0, digits = 0;
    while (*p >= '0' && *p <= '9' && digits < 4) x = x * 10 + (u32)(*p++ - '0'), digits++;
    if (!digits || x > 255 || (i < 3 && *p++ != '.')) bad_value(key, v);
    ip |= x << (8 * i);
  }
  if (rest)
    *rest = p;
  else if (*p)
    bad_value(key, v);
  return ip;
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static void parse_mac(const char* key, const char* v, u8* mac) {
  const char* p = v;
  for (u32 i = 0; i < 6; i++) {
    int h = hexval(p[0]), l = h < 0 ? -1 : hexval(p[1]);
    if (h < 0 || l < 0 || (i < 5 && p[2] != ':')) bad_value(key, v);
    mac[i] = (u8)(h << 4 | l);
    p += i < 5 ? 3 : 2;
  }
  if (*p) bad_value(key, v);
}

static void parse_cmdline(const char* src, struct job_args* a) {
  memcpy(cmd, src, CMDLINE_MAX);
  cmd[CMDLINE_MAX - 1] = 0;
  a->interval_ms = 100;
  a->mib = 64;
  a->power_button = 1;
  char* p = cmd;
  while (*p) {
    while (*p == ' ' || *p == '\t' || *p == '\n') *p++ = 0;
    if (!*p) break;
    char* tok = p;
    while (*p && *p != ' ' && *p != '\t' && *p != '\n') p++;
    if (*p) *p++ = 0;
    char* eq = tok;
    while (*eq && *eq != '=') eq++;
    if (!*eq) fatal("bad command line word %s (expected key=value)", tok);
    *eq = 0;
    const char* k = tok;
    const char* v = eq + 1;
    if (streq(k, "job"))
      a->job = v;
    else if (streq(k, "tsc_khz"))
      num(k, v, &a->tsc_khz);
    else if (streq(k, "interval_ms"))
      num(k, v, &a->interval_ms), a->have_interval = 1;
    else if (streq(k, "count"))
      num(k, v, &a->count), a->have_count = 1;
    else if (streq(k, "mib"))
      num(k, v, &a->mib), a->have_mib = 1;
    else if (streq(k, "rate_mbps"))
      num(k, v, &a->rate_mbps);
    else if (streq(k, "seconds"))
      num(k, v, &a->seconds), a->have_seconds = 1;
    else if (streq(k, "start_mib"))
      num(k, v, &a->start_mib);
    else if (streq(k, "passes"))
      num(k, v, &a->passes), a->have_passes = 1;
    else if (streq(k, "kind"))
      a->kind = v;
    else if (streq(k, "mode"))
      a->mode = v;
    else if (streq(k, "seed"))
      num(k, v, &a->seed);
    else if (streq(k, "ops"))
      num(k, v, &a->ops), a->have_ops = 1;
    else if (streq(k, "bytes"))
      num(k, v, &a->bytes);
    else if (streq(k, "size"))
      num(k, v, &a->size);
    else if (streq(k, "port"))
      num(k, v, &a->port);
    else if (streq(k, "ip"))
      a->ip = parse_ip(k, v, 0);
    else if (streq(k, "mac"))
      parse_mac(k, v, a->mac), a->have_mac = 1;
    else if (streq(k, "dst")) {
      const char* rest;
      a->dst_ip = parse_ip(k, v, &rest);
      u64 port;
      if (*rest != ':' || parse_u64(rest + 1, &port) != 0 || port == 0 || port > 65535) bad_value(k, v);
      a->dst_port = (u16)port;
      a->have_dst = 1;
    } else if (streq(k, "devs")) {
      a->devs = v;
    } else if (streq(k, "lenient")) {
      u64 x;
      num(k, v, &x);
      if (x > 1) bad_value(k, v);
      a->lenient = (u32)x;
    } else if (streq(k, "power_button")) {
      u64 x;
      num(k, v, &x);
      if (x > 1) bad_value(k, v);
      a->power_button = (u32)x;
    } else if (streq(k, "listen")) {
      u64 x;
      num(k, v, &x);
      if (x > 1) bad_value(k, v);
      a->listen = (u32)x;
    } else if (streq(k, "linger")) {
      u64 x;
      num(k, v, &x);
      if (x > 1) bad_value(k, v);
      a->linger = (u32)x;
    }
    else
      fatal("unknown command line key %s", k);
  }
  if (!a->job) fatal("no job= on the command line");
  if (streq(a->job, "heartbeat")) {
    if (a->interval_ms == 0) bad_value("interval_ms", "0");
    if (a->have_mib && a->mib == 0) bad_value("mib", "0");
  } else if (streq(a->job, "dirtier")) {
    if (a->mib == 0) bad_value("mib", "0");
    if (a->have_interval && a->interval_ms == 0) bad_value("interval_ms", "0");
    if (a->have_passes && a->passes == 0) bad_value("passes", "0");
    if (a->have_seconds && a->seconds == 0) bad_value("seconds", "0");
  } else if (streq(a->job, "fault")) {
    if (!a->kind) fatal("fault needs kind=ud|gp|pf|de|triple");
    if (!streq(a->kind, "ud") && !streq(a->kind, "gp") && !streq(a->kind, "pf") &&
        !streq(a->kind, "de") && !streq(a->kind, "triple"))
      fatal("unknown fault kind %s", a->kind);
  } else if (streq(a->job, "disk")) {
    if (a->mode && !streq(a->mode, "write") && !streq(a->mode, "verify") && !streq(a->mode, "random") &&
        !streq(a->mode, "hold"))
      fatal("unknown disk mode %s", a->mode);
  } else if (streq(a->job, "diskbench")) {
    if (a->have_seconds && a->seconds == 0) bad_value("seconds", "0");
    if (a->have_mib && a->mib == 0) bad_value("mib", "0");
  } else if (streq(a->job, "rng")) {
    if (a->bytes == 0) a->bytes = 4096;
  } else if (streq(a->job, "net")) {
    if (!a->ip) fatal("net needs ip=A.B.C.D");
    if (a->mode && !streq(a->mode, "echo") && !streq(a->mode, "send")) fatal("unknown net mode %s", a->mode);
    if (a->mode && streq(a->mode, "send") && !a->have_dst) fatal("net mode=send needs dst=A.B.C.D:PORT");
    if (a->port > 65535) bad_value("port", "(over 65535)");
    if (a->size > 1472) bad_value("size", "(over 1472)");
  } else if (streq(a->job, "malformed")) {
  } else if (streq(a->job, "resetstorm")) {
    if (a->have_mib && (a->mib == 0 || a->mib > 256)) bad_value("mib", "(1-256)");
  } else if (!streq(a->job, "platform") && !streq(a->job, "reboot") && !streq(a->job, "escape")) {
    fatal("unknown job %s", a->job);
  }
}

void kmain(const struct bootinfo* bi) {
  static struct job_args args;
  binfo = bi;
  parse_cmdline(bi->cmdline, &args);
  platform_read(bi, args.tsc_khz);
  plat.power_button = args.power_button;
  power_button_enable();
  kprintf("testos: ready mem_mib=%llu cpus=%u tsc_khz=%llu boot=%s\n", plat.usable_bytes >> 20,
          plat.cpus, plat.tsc_khz, bi->boot_kind == BOOT_PVH ? "pvh" : "linux");
  if (streq(args.job, "platform")) job_platform();
  if (streq(args.job, "heartbeat")) job_heartbeat(&args);
  if (streq(args.job, "dirtier")) job_dirtier(&args);
  if (streq(args.job, "reboot")) job_reboot();
  if (streq(args.job, "disk")) job_disk(&args);
  if (streq(args.job, "diskbench")) job_diskbench(&args);
  if (streq(args.job, "rng")) job_rng(&args);
  if (streq(args.job, "net")) job_net(&args);
  if (streq(args.job, "malformed")) job_malformed(&args);
  if (streq(args.job, "resetstorm")) job_resetstorm(&args);
  if (streq(args.job, "escape")) job_escape();
  job_fault(&args);
}
