// virtio-net on a real tap, inside a network namespace each test makes for
// itself (unshare in the test thread, undone by RAII): the namespace, the
// tap, the bridge and everything else vanish with it, also when a test fails.
// Needs root (CAP_NET_ADMIN), as the unit tests run.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <chrono>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "common/child_process.h"
#include "common/error.h"
#include "devices/virtio/net/virtio_net_device.h"
#include "proto/device_state.pb.h"
#include "tests/support/device_configs.h"
#include "tests/support/fake_virtio_transport.h"
#include "tests/support/frame_capture.h"
#include "tests/support/virtqueue_driver.h"

namespace keel::virtio {
namespace {

using testing::FakeTransport;
using testing::VirtqueueDriver;
using namespace std::chrono_literals;

constexpr uint64_t kMiB = 1 << 20;
constexpr const char* kTap = "ktap0";
constexpr MacAddress kGuestMac{0x02, 0x4b, 0x45, 0x45, 0x4c, 0x01};
constexpr const char* kGuestMacText = "02:4b:45:45:4c:01";
constexpr const char* kHostIp = "10.0.7.1";
constexpr const char* kGuestIp = "10.0.7.2";
constexpr uint16_t kQueueSize = 64;
constexpr uint16_t kExperimentalEtherType = 0x88b5;  // IEEE 802 local experimental

// The calling thread moves into a fresh network namespace and back out on
// destruction; the namespace dies with the last socket or tap in it.
class ScopedNetns {
 public:
  ScopedNetns() {
    int fd = ::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw_errno("open /proc/thread-self/ns/net");
    original_.reset(fd);
    if (::unshare(CLONE_NEWNET) < 0) throw_errno("unshare(CLONE_NEWNET)");
  }
  ~ScopedNetns() { ::setns(original_.get(), CLONE_NEWNET); }

 private:
  UniqueFd original_;
};

// Commands run in the namespace: children start in their parent thread's.
void run(const std::vector<std::string>& argv) {
  CommandResult r = run_command(argv, 10s);
  ASSERT_EQ(r.exit_code, 0) << argv[0] << " " << (argv.size() > 1 ? argv[1] : "") << ": " << r.err;
}

uint16_t ip_checksum(const uint8_t* data, size_t len) {
  uint32_t sum = 0;
  for (size_t i = 0; i + 1 < len; i += 2) sum += uint32_t{data[i]} << 8 | data[i + 1];
  if (len & 1) sum += uint32_t{data[len - 1]} << 8;
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(~sum);
}

void put16(std::vector<uint8_t>& v, size_t at, uint16_t x) {
  v[at] = static_cast<uint8_t>(x >> 8);
  v[at + 1] = static_cast<uint8_t>(x);
}

// Ethernet + IPv4 + UDP (checksum 0: none, allowed for IPv4).
std::vector<uint8_t> udp_frame(const MacAddress& dst, const MacAddress& src, const char* src_ip,
                               const char* dst_ip, uint16_t sport, uint16_t dport,
                               const std::string& payload) {
  std::vector<uint8_t> f(14 + 20 + 8 + payload.size());
  std::memcpy(&f[0], dst.data(), 6);
  std::memcpy(&f[6], src.data(), 6);
  put16(f, 12, ETHERTYPE_IP);
  uint8_t* ip = &f[14];
  ip[0] = 0x45;
  put16(f, 16, static_cast<uint16_t>(20 + 8 + payload.size()));
  ip[8] = 64;
  ip[9] = IPPROTO_UDP;
  inet_pton(AF_INET, src_ip, ip + 12);
  inet_pton(AF_INET, dst_ip, ip + 16);
  put16(f, 24, ip_checksum(ip, 20));
  put16(f, 34, sport);
  put16(f, 36, dport);
  put16(f, 38, static_cast<uint16_t>(8 + payload.size()));
  std::memcpy(&f[42], payload.data(), payload.size());
  return f;
}

UniqueFd udp_socket(const char* ip, uint16_t port) {
  UniqueFd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!s.valid()) throw_errno("socket");
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  inet_pton(AF_INET, ip, &a.sin_addr);
  if (::bind(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) < 0) throw_errno("bind");
  return s;
}

// Waits (poll, not sleep) for one datagram or frame on `fd`.
std::optional<std::vector<uint8_t>> receive(int fd, std::chrono::milliseconds timeout = 5s) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1) return std::nullopt;
  std::vector<uint8_t> buf(70000);
  ssize_t n = ::recv(fd, buf.data(), buf.size(), 0);
  if (n < 0) return std::nullopt;
  buf.resize(static_cast<size_t>(n));
  return buf;
}

