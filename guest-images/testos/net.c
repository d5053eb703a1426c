// testos: virtio-net driver (virtio 1.x, 5.1) and a minimal IPv4 host.
#include "net.h"

#define VIRTIO_NET_F_MAC (1ULL << 5)

#define ETH_ARP 0x0806
#define ETH_IP 0x0800

static u16 be16(const u8* p) { return (u16)(p[0] << 8 | p[1]); }
static void put16(u8* p, u16 v) {
  p[0] = (u8)(v >> 8);
  p[1] = (u8)v;
}

const char* ip_str(u32 ip, char* buf) {
  ksnprintf(buf, 16, "%u.%u.%u.%u", ip & 255, (ip >> 8) & 255, (ip >> 16) & 255, ip >> 24);
  return buf;
}

const char* mac_str(const u8* m, char* buf) {
  static const char hex[] = "0123456789abcdef";
  for (u32 i = 0; i < 6; i++) {
    buf[3 * i] = hex[m[i] >> 4];
    buf[3 * i + 1] = hex[m[i] & 15];
    buf[3 * i + 2] = i < 5 ? ':' : 0;
  }
  return buf;
}

static u32 csum_add(u32 sum, const u8* p, u32 len) {
  for (u32 i = 0; i + 1 < len; i += 2) sum += (u32)(p[i] << 8 | p[i + 1]);
  if (len & 1) sum += (u32)p[len - 1] << 8;
  return sum;
}

static u16 csum_fold(u32 sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return (u16)~sum;
}

static void rx_post(struct net* n, u16 i) {
  struct vbuf v = {(u64)(uptr)(n->rxbufs + (u64)i * NET_BUF), NET_BUF, 1};
  virtq_add(&n->rx, &v, 1, i, 0);
}

int net_open(struct net* n, const u8* mac, u32 ip, const char** why) {
  memset(n, 0, sizeof *n);
  if (!virtio_find(&n->dev, VIRTIO_ID_NET, 0)) {
    *why = "no virtio-net device";
    return -1;
  }
  if (virtio_init(&n->dev, VIRTIO_NET_F_MAC | VIRTIO_F_EVENT_IDX, why) != 0) return -1;
  if (virtq_setup(&n->dev, &n->rx, 0, NET_QUEUE) != 0 || virtq_setup(&n->dev, &n->tx, 1, NET_QUEUE) != 0) {
    *why = "virtio-net lacks queue 0 or 1";
    return -1;
  }
  static const u8 fallback[6] = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
  if (mac)
    memcpy(n->mac, mac, 6);
  else if (n->dev.features & VIRTIO_NET_F_MAC)
    for (u32 i = 0; i < 6; i++) n->mac[i] = (u8)virtio_cfg_read(&n->dev, i, 1);
  else
    memcpy(n->mac, fallback, 6);
  n->ip = ip;
  n->rxbufs = dma_alloc((u64)n->rx.size * NET_BUF, 4096);
  n->txbufs = dma_alloc((u64)n->tx.size * NET_BUF, 4096);
  for (u16 i = 0; i < n->tx.size; i++) n->tx_free[n->tx_nfree++] = (u16)(n->tx.size - 1 - i);
  for (u16 i = 0; i < n->rx.size; i++) rx_post(n, i);
  virtio_driver_ok(&n->dev);
  virtq_kick(&n->rx);
  if (virtio_broken(&n->dev)) {
    *why = "virtio-net set DEVICE_NEEDS_RESET at DRIVER_OK";
    return -1;
  }
  return 0;
}

u32 net_tx_reclaim(struct net* n) {
  u64 cookie;
  while (virtq_get(&n->tx, &cookie, 0)) n->tx_free[n->tx_nfree++] = (u16)cookie;
  return n->tx.size - n->tx_nfree;
}

u8* net_tx_frame(struct net* n) {
  if (!n->tx_nfree) net_tx_reclaim(n);
  if (!n->tx_nfree) return 0;
  u16 i = n->tx_free[n->tx_nfree - 1];
  return n->txbufs + (u64)i * NET_BUF + NET_HDR;
}

