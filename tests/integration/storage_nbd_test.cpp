// Keel's NBD server (storage/nbd_server.h) exporting a pool's VM disks, on
// a real Btrfs volume: Debian's NBD tools read and write it (nbdinfo,
// nbdcopy from libnbd, qemu-img and qemu-io; the kernel's nbd-client in
// NbdKernelClient, run where the nbd module is), the allow-list decides
// who may list and open, a second writer is refused, and malformed traffic
// gets errors or a closed connection, never data. Label "storage".
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <thread>

#include "common/child_process.h"
#include "common/unique_fd.h"
#include "storage/image_store.h"
#include "storage/nbd_server.h"
#include "storage/nbd_wire.h"
#include "storage/pool.h"
#include "storage/pool_nbd_catalog.h"
#include "storage/vm_store.h"
#include "tests/support/nbd_raw_client.h"
#include "tests/support/scratch_btrfs.h"
#include "tests/support/scratch_dir.h"

namespace keel::testing {
namespace {

namespace fs = std::filesystem;
using namespace storage::nbd;

std::string read_range(const fs::path& path, uint64_t offset, size_t n) {
  std::ifstream in(path, std::ios::binary);
  in.seekg(static_cast<std::streamoff>(offset));
  std::string out(n, '\0');
  in.read(out.data(), static_cast<std::streamsize>(n));
  out.resize(static_cast<size_t>(in.gcount()));
  return out;
}

std::string random_bytes(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::string out(n, '\0');
  for (auto& c : out) c = static_cast<char>(gen());
  return out;
}

class NbdExports : public ::testing::Test {
 protected:
  NbdExports() {
    storage::ImageStore images(pool_);
    write(files_ / "disk.raw", data_);
    fs::resize_file(files_ / "disk.raw", kDiskBytes);
    images.import("base", {files_ / "disk.raw", "", "", ""});
    // An image without a kernel cannot make a VM; one with a dummy can.
    write(files_ / "kernel", "kernel");
    images.import("bootable", {files_ / "disk.raw", files_ / "kernel", "", ""});
    storage::VmSpec spec;
    spec.name = "web1";
    spec.image = "bootable";
    vms_.create(spec);
    spec.name = "web2";
    vms_.create(spec);
    std::map<std::string, std::set<std::string>> allow;
    storage::PoolNbdCatalog::add_rule("web1=127.0.0.1", allow);
    storage::PoolNbdCatalog::add_rule("web2=127.0.0.1,127.0.0.3", allow);
    server_ =
        std::make_unique<storage::NbdServer>(std::make_shared<storage::PoolNbdCatalog>(vms_, allow),
                                             parse_host_port("127.0.0.1:0", "test"));
    thread_ = std::thread([this] { server_->run(); });
  }
  ~NbdExports() override {
    server_->stop();
    thread_.join();
  }
  static void write(const std::string& path, const std::string& data) {
    std::ofstream(path, std::ios::binary)
        .write(data.data(), static_cast<std::streamsize>(data.size()));
  }
  std::string uri(const std::string& name) const {
    return "nbd://127.0.0.1:" + std::to_string(server_->port()) + "/" + name;
  }
  fs::path disk(const std::string& vm) const { return vms_.current(vm) / "disk.raw"; }