MacAddress interface_mac(const char* name) {
  UniqueFd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
  if (::ioctl(s.get(), SIOCGIFHWADDR, &ifr) < 0) throw_errno("SIOCGIFHWADDR");
  MacAddress mac;
  std::memcpy(mac.data(), ifr.ifr_hwaddr.sa_data, 6);
  return mac;
}

struct VirtioNetTest : ::testing::Test {
  ScopedNetns netns;  // first: everything below lives in the namespace
  GuestMemory memory{{{0, 4 * kMiB, 0}}};
  VirtqueueDriver rx{memory, kQueueSize};
  VirtqueueDriver tx{memory, kQueueSize};
  FakeTransport transport;
  boost::asio::io_context events;
  std::optional<VirtioNetDevice> device;

  static constexpr uint64_t kRxBuffers = 0x100000;  // rx buffer i at kRxBuffers + i * 64 KiB
  static constexpr uint64_t kTxBuffers = 0x10000;   // tx buffer i at kTxBuffers + i * 2 KiB

  void SetUp() override {
    // The tx rings after the rx ones (which sit at 0x1000..0x2fff).
    tx.config().desc_table = 0x8000;
    tx.config().driver_area = 0x8400;
    tx.config().device_area = 0x9000;
    // Keep IPv6's own traffic (router solicitations, MLD) off the tap, where
    // it would take receive buffers; not fatal where IPv6 is absent.
    run_command({"sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"}, 10s);
    run({"ip", "link", "set", "lo", "up"});
    run({"ip", "tuntap", "add", "dev", kTap, "mode", "tap"});
    run({"ip", "addr", "add", std::string(kHostIp) + "/24", "dev", kTap});
    device.emplace(events, net_config(kTap, kGuestMac));
    device->attach(transport);
    // Up only now that the device holds the tap (carrier on): the link's
    // queue starts at once. Carrier coming on under an interface already up
    // starts it later, from the kernel's link watch, and frames sent before
    // then are dropped.
    run({"ip", "link", "set", kTap, "up"});
    run({"ip", "neigh", "add", kGuestIp, "lladdr", kGuestMacText, "dev", kTap, "nud", "permanent"});
  }

  void activate(uint64_t features = kFVersion1 | kNetFMac | kNetFStatus) {
    std::vector<std::optional<SplitQueue>> queues;
    queues.emplace_back(std::in_place, memory, rx.config());
    queues.emplace_back(std::in_place, memory, tx.config());
    std::lock_guard guard(transport.lock());
    device->activate(memory, std::move(queues), features);
  }
  void kick(uint16_t queue) {
    std::lock_guard guard(transport.lock());
    device->queue_notify(queue);
  }
  NetStats stats() {
    std::lock_guard guard(transport.lock());
    return device->stats();
  }

  // Guest side: a zeroed virtio_net_hdr and `frame`, as one buffer or as
  // two (header, frame), using descriptors from `desc` on.
  void post_tx(uint16_t desc, uint16_t slot, const std::vector<uint8_t>& frame, bool split) {
    const uint64_t gpa = kTxBuffers + slot * 0x800ull;
    std::vector<uint8_t> hdr(kNetHdrSize, 0);
    memory.write(gpa, hdr);
    memory.write(gpa + kNetHdrSize, frame);
    const auto len = static_cast<uint32_t>(frame.size());
    if (split) {
      tx.make_available(tx.write_chain(desc, {{gpa, kNetHdrSize}, {gpa + kNetHdrSize, len}}));
    } else {
      tx.make_available(tx.write_chain(desc, {{gpa, kNetHdrSize + len}}));
    }
  }
  // One receive buffer of `len` bytes (slot i of the rx buffer area).
  void post_rx(uint16_t desc, uint32_t len) {
    rx.make_available(rx.write_chain(desc, {{kRxBuffers + desc * 0x10000ull, len, true}}));
  }
  std::vector<uint8_t> rx_bytes(uint16_t desc, uint32_t len) {
    std::vector<uint8_t> out(len);
    memory.read(kRxBuffers + desc * 0x10000ull, out);
    return out;
  }

