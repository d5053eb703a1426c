// keel-vmm's NBD disk (storage::NbdDisk) against Keel's own server and
// QEMU's qemu-nbd, through a proxy the test breaks: data in and out,
// requests split at the server's limit, a lost connection retried with
// every unanswered request sent again (nothing answered is lost), I/O
// errors when the server stays away, abandoned requests, refusals. No KVM:
// the disk is driven as the virtio-blk device drives it.
#include "storage/nbd_disk.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/uio.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/child_process.h"
#include "common/tcp_endpoint.h"
#include "tests/support/input_error.h"
#include "tests/support/nbd_file_server.h"
#include "tests/support/scratch_dir.h"
#include "tests/support/tcp_proxy.h"

namespace keel::testing {
namespace {

using namespace std::chrono_literals;
using storage::NbdDisk;
using storage::NbdDiskOptions;

constexpr uint64_t kDiskBytes = 64 << 20;

// Drives a disk as the device does: requests by tag, results collected
// from the completion eventfd.
class Driver {
 public:
  explicit Driver(storage::BlockBackend& disk) : disk_(disk) {
    disk_.set_completion_handler([this](uint64_t tag, int64_t result) { results_[tag] = result; });
  }
  bool wait_for(uint64_t tag, std::chrono::milliseconds timeout = 20s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!results_.count(tag)) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return false;
      pollfd p{disk_.event_fd(), POLLIN, 0};
      ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), 100)));
      disk_.process_completions();
    }
    return true;
  }
  int64_t result(uint64_t tag, std::chrono::milliseconds timeout = 20s) {
    if (!wait_for(tag, timeout)) return INT64_MIN;
    return results_.at(tag);
  }
  int64_t read(uint64_t tag, uint64_t offset, std::vector<uint8_t>& buffer) {
    iovec v{buffer.data(), buffer.size()};
    disk_.read(tag, offset, {&v, 1});
    disk_.submit();
    return result(tag);
  }
  int64_t write(uint64_t tag, uint64_t offset, std::vector<uint8_t>& buffer) {
    iovec v{buffer.data(), buffer.size()};
    disk_.write(tag, offset, {&v, 1});
    disk_.submit();
    return result(tag);
  }
  // Reads (tags from `first_tag` on) until one is not EIO or `timeout`
  // passed: the disk is back once the server is. The last result.
  int64_t read_when_back(uint64_t first_tag, std::vector<uint8_t>& buffer,
                         std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    int64_t result = -EIO;
    for (uint64_t tag = first_tag; result == -EIO && std::chrono::steady_clock::now() < deadline;
         ++tag) {
      result = read(tag, 0, buffer);
      if (result == -EIO) std::this_thread::sleep_for(100ms);
    }
    return result;
  }
  std::map<uint64_t, int64_t>& results() { return results_; }

 private:
  storage::BlockBackend& disk_;
  std::map<uint64_t, int64_t> results_;
};

std::vector<uint8_t> random_bytes(size_t n, uint32_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint8_t> out(n);
  for (auto& b : out) b = static_cast<uint8_t>(rng());
  return out;
}

std::vector<uint8_t> file_bytes(const std::string& path, uint64_t offset, size_t n) {
  std::ifstream in(path, std::ios::binary);
  in.seekg(static_cast<std::streamoff>(offset));
  std::vector<uint8_t> out(n);
  in.read(reinterpret_cast<char*>(out.data()), static_cast<std::streamsize>(n));
  return out;
}

uint64_t counter(const NbdDisk& disk, const std::string& name) {
  for (const auto& [key, value] : disk.counters()) {
    if (key == name) return value;
  }
  ADD_FAILURE() << "no counter " << name;
  return 0;
}

bool wait_disconnected(const NbdDisk& disk) {
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (counter(disk, "nbd_connected") != 0) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(10ms);
  }
  return true;
}

class NbdDiskTest : public ::testing::Test {
 protected:
  NbdDiskTest() {
    image_ = dir_.sparse_file("disk.raw", kDiskBytes);
    catalog_->add("vm1", image_, kDiskBytes);
    catalog_->add("ro", dir_.sparse_file("ro.raw", kDiskBytes), kDiskBytes, true);
  }
  std::string address(uint16_t port, const std::string& name = "vm1") const {
    return "tcp:127.0.0.1:" + std::to_string(port) + "/" + name;
  }

