// testos: virtio-net driver (virtio 1.x, 5.1) and a minimal IPv4 host on
// top of it: ARP (answers and resolves), ICMP echo replies, UDP. No TCP.
// Polled from ring 3. IPv4 addresses are u32s holding the four octets in
// memory order (a.b.c.d: a in the lowest byte), i.e. as on the wire.
#pragma once

#include "virtio.h"

#define NET_BUF 2048
#define NET_HDR 12  // struct virtio_net_hdr_v1 (VERSION_1: num_buffers included)
#define NET_QUEUE 256

struct net {
  struct virtio_dev dev;
  struct virtq rx, tx;
  u8 mac[6];
  u32 ip;
  u8* rxbufs;
  u8* txbufs;
  u16 tx_free[NET_QUEUE];
  u32 tx_nfree;
  // Counters.
  u64 rx_frames, tx_frames, arp_replies, icmp_replies, rx_dropped;
  // A tiny ARP cache: the last resolved address.
  u32 arp_ip;
  u8 arp_mac[6];
  u32 arp_valid;
};

// Finds, initialises and starts the first virtio-net device. `mac`: the
// address to use, or 0 for the device's (VIRTIO_NET_F_MAC) or a default.
int net_open(struct net* n, const u8* mac, u32 ip, const char** why);

// A free transmit frame buffer (room for NET_BUF - NET_HDR bytes), or 0
// when all are in flight (completed ones are reclaimed first).
u8* net_tx_frame(struct net* n);
// Queues that frame (len bytes from its start) and notifies the device.
void net_tx_send(struct net* n, u8* frame, u32 len);
// Reclaims completed transmissions; returns how many are still in flight.
u32 net_tx_reclaim(struct net* n);

// The UDP payload handler: called for each datagram to our IP.
typedef void (*udp_handler)(struct net* n, const u8* src_mac, u32 src_ip, u16 src_port,
                            u16 dst_port, const u8* data, u32 len);
// Polls the receive queue once: handles ARP and ICMP echo itself, hands UDP
// to `h`. Returns the number of frames processed.
u32 net_poll(struct net* n, udp_handler h);

// Builds and sends one UDP datagram. Returns 0, or -1 if no transmit
// buffer is free.
int net_send_udp(struct net* n, const u8* dst_mac, u32 dst_ip, u16 src_port, u16 dst_port,
                 const u8* data, u32 len);
// Resolves `ip` by ARP (a request every 200 ms) while handling other
// traffic with `h`; returns 0 with the MAC, or -1 after timeout_us.
int net_arp_resolve(struct net* n, u32 ip, u8* mac, u64 timeout_us, udp_handler h);

// "a.b.c.d" into buf (at least 16 bytes); "xx:xx:xx:xx:xx:xx" (18 bytes).
const char* ip_str(u32 ip, char* buf);
const char* mac_str(const u8* mac, char* buf);