  // Runs the event loop until `done` holds; fails after 10 s without it.
  template <typename Pred>
  void run_until(Pred done) {
    events.restart();
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (!done()) {
      if (std::chrono::steady_clock::now() >= deadline) {
        auto st = stats();
        std::string used;
        for (uint16_t i = 0; i < rx.used_idx(); ++i) {
          used +=
              " " + std::to_string(rx.used_elem(i).id) + "/" + std::to_string(rx.used_elem(i).len);
        }
        FAIL() << "timed out waiting for the device: rx_frames " << st.rx_frames << " too_big "
               << st.rx_too_big << " starved " << st.rx_out_of_buffers << " tap_errors "
               << st.tap_errors << " used" << used;
      }
      if (events.run_one_for(1s) == 0) events.restart();
    }
  }

  // The used rx element whose buffer holds `payload`, if any.
  std::optional<VirtqUsedElem> find_rx(const std::string& payload) {
    for (uint16_t i = 0; i < rx.used_idx(); ++i) {
      VirtqUsedElem e = rx.used_elem(i);
      auto bytes = rx_bytes(static_cast<uint16_t>(e.id), e.len);
      std::string text(bytes.begin(), bytes.end());
      if (text.find(payload) != std::string::npos) return e;
    }
    return std::nullopt;
  }

  void send_udp(const std::string& payload, uint16_t dport = 6000) {
    UniqueFd s = udp_socket(kHostIp, 5001);
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(dport);
    inet_pton(AF_INET, kGuestIp, &to.sin_addr);
    ASSERT_EQ(::sendto(s.get(), payload.data(), payload.size(), 0, reinterpret_cast<sockaddr*>(&to),
                       sizeof to),
              static_cast<ssize_t>(payload.size()));
  }
};

TEST_F(VirtioNetTest, IdentityAndConfiguration) {
  EXPECT_EQ(device->device_type(), kDeviceTypeNet);
  EXPECT_EQ(device->num_queues(), 2);
  const uint64_t f = device->device_features();
  for (uint64_t bit : {kNetFMac, kNetFStatus, kNetFCsum, kNetFGuestCsum, kNetFHostTso4,
                       kNetFHostTso6, kNetFGuestTso4, kNetFGuestTso6}) {
    EXPECT_TRUE(f & bit) << bit;
  }
  EXPECT_FALSE(f & (kNetFMrgRxbuf | kNetFCtrlVq | kNetFMq | kNetFHostUfo | kNetFGuestUfo));
  ASSERT_EQ(device->config_size(), kNetConfigSize);
  uint8_t config[kNetConfigSize];
  device->config_read(0, config);
  EXPECT_EQ(0, std::memcmp(config, kGuestMac.data(), 6));
  EXPECT_EQ(config[kNetConfigStatus], kNetSLinkUp);
  uint8_t status[2];
  device->config_read(kNetConfigStatus, status);
  EXPECT_EQ(status[0] | status[1] << 8, kNetSLinkUp);
}

TEST_F(VirtioNetTest, DefaultMacIsLocallyAdministeredUnicast) {
  device.reset();
  device.emplace(events, net_config(kTap, std::nullopt));
  EXPECT_EQ(device->mac()[0] & 3, 2);
}

TEST_F(VirtioNetTest, TapErrorsAreInputErrors) {
  auto message = [&](const std::string& name) -> std::string {
    try {
      VirtioNetDevice other(events, net_config(name, kGuestMac));
    } catch (const InputError& e) {
      return e.what();
    }
    return "(no error)";
  };
  EXPECT_NE(message("nosuchtap").find("no tap device nosuchtap"), std::string::npos);
  EXPECT_NE(message(kTap).find("in use"), std::string::npos);  // `device` holds it
  EXPECT_NE(message("lo").find("not a single-queue tap"), std::string::npos);
  EXPECT_NE(message("a-name-far-too-long").find("characters"), std::string::npos);
}