  ScratchDir dir_{"keel-nbd-disk"};
  std::string image_;
  std::shared_ptr<FileCatalog> catalog_ = std::make_shared<FileCatalog>();
};

TEST_F(NbdDiskTest, ReadsWritesFlushesTrimsAndZeroesOnKeelsServer) {
  NbdFileServer server(catalog_);
  NbdDisk disk(NbdDiskOptions{.address = address(server.port())});
  EXPECT_EQ(disk.size(), kDiskBytes);
  EXPECT_FALSE(disk.read_only());
  Driver d(disk);

  // Three iovecs in one request; the data is in the file on the server.
  auto data = random_bytes(3 << 20, 1);
  iovec parts[3] = {{data.data(), 1 << 20},
                    {data.data() + (1 << 20), 4096},
                    {data.data() + (1 << 20) + 4096, (2 << 20) - 4096}};
  disk.write(1, 1 << 20, parts);
  disk.flush(2);
  disk.submit();
  ASSERT_EQ(d.result(1), int64_t{3} << 20);
  ASSERT_EQ(d.result(2), 0);
  EXPECT_EQ(file_bytes(image_, 1 << 20, data.size()), data);
  std::vector<uint8_t> back(data.size());
  ASSERT_EQ(d.read(3, 1 << 20, back), int64_t{3} << 20);
  EXPECT_EQ(back, data);

  // A request beyond the server's 32 MiB payload goes in pieces.
  auto big = random_bytes(40 << 20, 2);
  ASSERT_EQ(d.write(4, 8 << 20, big), int64_t{40} << 20);
  std::vector<uint8_t> big_back(big.size());
  ASSERT_EQ(d.read(5, 8 << 20, big_back), int64_t{40} << 20);
  EXPECT_EQ(big_back, big);

  // Zeroes and discard read back as zeroes.
  disk.write_zeroes(6, 1 << 20, 4096, false);
  disk.discard(7, (1 << 20) + 4096, 1 << 20);
  disk.submit();
  ASSERT_EQ(d.result(6), 0);
  ASSERT_EQ(d.result(7), 0);
  std::vector<uint8_t> zeroes(4096 + (1 << 20));
  ASSERT_EQ(d.read(8, 1 << 20, zeroes), int64_t(zeroes.size()));
  EXPECT_EQ(zeroes, std::vector<uint8_t>(zeroes.size(), 0));

  // Beyond the end: refused here, nothing sent.
  std::vector<uint8_t> past(4096);
  EXPECT_EQ(d.read(9, kDiskBytes - 512, past), -EINVAL);
  EXPECT_EQ(disk.outstanding(), 0u);
  disk.sync();
}

TEST_F(NbdDiskTest, RefusesWhatCannotBackADisk) {
  NbdFileServer server(catalog_);
  EXPECT_NE(input_error([&] {
              NbdDisk refused(NbdDiskOptions{.address = address(server.port(), "nope")});
            }).find("refused export 'nope': unknown export"),
            std::string::npos);
  EXPECT_NE(input_error([&] {
              NbdDisk refused(NbdDiskOptions{.address = address(server.port(), "ro")});
            }).find("the export is read-only (give the disk readonly=on)"),
            std::string::npos);
  NbdDisk ro(NbdDiskOptions{.address = address(server.port(), "ro"), .read_only = true});
  Driver d(ro);
  std::vector<uint8_t> buffer(4096);
  EXPECT_EQ(d.write(1, 0, buffer), -EROFS);
  // The export's lock: a second writer is refused while the first holds it.
  NbdDisk first(NbdDiskOptions{.address = address(server.port())});
  EXPECT_NE(input_error([&] {
              NbdDisk refused(NbdDiskOptions{.address = address(server.port())});
            }).find("refused export 'vm1': refused by policy"),
            std::string::npos);
  EXPECT_NE(input_error([&] {
              NbdDisk refused(NbdDiskOptions{.address = "tcp:127.0.0.1:1/vm1"});
            }).find("cannot connect to tcp:127.0.0.1:1"),
            std::string::npos);
  EXPECT_NE(input_error([&] {
              NbdDisk refused(NbdDiskOptions{.address = "nbd://127.0.0.1:1/vm1"});
            }).find("is not tcp:ADDR:PORT/EXPORT"),
            std::string::npos);
  // Described only (a migration's destination): no lock taken until claim().
  NbdDisk described(NbdDiskOptions{.address = address(server.port()), .claim = false});
  EXPECT_EQ(described.size(), kDiskBytes);
}

