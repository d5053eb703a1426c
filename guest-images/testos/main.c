// testos ring 3: command line, platform reading, ready line, job dispatch.
#include "testos.h"

static char cmd[CMDLINE_MAX];

static NORETURN void bad_value(const char* key, const char* val) {
  fatal("bad value %s=%s", key, val);
}

static void num(const char* key, const char* val, u64* out) {
  if (parse_u64(val, out) != 0) bad_value(key, val);
}

static void parse_cmdline(const char* src, struct job_args* a) {
  memcpy(cmd, src, CMDLINE_MAX);
  cmd[CMDLINE_MAX - 1] = 0;
  a->interval_ms = 100;
  a->mib = 64;
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
      num(k, v, &a->interval_ms);
    else if (streq(k, "count"))
      num(k, v, &a->count);
    else if (streq(k, "mib"))
      num(k, v, &a->mib);
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
    else
      fatal("unknown command line key %s", k);
  }
  if (!a->job) fatal("no job= on the command line");
  if (streq(a->job, "heartbeat")) {
    if (a->interval_ms == 0) bad_value("interval_ms", "0");
  } else if (streq(a->job, "dirtier")) {
    if (a->mib == 0) bad_value("mib", "0");
    if (a->have_passes && a->passes == 0) bad_value("passes", "0");
    if (a->have_seconds && a->seconds == 0) bad_value("seconds", "0");
  } else if (streq(a->job, "fault")) {
    if (!a->kind) fatal("fault needs kind=ud|gp|pf|de|triple");
    if (!streq(a->kind, "ud") && !streq(a->kind, "gp") && !streq(a->kind, "pf") &&
        !streq(a->kind, "de") && !streq(a->kind, "triple"))
      fatal("unknown fault kind %s", a->kind);
  } else if (!streq(a->job, "platform") && !streq(a->job, "reboot")) {
    fatal("unknown job %s", a->job);
  }
}

void kmain(const struct bootinfo* bi) {
  static struct job_args args;
  binfo = bi;
  parse_cmdline(bi->cmdline, &args);
  platform_read(bi, args.tsc_khz);
  kprintf("testos: ready mem_mib=%llu cpus=%u tsc_khz=%llu boot=%s\n", plat.usable_bytes >> 20,
          plat.cpus, plat.tsc_khz, bi->boot_kind == BOOT_PVH ? "pvh" : "linux");
  if (streq(args.job, "platform")) job_platform();
  if (streq(args.job, "heartbeat")) job_heartbeat(&args);
  if (streq(args.job, "dirtier")) job_dirtier(&args);
  if (streq(args.job, "reboot")) job_reboot();
  job_fault(&args);
}