TEST_F(VirtioNetTest, TransmitReachesSocketInNamespace) {
  UniqueFd sock = udp_socket(kHostIp, 5000);
  activate();
  const auto frame = udp_frame(interface_mac(kTap), kGuestMac, kGuestIp, kHostIp, 4000, 5000,
                               "hello from the guest");
  post_tx(0, 0, frame, /*split=*/true);
  kick(kNetTxQueue);

  auto got = receive(sock.get());
  ASSERT_TRUE(got);
  EXPECT_EQ(std::string(got->begin(), got->end()), "hello from the guest");
  ASSERT_EQ(tx.used_idx(), 1);
  EXPECT_EQ(tx.used_elem(0).id, 0u);
  EXPECT_EQ(tx.used_elem(0).len, 0u);
  EXPECT_EQ(transport.interrupts[kNetTxQueue], 1);
  EXPECT_EQ(stats().tx_frames, 1u);
  EXPECT_EQ(transport.needs_reset_calls, 0);
}

// HA output commit: a frame the guest sends while its VMM replicates
// leaves only once the epoch it was sent in is acknowledged, in order; the
// guest gets its buffer back at once.
TEST_F(VirtioNetTest, HeldOutputLeavesOnlyWhenItsEpochIsReleased) {
  UniqueFd sock = udp_socket(kHostIp, 5000);
  activate();
  const MacAddress host = interface_mac(kTap);
  auto send = [&](uint16_t desc, const std::string& text) {
    post_tx(desc, desc, udp_frame(host, kGuestMac, kGuestIp, kHostIp, 4000, 5000, text), false);
    kick(kNetTxQueue);
  };
  auto on_device = [&](auto f) {
    std::lock_guard guard(transport.lock());
    f(*device);
  };
  auto got = [&](std::chrono::milliseconds wait) -> std::string {
    auto bytes = receive(sock.get(), wait);
    return bytes ? std::string(bytes->begin(), bytes->end()) : "(nothing)";
  };
  on_device([](VirtioNetDevice& d) { d.hold_output(true); });
  send(0, "epoch one");
  EXPECT_EQ(tx.used_idx(), 1) << "the guest has its buffer back at once";
  EXPECT_EQ(stats().tx_held, 1u);
  EXPECT_EQ(stats().tx_frames, 0u);
  on_device([](VirtioNetDevice& d) { d.close_output_epoch(1); });
  send(1, "epoch two");
  // Nothing has left yet: the host side hears nothing (a frame would be
  // there within microseconds; 200 ms is far beyond that).
  EXPECT_EQ(got(200ms), "(nothing)");
  on_device([](VirtioNetDevice& d) { d.release_output(1); });
  EXPECT_EQ(got(5s), "epoch one");
  EXPECT_EQ(got(200ms), "(nothing)") << "epoch two is not acknowledged yet";
  on_device([](VirtioNetDevice& d) {
    d.close_output_epoch(2);
    d.release_output(2);
  });
  EXPECT_EQ(got(5s), "epoch two");
  // Held again, then holding ends: what is held goes first, then the rest
  // as before.
  send(2, "unacknowledged");
  on_device([](VirtioNetDevice& d) { d.hold_output(false); });
  send(3, "unheld");
  EXPECT_EQ(got(5s), "unacknowledged");
  EXPECT_EQ(got(5s), "unheld");
  EXPECT_EQ(stats().tx_frames, 4u);
  EXPECT_EQ(stats().tx_held, 3u);
  EXPECT_EQ(transport.needs_reset_calls, 0);
}

TEST_F(VirtioNetTest, ReceiveFromSocketLandsInBuffer) {
  activate();
  for (uint16_t i = 0; i < 4; ++i) post_rx(i, kNetHdrSize + 1514);
  kick(kNetRxQueue);
  send_udp("hello to the guest");
  run_until([&] { return find_rx("hello to the guest").has_value(); });

  const VirtqUsedElem e = *find_rx("hello to the guest");
  const auto bytes = rx_bytes(static_cast<uint16_t>(e.id), e.len);
  ASSERT_EQ(e.len, kNetHdrSize + 14 + 20 + 8 + 18);
  VirtioNetHdr hdr;
  std::memcpy(&hdr, bytes.data(), sizeof hdr);
  EXPECT_EQ(hdr.num_buffers, 1);  // 5.1.6.4.1 without MRG_RXBUF
  EXPECT_EQ(hdr.flags, 0);        // GUEST_CSUM not negotiated
  EXPECT_EQ(hdr.gso_type, kNetHdrGsoNone);
  const uint8_t* eth = bytes.data() + kNetHdrSize;
  EXPECT_EQ(0, std::memcmp(eth, kGuestMac.data(), 6));
  EXPECT_EQ(eth[12] << 8 | eth[13], ETHERTYPE_IP);
  EXPECT_GE(transport.interrupts[kNetRxQueue], 1);
  // While it holds buffers the device wants no receive kicks.
  EXPECT_EQ(rx.used_flags(), kUsedFNoNotify);
}