TEST_F(NbdDiskTest, LostConnectionIsRetriedAndNothingAnsweredIsLost) {
  std::optional<NbdFileServer> server(std::in_place, catalog_);
  TcpProxy proxy(server->port());
  NbdDisk disk(NbdDiskOptions{.address = address(proxy.port())});
  Driver d(disk);

  // 64 writes reach the server, their answers are held back; the
  // connection is cut and new ones refused a while: they wait.
  proxy.hold_replies(true);
  std::vector<std::vector<uint8_t>> blocks;
  for (uint32_t i = 0; i < 64; ++i) {
    blocks.push_back(random_bytes(64 << 10, 100 + i));
    iovec v{blocks.back().data(), blocks.back().size()};
    disk.write(i, uint64_t{i} * (64 << 10), {&v, 1});
  }
  disk.submit();
  while (proxy.held_bytes() < 64 * 16) std::this_thread::sleep_for(10ms);
  proxy.refuse(true);
  proxy.cut();
  proxy.hold_replies(false);
  EXPECT_FALSE(d.wait_for(0, 500ms)) << "answered with no connection";
  EXPECT_EQ(disk.outstanding(), 64u);
  proxy.refuse(false);
  for (uint32_t i = 0; i < 64; ++i) ASSERT_EQ(d.result(i), 64 << 10) << "write " << i;
  EXPECT_GE(disk.reconnects(), 1u);
  for (uint32_t i = 0; i < 64; ++i) {
    std::vector<uint8_t> back(64 << 10);
    ASSERT_EQ(d.read(1000 + i, uint64_t{i} * (64 << 10), back), 64 << 10);
    ASSERT_EQ(back, blocks[i]) << "block " << i;
  }
  // The server itself restarted (its port taken over by a new one).
  const uint16_t old_port = server->port();
  server.reset();
  server.emplace(catalog_, old_port);
  std::vector<uint8_t> after = random_bytes(4096, 9);
  ASSERT_EQ(d.write(2000, 0, after), 4096);
  disk.flush(2001);
  disk.submit();
  ASSERT_EQ(d.result(2001), 0);
  EXPECT_EQ(file_bytes(image_, 0, 4096), after);
}

TEST_F(NbdDiskTest, ServerAwayLongerThanTheTimeoutGivesIoErrors) {
  NbdFileServer server(catalog_);
  TcpProxy proxy(server.port());
  NbdDisk disk(NbdDiskOptions{.address = address(proxy.port()), .io_timeout = 1500ms});
  Driver d(disk);
  std::vector<uint8_t> buffer(4096);
  ASSERT_EQ(d.read(1, 0, buffer), 4096);
  proxy.refuse(true);
  proxy.cut();
  // Until the disk has seen the connection go (a request sent before the
  // proxy cut would still be answered).
  ASSERT_TRUE(wait_disconnected(disk));
  const auto start = std::chrono::steady_clock::now();
  iovec v{buffer.data(), buffer.size()};
  disk.read(2, 0, {&v, 1});
  disk.submit();
  ASSERT_EQ(d.result(2, 10s), -EIO);
  EXPECT_GE(std::chrono::steady_clock::now() - start, 1400ms);
  // Still away: new requests fail at once.
  const auto again = std::chrono::steady_clock::now();
  EXPECT_EQ(d.read(3, 0, buffer), -EIO);
  EXPECT_LT(std::chrono::steady_clock::now() - again, 1000ms);
  // Back: requests work again.
  proxy.refuse(false);
  EXPECT_EQ(d.read_when_back(10, buffer, 10s), 4096);
  EXPECT_EQ(counter(disk, "nbd_timeouts"), 1u);
}