void net_tx_send(struct net* n, u8* frame, u32 len) {
  u8* buf = frame - NET_HDR;
  u16 i = (u16)((buf - n->txbufs) / NET_BUF);
  if (n->tx_nfree == 0 || n->tx_free[n->tx_nfree - 1] != i) fatal("net_tx_send of a frame not from net_tx_frame");
  n->tx_nfree--;
  memset(buf, 0, NET_HDR);  // no offloads
  if (len < 60) {  // Ethernet minimum frame (without FCS)
    memset(frame + len, 0, 60 - len);
    len = 60;
  }
  struct vbuf v = {(u64)(uptr)buf, NET_HDR + len, 0};
  virtq_add(&n->tx, &v, 1, i, 0);
  virtq_kick(&n->tx);
  n->tx_frames++;
}

static u8* eth_start(u8* f, const u8* dst, const u8* src, u16 type) {
  memcpy(f, dst, 6);
  memcpy(f + 6, src, 6);
  put16(f + 12, type);
  return f + 14;
}

static void arp_send(struct net* n, u16 oper, const u8* tha, u32 tpa) {
  static const u8 bcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  u8* f = net_tx_frame(n);
  if (!f) return;
  u8* a = eth_start(f, oper == 1 ? bcast : tha, n->mac, ETH_ARP);
  put16(a, 1);
  put16(a + 2, ETH_IP);
  a[4] = 6;
  a[5] = 4;
  put16(a + 6, oper);
  memcpy(a + 8, n->mac, 6);
  memcpy(a + 14, &n->ip, 4);
  if (oper == 1)
    memset(a + 18, 0, 6);
  else
    memcpy(a + 18, tha, 6);
  memcpy(a + 24, &tpa, 4);
  net_tx_send(n, f, 14 + 28);
}

static void handle_arp(struct net* n, const u8* a, u32 len) {
  if (len < 28 || be16(a) != 1 || be16(a + 2) != ETH_IP || a[4] != 6 || a[5] != 4) return;
  u16 oper = be16(a + 6);
  u32 spa, tpa;
  memcpy(&spa, a + 14, 4);
  memcpy(&tpa, a + 24, 4);
  if (oper == 2 || (oper == 1 && tpa == n->ip)) {  // learn the sender
    n->arp_ip = spa;
    memcpy(n->arp_mac, a + 8, 6);
    n->arp_valid = 1;
  }
  if (oper == 1 && tpa == n->ip) {
    arp_send(n, 2, a + 8, spa);
    n->arp_replies++;
  }
}

// IPv4 header (20 bytes, no options) for `payload` bytes of `proto`.
static u8* ip_start(struct net* n, u8* p, u32 dst, u8 proto, u32 payload) {
  static u16 ident;
  p[0] = 0x45;
  p[1] = 0;
  put16(p + 2, (u16)(20 + payload));
  put16(p + 4, ident++);
  put16(p + 6, 0x4000);  // DF
  p[8] = 64;
  p[9] = proto;
  put16(p + 10, 0);
  memcpy(p + 12, &n->ip, 4);
  memcpy(p + 16, &dst, 4);
  put16(p + 10, csum_fold(csum_add(0, p, 20)));
  return p + 20;
}

static void handle_icmp(struct net* n, const u8* eth, const u8* ip, const u8* icmp, u32 len) {
  if (len < 8 || icmp[0] != 8 || icmp[1] != 0) return;  // echo request
  if (csum_fold(csum_add(0, icmp, len)) != 0) return;
  if (len > NET_BUF - NET_HDR - 34) return;
  u8* f = net_tx_frame(n);
  if (!f) return;
  u32 src;
  memcpy(&src, ip + 12, 4);
  u8* p = eth_start(f, eth + 6, n->mac, ETH_IP);
  u8* r = ip_start(n, p, src, 1, len);
  memcpy(r, icmp, len);
  r[0] = 0;  // echo reply
  put16(r + 2, 0);
  put16(r + 2, csum_fold(csum_add(0, r, len)));
  net_tx_send(n, f, 34 + len);
  n->icmp_replies++;
}

static u16 udp_csum(u32 src, u32 dst, const u8* udp, u32 len) {
  u8 pseudo[12];
  memcpy(pseudo, &src, 4);
  memcpy(pseudo + 4, &dst, 4);
  pseudo[8] = 0;
  pseudo[9] = 17;
  put16(pseudo + 10, (u16)len);
  u16 c = csum_fold(csum_add(csum_add(0, pseudo, 12), udp, len));
  return c ? c : 0xffff;
}