TEST_F(VirtioNetTest, GuestOffloadsAreAcceptedByTheTap) {
  activate(kFVersion1 | kNetFMac | kNetFGuestCsum | kNetFGuestTso4 | kNetFGuestTso6 | kNetFCsum |
           kNetFHostTso4);
  EXPECT_EQ(transport.needs_reset_calls, 0);
  post_rx(0, kNetHdrSize + 65550);
  kick(kNetRxQueue);
  send_udp("offloaded");
  run_until([&] { return find_rx("offloaded").has_value(); });
}

// A save quiesces the device: frames that come meanwhile wait in the tap
// and touch no guest memory (the saved state would not match it: a migrated
// guest's receive ring was seen corrupted so); resume() delivers them.
TEST_F(VirtioNetTest, QuiescedDeviceLeavesGuestMemoryAloneUntilResumed) {
  for (uint16_t i = 0; i < 4; ++i) post_rx(i, kNetHdrSize + 1514);
  activate();
  {
    std::lock_guard guard(transport.lock());
    device->quiesce();
  }
  send_udp("held by the tap");
  events.restart();
  while (events.poll() != 0) {
  }
  EXPECT_EQ(rx.used_idx(), 0) << "a frame reached guest memory after the save";
  {
    std::lock_guard guard(transport.lock());
    device->resume();
  }
  run_until([&] { return find_rx("held by the tap").has_value(); });
  EXPECT_EQ(stats().rx_frames, 1u);
}

TEST_F(VirtioNetTest, EmptyReceiveQueuePausesAndKickResumes) {
  activate();  // no receive buffers yet
  EXPECT_EQ(stats().rx_out_of_buffers, 1u);
  // Out of buffers, the device asks for kicks and watches nothing: the event
  // loop has no work (no spinning on a readable tap).
  EXPECT_EQ(rx.used_flags(), 0);
  send_udp("waited in the tap");
  events.restart();
  EXPECT_EQ(events.poll(), 0u);
  EXPECT_EQ(rx.used_idx(), 0);

  // The frame waited in the tap's queue, not dropped.
  for (uint16_t i = 0; i < 4; ++i) post_rx(i, kNetHdrSize + 1514);
  kick(kNetRxQueue);
  run_until([&] { return find_rx("waited in the tap").has_value(); });
  EXPECT_EQ(rx.used_flags(), kUsedFNoNotify);
}

TEST_F(VirtioNetTest, FrameLongerThanBufferIsDroppedAndBufferReused) {
  activate();
  post_rx(0, kNetHdrSize + 100);
  kick(kNetRxQueue);
  send_udp(std::string(400, 'x'));
  run_until([&] { return stats().rx_too_big >= 1; });
  EXPECT_EQ(rx.used_idx(), 0);
  send_udp("small");
  run_until([&] { return find_rx("small").has_value(); });
  ASSERT_TRUE(find_rx("small"));
  EXPECT_EQ(find_rx("small")->id, 0u);
  EXPECT_EQ(stats().rx_too_big, 1u);
}