  static constexpr uint64_t kDiskBytes = 32 << 20;
  ScratchBtrfs volume_{uint64_t{512} << 20};
  ScratchDir files_{"keel-nbd-test"};
  storage::Pool pool_ = storage::Pool::init(volume_.mount_point() + "/pool");
  storage::VmStore vms_{pool_};
  const std::string data_ = random_bytes(4 << 20, 5);
  std::unique_ptr<storage::NbdServer> server_;
  std::thread thread_;
};

CommandResult run(const std::vector<std::string>& argv) {
  auto r = run_command(argv, std::chrono::seconds(120));
  if (r.exit_code == 127) ADD_FAILURE() << argv[0] << " is not installed (tools/setup installs it)";
  return r;
}

TEST_F(NbdExports, NbdinfoListsAndDescribesTheExports) {
  auto list = run({"nbdinfo", "--list", "nbd://127.0.0.1:" + std::to_string(server_->port())});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  EXPECT_NE(list.out.find("export=\"web1\""), std::string::npos) << list.out;
  EXPECT_NE(list.out.find("export=\"web2\""), std::string::npos) << list.out;
  auto info = run({"nbdinfo", uri("web1")});
  ASSERT_EQ(info.exit_code, 0) << info.err;
  EXPECT_NE(info.out.find("export-size: 33554432"), std::string::npos) << info.out;
  EXPECT_NE(info.out.find("can_flush: true"), std::string::npos) << info.out;
  EXPECT_NE(info.out.find("can_fua: true"), std::string::npos) << info.out;
  EXPECT_NE(info.out.find("can_trim: true"), std::string::npos) << info.out;
  EXPECT_NE(info.out.find("can_zero: true"), std::string::npos) << info.out;
  EXPECT_NE(info.out.find("is_read_only: false"), std::string::npos) << info.out;
  auto none = run({"nbdinfo", uri("nosuchvm")});
  EXPECT_NE(none.exit_code, 0);
  // nbdinfo names the export it could not open (its words for the error).
  EXPECT_NE(none.err.find("nosuchvm"), std::string::npos) << none.err;
}

TEST_F(NbdExports, NbdcopyReadsTheDiskAndWritesIt) {
  const std::string out = files_ / "out.raw";
  auto copy = run({"nbdcopy", uri("web1"), out});
  ASSERT_EQ(copy.exit_code, 0) << copy.err;
  EXPECT_EQ(fs::file_size(out), kDiskBytes);
  EXPECT_EQ(read_range(out, 0, data_.size()), data_);
  const std::string in = files_ / "in.raw";
  const std::string fresh = random_bytes(kDiskBytes, 9);
  write(in, fresh);
  auto back = run({"nbdcopy", "--flush", in, uri("web1")});
  ASSERT_EQ(back.exit_code, 0) << back.err;
  EXPECT_EQ(read_range(disk("web1"), 0, kDiskBytes), fresh);
  // The image the VM was made from is untouched.
  EXPECT_EQ(read_range(storage::ImageStore(pool_).path("bootable") / "disk.raw", 0, data_.size()),
            data_);
}

TEST_F(NbdExports, QemuWritesZeroesTrimsFlushesAndReads) {
  const std::string target = "nbd://127.0.0.1:" + std::to_string(server_->port()) + "/web1";
  auto io = run({"qemu-io", "-f", "raw", "-c", "write -P 0xcd 1M 64k", "-c", "write -z 64k 64k",
                 "-c", "write -f -P 0x5a 8M 4k", "-c", "discard 16M 1M", "-c", "flush", "-c",
                 "read -P 0xcd 1M 64k", target});
  ASSERT_EQ(io.exit_code, 0) << io.out << io.err;
  EXPECT_EQ(io.out.find("Pattern verification failed"), std::string::npos) << io.out;
  EXPECT_EQ(read_range(disk("web1"), 1 << 20, 65536), std::string(65536, '\xcd'));
  EXPECT_EQ(read_range(disk("web1"), 65536, 65536), std::string(65536, '\0'));
  EXPECT_EQ(read_range(disk("web1"), 8 << 20, 4096), std::string(4096, '\x5a'));
  const std::string copy = files_ / "qemu.raw";
  auto convert = run({"qemu-img", "convert", "-f", "raw", "-O", "raw", target, copy});
  ASSERT_EQ(convert.exit_code, 0) << convert.err;
  EXPECT_EQ(read_range(copy, 0, kDiskBytes), read_range(disk("web1"), 0, kDiskBytes));
}

TEST_F(NbdExports, TheAllowListDecidesWhoSeesAndOpens) {
  // 127.0.0.3 may open web2 only; 127.0.0.2 nothing.
  RawClient other(server_->port(), "127.0.0.2");
  other.send(client_flags(kClientFixedNewstyle));
  other.option(kOptList, "");
  EXPECT_EQ(other.option_reply().type, kRepAck) << "127.0.0.2 was shown an export";
  // Not allowed looks like not there: no names leak to who may not open them.
  EXPECT_EQ(other.go("web1"), kRepErrUnknown);
  EXPECT_NE(other.last_message().find("no export named 'web1' for 127.0.0.2"), std::string::npos)
      << other.last_message();
  EXPECT_EQ(other.go("nosuchvm"), kRepErrUnknown);

  RawClient third(server_->port(), "127.0.0.3");
  third.send(client_flags(kClientFixedNewstyle));
  third.option(kOptList, "");
  auto first = third.option_reply();
  ASSERT_EQ(first.type, kRepServer);
  EXPECT_EQ(first.data.substr(4), "web2");
  EXPECT_EQ(third.option_reply().type, kRepAck);
  EXPECT_EQ(third.go("web1"), kRepErrUnknown);
  EXPECT_EQ(third.go("web2"), kRepAck);
}

TEST_F(NbdExports, ASecondWriterOfOneDiskIsRefused) {
  RawClient first(server_->port());
  first.send(client_flags(kClientFixedNewstyle | kClientNoZeroes));
  ASSERT_EQ(first.go("web1"), kRepAck);
  RawClient second(server_->port());
  second.send(client_flags(kClientFixedNewstyle));
  EXPECT_EQ(second.go("web1"), kRepErrPolicy);
  EXPECT_NE(second.last_message().find("is in use"), std::string::npos) << second.last_message();
  // The first one works on.
  std::string got;
  first.request(kCmdRead, 0, 4096);
  EXPECT_EQ(first.reply_error(&got, 4096), 0u);
  EXPECT_EQ(got, data_.substr(0, 4096));
}

TEST_F(NbdExports, MalformedRequestsGetErrorsAndBrokenStreamsAClose) {
  RawClient c(server_->port());
  c.send(client_flags(kClientFixedNewstyle));
  c.option(99, "whatever");
  EXPECT_EQ(c.option_reply().type, kRepErrUnsup);
  c.option(kOptStructuredReply, "");
  EXPECT_EQ(c.option_reply().type, kRepErrUnsup);
  c.option(kOptList, "x");
  EXPECT_EQ(c.option_reply().type, kRepErrInvalid);
  c.option(kOptGo, std::string("\0\0\0\x09web1", 8));  // name length past the data
  EXPECT_EQ(c.option_reply().type, kRepErrInvalid);
  ASSERT_EQ(c.go("web1"), kRepAck);

  c.request(kCmdRead, kDiskBytes - 512, 1024);
  EXPECT_EQ(c.reply_error(), kEinval) << "a read past the end";
  c.request(kCmdWrite, kDiskBytes - 512, 1024, 0, std::string(1024, 'x'));
  EXPECT_EQ(c.reply_error(), kEnospc) << "a write past the end";
  c.request(kCmdRead, ~uint64_t{0} - 10, 100);
  EXPECT_EQ(c.reply_error(), kEinval) << "offset + length wraps";
  c.request(77, 0, 0);
  EXPECT_EQ(c.reply_error(), kEinval) << "an unknown command";
  c.request(kCmdRead, 0, 512, kCmdFlagNoHole);
  EXPECT_EQ(c.reply_error(), kEinval) << "a flag the command does not take";
  c.request(kCmdFlush, 4096, 0);
  EXPECT_EQ(c.reply_error(), kEinval) << "a flush with an offset";
  EXPECT_EQ(read_range(disk("web1"), kDiskBytes - 512, 512), std::string(512, '\0'));
  // FUA write, then read back.
  c.request(kCmdWrite, 4096, 512, kCmdFlagFua, std::string(512, 'f'));
  EXPECT_EQ(c.reply_error(), 0u);
  EXPECT_EQ(read_range(disk("web1"), 4096, 512), std::string(512, 'f'));
  // A request without the magic: the stream cannot be trusted any more.
  c.send(std::string(28, '\x42'));
  EXPECT_TRUE(c.closed_by_server());

  RawClient flags(server_->port());
  flags.send(client_flags(0x80));  // a client flag never offered
  EXPECT_TRUE(flags.closed_by_server());

  RawClient huge(server_->port());
  huge.send(client_flags(kClientFixedNewstyle));
  ASSERT_EQ(huge.go("web2"), kRepAck);
  huge.request(kCmdWrite, 0, 64u << 20);  // 64 MiB announced: more than 32 MiB
  EXPECT_TRUE(huge.closed_by_server());
}

// The client sends its writes and DISC and shuts its side at once: every
// write still lands and is answered.
TEST_F(NbdExports, DisconnectFinishesWritesInFlight) {
  RawClient c(server_->port());
  c.send(client_flags(kClientFixedNewstyle | kClientNoZeroes));
  ASSERT_EQ(c.go("web2"), kRepAck);
  std::string burst;
  for (uint64_t i = 0; i < 64; ++i) {
    append_request(burst, {0, kCmdWrite, i + 1, i * 65536, 65536});
    burst += std::string(65536, static_cast<char>('a' + i % 26));
  }
  append_request(burst, {0, kCmdDisconnect, 999, 0, 0});
  c.send(burst);
  c.shutdown_writes();
  // 64 replies, in any order, then the close.
  size_t replies = 0;
  while (replies < 64) {
    const std::string head = c.read(16);
    ASSERT_EQ(head.size(), 16u) << "after " << replies << " replies";
    EXPECT_EQ(load_be(reinterpret_cast<const uint8_t*>(head.data()) + 4, 4), 0u);
    ++replies;
  }
  EXPECT_TRUE(c.closed_by_server());
  for (uint64_t i = 0; i < 64; ++i) {
    EXPECT_EQ(read_range(disk("web2"), i * 65536, 65536),
              std::string(65536, static_cast<char>('a' + i % 26)))
        << "block " << i;
  }
}

// Linux's own NBD client (nbd-client and the nbd module): where the module
// is (the KVM test host has it; ctest runs this through tools/kvm-run).
TEST_F(NbdExports, NbdKernelClientReadsAndWritesThroughDevNbd) {
  if (run_command({"modprobe", "nbd"}, std::chrono::seconds(30)).exit_code != 0 &&
      !fs::exists("/sys/module/nbd")) {
    FAIL() << "no nbd module here: run this test in the KVM test host "
              "(ctest -R storage_nbd_kernel_test)";
  }
  const std::string device = "/dev/nbd7";
  auto connect =
      run({"nbd-client", "127.0.0.1", std::to_string(server_->port()), device, "-N", "web1"});
  ASSERT_EQ(connect.exit_code, 0) << connect.out << connect.err;
  struct Disconnect {
    std::string device;
    ~Disconnect() { run_command({"nbd-client", "-d", device}, std::chrono::seconds(30)); }
  } disconnect{device};
  auto read = run({"dd", "if=" + device, "of=" + (files_ / "k.raw"), "bs=1M", "count=4",
                   "iflag=direct", "status=none"});
  ASSERT_EQ(read.exit_code, 0) << read.err;
  EXPECT_EQ(read_range(files_ / "k.raw", 0, data_.size()), data_);
  write(files_ / "k-in.raw", std::string(1 << 20, 'k'));
  auto wrote = run({"dd", "if=" + (files_ / "k-in.raw"), "of=" + device, "bs=1M", "seek=2",
                    "oflag=direct", "conv=fsync", "status=none"});
  ASSERT_EQ(wrote.exit_code, 0) << wrote.err;
  EXPECT_EQ(read_range(disk("web1"), 2 << 20, 1 << 20), std::string(1 << 20, 'k'));
}

}  // namespace
}  // namespace keel::testing