// Connected, acknowledged by TCP, never answered (a wedged server): the
// request fails after the timeout all the same, and the disk recovers.
TEST_F(NbdDiskTest, AServerThatAnswersNothingGivesIoErrors) {
  NbdFileServer server(catalog_);
  TcpProxy proxy(server.port());
  NbdDisk disk(NbdDiskOptions{.address = address(proxy.port()), .io_timeout = 1500ms});
  Driver d(disk);
  std::vector<uint8_t> buffer(4096);
  proxy.hold_replies(true);
  const auto start = std::chrono::steady_clock::now();
  iovec v{buffer.data(), buffer.size()};
  disk.read(1, 0, {&v, 1});
  disk.submit();
  ASSERT_EQ(d.result(1, 15s), -EIO);
  EXPECT_GE(std::chrono::steady_clock::now() - start, 1400ms);
  proxy.hold_replies(false);
  EXPECT_EQ(d.read_when_back(10, buffer, 15s), 4096);
}

TEST_F(NbdDiskTest, AbandonedReadsAreNotReportedAndTheirDataGoesNowhere) {
  {
    std::ofstream(image_, std::ios::binary | std::ios::in | std::ios::out)
        .write(std::string(8192, 'x').data(), 8192);
  }
  NbdFileServer server(catalog_);
  TcpProxy proxy(server.port());
  NbdDisk disk(NbdDiskOptions{.address = address(proxy.port())});
  Driver d(disk);
  proxy.hold_replies(true);
  std::vector<uint8_t> buffer(8192, 0xaa);
  iovec v{buffer.data(), buffer.size()};
  disk.read(1, 0, {&v, 1});
  disk.submit();
  while (proxy.held_bytes() < 8192) std::this_thread::sleep_for(10ms);
  disk.abandon_all();
  EXPECT_EQ(disk.outstanding(), 1u);
  proxy.hold_replies(false);
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (disk.outstanding() > 0 && std::chrono::steady_clock::now() < deadline) {
    pollfd p{disk.event_fd(), POLLIN, 0};
    ::poll(&p, 1, 100);
    disk.process_completions();
  }
  EXPECT_EQ(disk.outstanding(), 0u);
  EXPECT_TRUE(d.results().empty());
  EXPECT_EQ(buffer, std::vector<uint8_t>(8192, 0xaa));
}

// QEMU's server, Keel's client: the other direction of interoperation.
TEST_F(NbdDiskTest, WorksAgainstQemuNbd) {
  const uint16_t port = [] {
    UniqueFd probe = listen_tcp(parse_host_port("127.0.0.1:0", "probe"));
    return local_port(probe.get());
  }();
  ChildProcess qemu = ChildProcess::spawn(
      {"qemu-nbd", "--persistent", "--shared=4", "--format=raw", "--bind=127.0.0.1",
       "--port=" + std::to_string(port), "--export-name=disk", image_},
      {});
  std::unique_ptr<NbdDisk> disk;
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (!disk) {
    try {
      disk = std::make_unique<NbdDisk>(
          NbdDiskOptions{.address = "tcp:127.0.0.1:" + std::to_string(port) + "/disk"});
    } catch (const InputError& e) {
      ASSERT_LT(std::chrono::steady_clock::now(), deadline) << e.what();
      ASSERT_FALSE(qemu.try_wait()) << "qemu-nbd ended";
      std::this_thread::sleep_for(100ms);
    }
  }
  EXPECT_EQ(disk->size(), kDiskBytes);
  Driver d(*disk);
  auto data = random_bytes(1 << 20, 7);
  ASSERT_EQ(d.write(1, 4 << 20, data), 1 << 20);
  disk->flush(2);
  disk->write_zeroes(3, 4 << 20, 4096, true);
  disk->discard(4, 6 << 20, 1 << 20);
  disk->submit();
  ASSERT_EQ(d.result(2), 0);
  ASSERT_EQ(d.result(3), 0);
  ASSERT_EQ(d.result(4), 0);
  std::vector<uint8_t> back(1 << 20);
  ASSERT_EQ(d.read(5, 4 << 20, back), 1 << 20);
  std::fill(data.begin(), data.begin() + 4096, 0);
  EXPECT_EQ(back, data);
  disk->sync();
  EXPECT_EQ(file_bytes(image_, 4 << 20, 1 << 20), data);
}

}  // namespace
}  // namespace keel::testing