// After a migration the device announces the guest's MAC where it now runs:
// five RARP frames (RFC 903: reverse request, the MAC as sender and target,
// no addresses) broadcast into the tap, the first at once, the next 50 ms
// later, without the guest doing anything (the device need not be active).
TEST_F(VirtioNetTest, AnnounceBroadcastsRarpFramesFromTheGuestMac) {
  constexpr uint16_t kRarp = 0x8035;
  UniqueFd capture = keel::testing::capture_frames(kTap, kRarp);

  device->announce();
  std::vector<std::vector<uint8_t>> frames;
  std::vector<std::chrono::steady_clock::time_point> when;
  run_until([&] {
    if (auto f = receive(capture.get(), 0ms)) {
      frames.push_back(*f);
      when.push_back(std::chrono::steady_clock::now());
    }
    return frames.size() == VirtioNetDevice::kAnnounceFrames;
  });
  std::vector<uint8_t> want{0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  want.insert(want.end(), kGuestMac.begin(), kGuestMac.end());
  for (uint8_t b : {0x80, 0x35, 0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x03}) want.push_back(b);
  want.insert(want.end(), kGuestMac.begin(), kGuestMac.end());
  want.insert(want.end(), 4, 0);
  want.insert(want.end(), kGuestMac.begin(), kGuestMac.end());
  want.insert(want.end(), 4, 0);
  want.resize(60, 0);
  for (const auto& f : frames) EXPECT_EQ(f, want);
  ASSERT_EQ(when.size(), 5u);
  EXPECT_GE(when[1] - when[0], 40ms) << "the second frame came at once";
  EXPECT_EQ(stats().tx_frames, 0u) << "announcing is not the guest transmitting";
}

// The tap bridged to a veth whose queue is slowed down by a token bucket,
// and a send buffer of about one frame: writes meet EAGAIN. Every frame must
// still come out at the far end, once, in order.
TEST_F(VirtioNetTest, TransmitWouldBlockLosesNothing) {
  run({"ip", "link", "add", "br0", "type", "bridge", "forward_delay", "0"});
  run({"ip", "link", "add", "veth0", "type", "veth", "peer", "name", "veth1"});
  run({"ip", "link", "set", kTap, "master", "br0"});
  run({"ip", "link", "set", "veth0", "master", "br0"});
  run({"tc", "qdisc", "add", "dev", "veth0", "root", "tbf", "rate", "200kbit", "burst", "1600",
       "limit", "100000"});
  for (const char* dev : {"veth1", "veth0", "br0"}) run({"ip", "link", "set", dev, "up"});

  UniqueFd capture = keel::testing::capture_frames("veth1", kExperimentalEtherType);

  device->tap().set_send_buffer(1024);
  activate();
  constexpr uint16_t kFrames = 48;
  const MacAddress far{0x02, 0, 0, 0, 0, 0x99};
  for (uint16_t i = 0; i < kFrames; ++i) {
    std::vector<uint8_t> frame(100, 0);
    std::memcpy(&frame[0], far.data(), 6);
    std::memcpy(&frame[6], kGuestMac.data(), 6);
    put16(frame, 12, kExperimentalEtherType);
    put16(frame, 14, i);
    post_tx(i, i, frame, /*split=*/false);
  }
  kick(kNetTxQueue);
  run_until([&] { return tx.used_idx() == kFrames; });
  EXPECT_GT(stats().tx_would_block, 0u);
  EXPECT_EQ(stats().tx_frames, kFrames);
  EXPECT_EQ(stats().tx_errors, 0u);

  for (uint16_t i = 0; i < kFrames; ++i) {
    auto got = receive(capture.get());
    ASSERT_TRUE(got) << "frame " << i << " lost";
    ASSERT_GE(got->size(), 16u);
    EXPECT_EQ((*got)[14] << 8 | (*got)[15], i);
  }
  EXPECT_FALSE(receive(capture.get(), 0ms)) << "a frame came out twice";
}

TEST_F(VirtioNetTest, WritableDescriptorInTransmitChainNeedsReset) {
  activate();
  const uint64_t gpa = kTxBuffers;
  tx.make_available(tx.write_chain(0, {{gpa, kNetHdrSize + 60}, {gpa + 0x800, 64, true}}));
  kick(kNetTxQueue);
  EXPECT_EQ(transport.needs_reset_calls, 1);
  EXPECT_NE(device->last_error().find("device-writable"), std::string::npos);
  EXPECT_EQ(tx.used_idx(), 0);
  EXPECT_EQ(stats().tx_frames, 0u);
  // Stopped: later kicks do nothing.
  post_tx(2, 2, std::vector<uint8_t>(60, 0), false);
  kick(kNetTxQueue);
  EXPECT_EQ(tx.used_idx(), 0);
}

TEST_F(VirtioNetTest, TransmitChainShorterThanHeaderNeedsReset) {
  activate();
  tx.make_available(tx.write_chain(0, {{kTxBuffers, kNetHdrSize - 2}}));
  kick(kNetTxQueue);
  EXPECT_EQ(transport.needs_reset_calls, 1);
  EXPECT_NE(device->last_error().find("shorter than the header"), std::string::npos);
}

TEST_F(VirtioNetTest, ReadableDescriptorInReceiveChainNeedsReset) {
  activate();
  rx.make_available(rx.write_chain(0, {{kRxBuffers, 16}, {kRxBuffers + 0x1000, 1600, true}}));
  kick(kNetRxQueue);
  EXPECT_EQ(transport.needs_reset_calls, 1);
  EXPECT_NE(device->last_error().find("device-readable"), std::string::npos);
  // Nothing is watched any more.
  events.restart();
  events.poll();
  EXPECT_TRUE(events.stopped());
}

TEST_F(VirtioNetTest, BrokenRingNeedsReset) {
  activate();
  rx.set_avail_idx(kQueueSize + 1);  // more heads than the ring holds
  kick(kNetRxQueue);
  EXPECT_EQ(transport.needs_reset_calls, 1);
  EXPECT_NE(device->last_error().find("receive queue"), std::string::npos);
}

TEST_F(VirtioNetTest, ResetStopsWatchingAndReactivationWorks) {
  activate();
  post_rx(0, kNetHdrSize + 1514);
  kick(kNetRxQueue);
  {
    std::lock_guard guard(transport.lock());
    device->reset();
  }
  send_udp("after reset");
  // The cancelled wait completes and does nothing; nothing else is armed.
  events.restart();
  events.poll();
  EXPECT_TRUE(events.stopped());
  EXPECT_EQ(rx.used_idx(), 0);

  // A driver starting over (fresh rings) gets the frame that waited.
  memory.write_obj<uint16_t>(rx.config().driver_area + kAvailIdxOffset, 0);
  memory.write_obj<uint16_t>(rx.config().device_area + kUsedIdxOffset, 0);
  activate();
  post_rx(0, kNetHdrSize + 1514);
  kick(kNetRxQueue);
  run_until([&] { return find_rx("after reset").has_value(); });
}

// Snapshot: the receive chain the device holds waiting for a frame is given
// back (one index back), so the restored device takes the same chain again
// and the frame lands in it; the MAC travels with the device state.
TEST_F(VirtioNetTest, SnapshotGivesBackTheHeldReceiveChainAndKeepsTheMac) {
  activate();
  post_rx(0, kNetHdrSize + 1514);
  post_rx(1, kNetHdrSize + 1514);
  kick(kNetRxQueue);
  std::optional<SplitQueueState> rx_state, tx_state;
  state::v1::VirtioDeviceState saved;
  {
    std::lock_guard guard(transport.lock());
    rx_state = device->queue_state(kNetRxQueue);
    tx_state = device->queue_state(kNetTxQueue);
    device->save_state(saved);
  }
  ASSERT_TRUE(rx_state && tx_state);
  EXPECT_EQ(rx_state->last_avail_idx, 0) << "chain 0 is held, not taken";
  EXPECT_EQ(rx_state->next_used_idx, 0);
  EXPECT_EQ(tx_state->last_avail_idx, 0);
  EXPECT_EQ(saved.net().mac(), std::string(kGuestMac.begin(), kGuestMac.end()));

  // The restored device: reset, device state checked and taken, queues
  // rebuilt at the saved indexes, activated (as VirtioPciDevice::restore does).
  {
    std::lock_guard guard(transport.lock());
    device->reset();
    state::v1::VirtioDeviceState bad = saved;
    bad.mutable_net()->set_mac(std::string("\x03\x00\x00\x00\x00\x01", 6));  // multicast
    EXPECT_THROW(device->restore_state(bad), InputError);
    bad.mutable_net()->set_mac("\x02\x00\x00\x00\x01");
    EXPECT_THROW(device->restore_state(bad), InputError);
    bad.mutable_rng();
    EXPECT_THROW(device->restore_state(bad), InputError);
    EXPECT_EQ(device->mac(), kGuestMac);
    device->restore_state(saved);
    std::vector<std::optional<SplitQueue>> queues;
    queues.emplace_back(std::in_place, memory, rx.config());
    queues.emplace_back(std::in_place, memory, tx.config());
    queues[0]->set_state(*rx_state);
    queues[1]->set_state(*tx_state);
    device->activate(memory, std::move(queues), kFVersion1 | kNetFMac | kNetFStatus);
  }
  // It receives at once (the transport holds the interrupt until the
  // machine's state is all in: VirtioPciDevice::release_interrupts).
  send_udp("after restore");
  run_until([&] { return find_rx("after restore").has_value(); });
  EXPECT_EQ(rx.used_elem(0).id, 0u) << "the held chain was taken again and got the frame";
}

}  // namespace
}  // namespace keel::virtio