int net_send_udp(struct net* n, const u8* dst_mac, u32 dst_ip, u16 sport, u16 dport, const u8* data, u32 len) {
  if (len > 1472) fatal("net_send_udp: %u bytes do not fit one frame", len);
  u8* f = net_tx_frame(n);
  if (!f) return -1;
  u8* p = eth_start(f, dst_mac, n->mac, ETH_IP);
  u8* u = ip_start(n, p, dst_ip, 17, 8 + len);
  put16(u, sport);
  put16(u + 2, dport);
  put16(u + 4, (u16)(8 + len));
  put16(u + 6, 0);
  memcpy(u + 8, data, len);
  put16(u + 6, udp_csum(n->ip, dst_ip, u, 8 + len));
  net_tx_send(n, f, 42 + len);
  return 0;
}

static void handle_ip(struct net* n, const u8* eth, const u8* ip, u32 len, udp_handler h) {
  if (len < 20 || (ip[0] >> 4) != 4) return;
  u32 ihl = (ip[0] & 15) * 4u, tot = be16(ip + 2);
  if (ihl < 20 || tot < ihl || tot > len) return;
  if (csum_fold(csum_add(0, ip, ihl)) != 0) return;
  if (be16(ip + 6) & 0x3fff) return;  // fragments: not handled
  u32 dst, src;
  memcpy(&dst, ip + 16, 4);
  memcpy(&src, ip + 12, 4);
  if (dst != n->ip) return;
  const u8* l4 = ip + ihl;
  u32 l4len = tot - ihl;
  if (ip[9] == 1) {
    handle_icmp(n, eth, ip, l4, l4len);
  } else if (ip[9] == 17 && l4len >= 8 && h) {
    u32 ulen = be16(l4 + 4);
    if (ulen < 8 || ulen > l4len) return;
    if (be16(l4 + 6) && csum_fold(csum_add(csum_add(0, (const u8*)&src, 4) + csum_add(0, (const u8*)&dst, 4) + 17 + ulen, l4, ulen)) != 0)
      return;
    h(n, eth + 6, src, be16(l4), be16(l4 + 2), l4 + 8, ulen - 8);
  }
}

u32 net_poll(struct net* n, udp_handler h) {
  u32 done = 0;
  u64 cookie;
  u32 len;
  while (done < 64 && virtq_get(&n->rx, &cookie, &len)) {
    u8* buf = n->rxbufs + cookie * NET_BUF;
    n->rx_frames++;
    if (len >= NET_HDR + 14 && len <= NET_BUF) {
      const u8* eth = buf + NET_HDR;
      u32 flen = len - NET_HDR;
      u16 type = be16(eth + 12);
      int to_us = (eth[0] & 1) || memcmp(eth, n->mac, 6) == 0;
      if (!to_us)
        n->rx_dropped++;
      else if (type == ETH_ARP)
        handle_arp(n, eth + 14, flen - 14);
      else if (type == ETH_IP)
        handle_ip(n, eth, eth + 14, flen - 14, h);
    } else {
      n->rx_dropped++;
    }
    rx_post(n, (u16)cookie);
    done++;
  }
  if (done) virtq_kick(&n->rx);
  return done;
}

int net_arp_resolve(struct net* n, u32 ip, u8* mac, u64 timeout_us, udp_handler h) {
  u64 t0 = rdtsc(), limit = us_to_tsc(timeout_us), every = us_to_tsc(200000), last = 0;
  n->arp_valid = 0;
  for (;;) {
    u64 now = rdtsc();
    if (now - t0 > limit) return -1;
    if (last == 0 || now - last > every) {
      arp_send(n, 1, 0, ip);
      last = now;
    }
    net_poll(n, h);
    net_tx_reclaim(n);
    if (n->arp_valid && n->arp_ip == ip) {
      memcpy(mac, n->arp_mac, 6);
      return 0;
    }
    if (virtio_broken_poll(&n->dev)) fatal("net: the device set DEVICE_NEEDS_RESET");
    cpu_relax();
  }
}
