// testos job `net`: a static IPv4 host on the first virtio-net device.
// mode=echo answers ARP, ICMP echo and echoes UDP datagrams sent to `port`
// (with interval_ms= it also prints heartbeat lines, as job=heartbeat does:
// keel-migbench watches a migration through both);
// mode=send also sends `mib` MiB of UDP to dst and reports the rate.
#include "net.h"

static struct net net;
static u16 echo_port;
static u64 udp_echoed, udp_echo_dropped;

static void echo_udp(struct net* n, const u8* src_mac, u32 src_ip, u16 src_port, u16 dst_port, const u8* data,
                     u32 len) {
  if (dst_port != echo_port) return;
  if (net_send_udp(n, src_mac, src_ip, dst_port, src_port, data, len) == 0)
    udp_echoed++;
  else
    udp_echo_dropped++;
}

static void check_device(void) {
  if (virtio_broken_poll(&net.dev)) {
    kprintf("testos: net FAIL device set DEVICE_NEEDS_RESET\n");
    poweroff();
  }
}

static void echo_mode(const struct job_args* a) {
  u64 t0 = rdtsc(), limit = a->have_seconds ? us_to_tsc(a->seconds * 1000000) : 0;
  u64 want = a->have_count ? a->count : 0;
  u64 button_every = us_to_tsc(10000), button_next = t0;
  u64 beat_every = a->have_interval ? us_to_tsc(a->interval_ms * 1000) : 0, beat_due = t0, beat = 0;
  for (u32 spin = 0;; spin++) {
    if (!net_poll(&net, echo_udp)) cpu_relax();
    net_tx_reclaim(&net);
    if (want && udp_echoed >= want) break;
    if (beat_every && (s64)(rdtsc() - beat_due) >= 0) {
      kprintf("testos: beat seq=%llu t_us=%llu\n", ++beat, now_us());
      // Late (paused, slow output): the schedule starts again from now.
      u64 now = rdtsc();
      beat_due += beat_every;
      if ((s64)(now - beat_due) > 0) beat_due = now + beat_every;
    }
    if ((spin & 1023) == 0) {
      u64 now = rdtsc();
      if (limit && now - t0 > limit) break;
      check_device();
      if ((s64)(now - button_next) >= 0) {
        power_button_poll();
        button_next = now + button_every;
      }
    }
  }
  // Let the last answers leave before powering off.
  u64 t1 = rdtsc();
  while (net_tx_reclaim(&net) && rdtsc() - t1 < us_to_tsc(1000000)) cpu_relax();
  kprintf("testos: net echo OK udp=%llu udp_dropped=%llu icmp=%llu arp=%llu rx=%llu tx=%llu\n", udp_echoed,
          udp_echo_dropped, net.icmp_replies, net.arp_replies, net.rx_frames, net.tx_frames);
}

static void send_mode(const struct job_args* a) {
  char ipb[16];
  u8 dst_mac[6];
  if (net_arp_resolve(&net, a->dst_ip, dst_mac, 10000000, echo_udp) != 0) {
    kprintf("testos: net FAIL no ARP answer from %s in 10 s\n", ip_str(a->dst_ip, ipb));
    poweroff();
  }
  char macb[18];
  kprintf("testos: net arp %s is %s\n", ip_str(a->dst_ip, ipb), mac_str(dst_mac, macb));
  u32 size = a->size ? (u32)a->size : 1472;
  if (size < 8) size = 8;
  u64 total = (a->have_mib ? a->mib : 64) << 20;
  static u8 payload[1472];
  for (u32 i = 0; i < sizeof payload; i++) payload[i] = (u8)(i * 7 + 1);
  u64 sent = 0, datagrams = 0, full = 0;
  u64 t0 = rdtsc();
  while (sent < total) {
    u32 len = total - sent < size ? (u32)(total - sent) : size;
    if (len < 8) len = 8;
    memcpy(payload, &datagrams, 8);  // sequence number, little-endian
    if (net_send_udp(&net, dst_mac, a->dst_ip, echo_port, a->dst_port, payload, len) != 0) {
      full++;
      if (!net_poll(&net, echo_udp)) cpu_relax();
      if ((full & 1023) == 0) check_device();
      continue;
    }
    sent += len;
    datagrams++;
    if ((datagrams & 63) == 0) net_poll(&net, echo_udp);
  }
  u64 w0 = rdtsc();
  while (net_tx_reclaim(&net)) {
    if (rdtsc() - w0 > us_to_tsc(10000000)) {
      kprintf("testos: net FAIL transmissions not completed 10 s after the last\n");
      poweroff();
    }
    check_device();
    cpu_relax();
  }
  u64 us = (rdtsc() - t0) * 1000 / plat.tsc_khz;
  if (us == 0) us = 1;
  u64 centi = sent * 1000000 / us * 100 / (1 << 20);
  kprintf("testos: net send OK bytes=%llu datagrams=%llu size=%u us=%llu mib_s=%llu.%llu%llu\n", sent, datagrams,
          size, us, centi / 100, centi / 10 % 10, centi % 10);
}

void job_net(const struct job_args* a) {
  const char* why = "";
  if (net_open(&net, a->have_mac ? a->mac : 0, a->ip, &why) != 0) fatal("net: %s", why);
  echo_port = a->port ? (u16)a->port : 7;
  char ipb[16];
  char macb[18];
  kprintf("testos: net ready ip=%s mac=%s port=%u features=0x%llx\n", ip_str(net.ip, ipb), mac_str(net.mac, macb),
          echo_port, net.dev.features);
  if (a->mode && streq(a->mode, "send"))
    send_mode(a);
  else
    echo_mode(a);
  poweroff();
}
