// The test guest's own virtio drivers against keel-vmm's devices (label kvm:
// directly where /dev/kvm runs the test guest, otherwise inside the KVM test
// host): a disk written, flushed and verified across boots and from the host,
// random I/O, a read-only disk, an image another VMM writes, entropy, and a guest that feeds
// malformed queues on purpose.
#include <fcntl.h>
#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <thread>
#include <vector>

#include "proto/control.pb.h"
#include "tests/support/disk_pattern.h"
#include "tests/support/live_vmm.h"
#include "tests/support/net_namespace.h"
#include "tests/support/net_peer.h"
#include "tests/support/scratch_dir.h"
#include "tests/support/vmm_run.h"

namespace keel::testing {
namespace {

namespace pb = ::keel::api::v1;

VmmRun boot(const std::vector<std::string>& devices, const std::string& cmdline) {
  std::vector<std::string> args{"--kernel", testos_bzimage(), "--memory",
                                "256M",     "--cmdline",      cmdline};
  args.insert(args.end(), devices.begin(), devices.end());
  return run_vmm(args, std::chrono::seconds(600));
}

TEST(VirtioTestos, DiskWrittenAndFlushedIsInTheFileAndVerifiesOnASecondBoot) {
  ScratchDir dir("keel-virtio");
  const std::string image = dir.sparse_file("disk.img", 64ull << 20);
  auto first = boot({"--disk", "path=" + image}, "job=disk mode=write mib=16 seed=7");
  ASSERT_EQ(first.exit_code, 0) << describe(first);
  auto wrote = first.line("testos: disk OK mode=write ");
  ASSERT_TRUE(wrote) << describe(first);
  EXPECT_EQ(fields(*wrote)["flush"], "1") << *wrote;
  auto device = first.line("testos: disk device ");
  ASSERT_TRUE(device) << describe(first);
  EXPECT_EQ(field_u64(*device, "capacity_sectors"), (64ull << 20) / 512) << *device;
  // The guest's flush returned: the data is in the file (keel-vmm has exited).
  EXPECT_EQ(first_bad_sector(image, 16 * 2048, 7), -1);

  auto second = boot({"--disk", "path=" + image}, "job=disk mode=verify mib=16 seed=7");
  ASSERT_EQ(second.exit_code, 0) << describe(second);
  auto verified = second.line("testos: disk OK mode=verify ");
  ASSERT_TRUE(verified) << describe(second);
  EXPECT_EQ(fields(*verified)["sum"], fields(*wrote)["sum"]);

  // A wrong seed must not verify: the check reads what is there.
  auto wrong = boot({"--disk", "path=" + image}, "job=disk mode=verify mib=1 seed=8");
  EXPECT_TRUE(wrong.line("testos: disk FAIL mode=verify ")) << describe(wrong);
}

// Two VMMs writing one image would corrupt it: the second is refused (the
// image's OFD lock) before its guest runs, naming the image.
TEST(VirtioTestos, AnImageAnotherVmmWritesIsRefused) {
  ScratchDir scratch("keel-virtio-test");
  const std::string image = scratch.sparse_file("disk.img", 8 << 20);
  LiveVmm first({"--kernel", testos_bzimage(), "--memory", "64M", "--disk", "path=" + image,
                 "--cmdline", "job=heartbeat interval_ms=50"});
  ASSERT_TRUE(first.wait_line("testos: beat ", 0, std::chrono::seconds(60))) << first.describe();
  for (const std::string& spec : {"path=" + image, "path=" + image + ",readonly=on"}) {
    auto second = boot({"--disk", spec}, "job=platform");
    EXPECT_EQ(second.exit_code, 1) << describe(second);
    EXPECT_NE(second.err.find("disk image " + image + " is in use"), std::string::npos)
        << second.err;
    EXPECT_TRUE(second.lines.empty()) << "its guest ran: " << describe(second);
  }
  EXPECT_EQ(first.keelctl({"kill"}).exit_code, 0);
  EXPECT_EQ(first.wait_exit(std::chrono::seconds(30)), 14);
  // Let go with the process: the image is free again.
  auto after = boot({"--disk", "path=" + image}, "job=platform");
  EXPECT_EQ(after.exit_code, 0) << describe(after);
}

TEST(VirtioTestos, RandomWritesVerifyByChecksum) {
  ScratchDir dir("keel-virtio");
  const std::string image = dir.sparse_file("disk.img", 32ull << 20);
  auto run = boot({"--disk", "path=" + image}, "job=disk mode=random mib=32 ops=400 seed=3");
  ASSERT_EQ(run.exit_code, 0) << describe(run);
  auto ok = run.line("testos: disk OK mode=random ");
  ASSERT_TRUE(ok) << describe(run);
  EXPECT_EQ(field_u64(*ok, "ops"), 400u) << *ok;
}

TEST(VirtioTestos, ReadOnlyDiskRefusesWritesAndKeepsItsData) {
  ScratchDir dir("keel-virtio");
  const std::string image = dir.sparse_file("disk.img", 8ull << 20);
  auto run = boot({"--disk", "path=" + image + ",readonly=on"}, "job=disk mode=write mib=1 seed=1");
  EXPECT_TRUE(run.line("testos: disk FAIL mode=write io=status status=1")) << describe(run);
  std::ifstream in(image, std::ios::binary);
  std::vector<char> bytes(1 << 20);
  in.read(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  EXPECT_TRUE(std::all_of(bytes.begin(), bytes.end(), [](char c) { return c == 0; }));
}

TEST(VirtioTestos, TwoDisksInCommandLineOrder) {
  ScratchDir dir("keel-virtio");
  const std::string a = dir.sparse_file("a.img", 8ull << 20);
  const std::string b = dir.sparse_file("b.img", 16ull << 20);
  auto run =
      boot({"--disk", "path=" + a, "--disk", "path=" + b}, "job=disk mode=write mib=1 seed=2");
  ASSERT_EQ(run.exit_code, 0) << describe(run);
  auto device = run.line("testos: disk device ");
  ASSERT_TRUE(device) << describe(run);
  EXPECT_EQ(field_u64(*device, "capacity_sectors"), (8ull << 20) / 512)
      << "the first disk is the first device";
  EXPECT_EQ(first_bad_sector(a, 2048, 2), -1);
  EXPECT_EQ(first_bad_sector(b, 1, 2), 0) << "the second disk is untouched";
}

TEST(VirtioTestos, EntropyFromTheRngDevice) {
  auto run = boot({"--rng"}, "job=rng bytes=65536");
  ASSERT_EQ(run.exit_code, 0) << describe(run);
  auto ok = run.line("testos: rng OK ");
  ASSERT_TRUE(ok) << describe(run);
  EXPECT_EQ(field_u64(*ok, "bytes"), 65536u);
  EXPECT_GT(field_u64(*ok, "distinct"), 250u) << *ok;
}

TEST(VirtioTestos, MalformedQueuesDoNotHurtTheVmm) {
  ScratchDir dir("keel-virtio");
  const std::string image = dir.sparse_file("disk.img", 8ull << 20);
  const std::string events = dir.path() + "/events.ndjson";
  auto run = boot({"--disk", "path=" + image, "--rng", "--event-log", events}, "job=malformed");
  ASSERT_EQ(run.exit_code, 0) << describe(run);
  auto ok = run.line("testos: malformed OK ");
  ASSERT_TRUE(ok) << describe(run);
  EXPECT_GE(field_u64(*ok, "cases"), 7u) << *ok;
  // Each broken queue is an event naming the device and why, rate-limited
  // (a guest could break devices forever); the stop comes last.
  std::ifstream in(events);
  std::vector<pb::Event> told;
  for (std::string line; std::getline(in, line);) {
    pb::Event e;
    ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(line, &e).ok()) << line;
    told.push_back(e);
  }
  ASSERT_GE(told.size(), 3u);
  EXPECT_EQ(told.front().type(), pb::EVENT_TYPE_STARTED);
  EXPECT_EQ(told.back().type(), pb::EVENT_TYPE_POWERED_OFF);
  size_t resets = 0;
  for (const auto& e : told) {
    if (e.type() != pb::EVENT_TYPE_DEVICE_RESET) continue;
    ++resets;
    EXPECT_TRUE(e.device() == "vda" || e.device() == "rng") << e.device();
    EXPECT_FALSE(e.detail().empty());
  }
  EXPECT_GE(resets, 1u);
  EXPECT_LE(resets, 10u) << "more device events than the rate limit lets through";
}

// The tap lives in a network namespace of the test's own; keel-vmm starts
// inside it (the thread that runs it entered the namespace).
TEST(VirtioTestos, NetworkAnswersPingAndEchoesEveryUdpDatagram) {
  NetNamespace ns("ktap0", "10.0.2.1/24");
  constexpr int kDatagrams = 20;
  VmmRun run{};
  std::thread guest([&] {
    run = boot({"--net", "tap=ktap0,mac=52:54:00:12:34:56"},
               "job=net ip=10.0.2.15 count=" + std::to_string(kDatagrams) + " seconds=300");
  });
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(240);
  // Replies to ping also tell that the guest is up.
  const int replies = ping("10.0.2.15", 3, deadline);
  int echoed = 0;
  if (replies == 3) {
    UdpSocket udp("10.0.2.1", 0);
    for (int i = 0; i < kDatagrams; ++i) {
      std::string text =
          "keel udp echo " + std::to_string(i) + std::string(static_cast<size_t>(i) * 50, 'x');
      std::vector<uint8_t> payload(text.begin(), text.end());
      udp.send_to("10.0.2.15", 7, payload);
      if (udp.receive(std::chrono::seconds(10)) == payload) ++echoed;
    }
  }
  guest.join();
  EXPECT_EQ(replies, 3) << describe(run);
  EXPECT_EQ(echoed, kDatagrams) << describe(run);
  ASSERT_EQ(run.exit_code, 0) << describe(run);
  auto ready = run.line("testos: net ready ");
  ASSERT_TRUE(ready) << describe(run);
  EXPECT_EQ(fields(*ready)["mac"], "52:54:00:12:34:56") << *ready;
  auto ok = run.line("testos: net echo OK ");
  ASSERT_TRUE(ok) << describe(run);
  EXPECT_EQ(field_u64(*ok, "udp"), uint64_t{kDatagrams}) << *ok;
  EXPECT_GE(field_u64(*ok, "icmp"), 3u) << *ok;
}

// What the guest sent is all in the host's socket: keel-vmm completes a
// transmit buffer only after the tap took the frame.
TEST(VirtioTestos, NetworkSendLosesNothing) {
  NetNamespace ns("ktap0", "10.0.2.1/24");
  UdpSocket sink("10.0.2.1", 9000, 64 << 20);  // holds the whole run
  const uint64_t tap_rx_before = link_counter("ktap0", "rx_packets");
  VmmRun run{};
  std::thread guest([&] {
    run = boot({"--net", "tap=ktap0"}, "job=net ip=10.0.2.15 mode=send dst=10.0.2.1:9000 mib=4");
  });
  guest.join();
  ASSERT_EQ(run.exit_code, 0) << describe(run);
  auto ok = run.line("testos: net send OK ");
  ASSERT_TRUE(ok) << describe(run);
  const uint64_t datagrams = field_u64(*ok, "datagrams");
  EXPECT_EQ(field_u64(*ok, "bytes"), 4u << 20) << *ok;
  EXPECT_GE(link_counter("ktap0", "rx_packets") - tap_rx_before, datagrams);
  std::set<uint64_t> sequence;
  uint64_t bytes = 0, bad = 0;
  for (;;) {
    auto d = sink.receive(std::chrono::milliseconds(200));
    if (d.empty()) break;
    bytes += d.size();
    uint64_t seq = 0;
    std::memcpy(&seq, d.data(), std::min<size_t>(8, d.size()));
    sequence.insert(seq);
    for (size_t i = 8; i < d.size(); ++i) bad += d[i] != static_cast<uint8_t>(i * 7 + 1);
  }
  EXPECT_EQ(bytes, 4u << 20);
  EXPECT_EQ(sequence.size(), datagrams);
  EXPECT_EQ(sequence.empty() ? 0 : *sequence.rbegin(), datagrams - 1);
  EXPECT_EQ(bad, 0u);
}

}  // namespace
}  // namespace keel::testing
