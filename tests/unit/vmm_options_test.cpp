#include "vmm/vmm_options.h"

#include <gtest/gtest.h>

#include "common/error.h"

namespace keel {
namespace {

std::string error_of(const std::vector<std::string>& args) {
  try {
    parse_vmm_options(args);
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

TEST(VmmOptions, ParsesEverything) {
  auto o = parse_vmm_options({"--kernel", "k", "--initrd=i", "--cmdline", "job=heartbeat count=3",
                              "--cpus", "2", "--memory", "4G", "--serial", "file=/tmp/s"});
  EXPECT_EQ(o.kernel, "k");
  EXPECT_EQ(o.initrd, "i");
  EXPECT_EQ(o.cmdline, "job=heartbeat count=3");
  EXPECT_EQ(o.cpus, 2u);
  EXPECT_EQ(o.memory, 4ull << 30);
  EXPECT_EQ(o.serial_file, "/tmp/s");
}

TEST(VmmOptions, Defaults) {
  auto o = parse_vmm_options({"--kernel", "k"});
  EXPECT_EQ(o.cpus, 1u);
  EXPECT_EQ(o.memory, 512ull << 20);
  EXPECT_TRUE(o.serial_file.empty());
  EXPECT_TRUE(parse_vmm_options({"--kernel", "k", "--serial", "stdout"}).serial_file.empty());
}

TEST(VmmOptions, HelpNeedsNoKernel) { EXPECT_TRUE(parse_vmm_options({"--help"}).help); }

TEST(VmmOptions, BadInputNamesTheProblem) {
  EXPECT_NE(error_of({}).find("missing --kernel"), std::string::npos);
  EXPECT_NE(error_of({"--kernel", "k", "--bogus"}).find("unknown option '--bogus'"),
            std::string::npos);
  EXPECT_NE(error_of({"--kernel"}).find("--kernel needs a value"), std::string::npos);
  EXPECT_NE(error_of({"--kernel", "k", "--cpus", "0"}).find("--cpus"), std::string::npos);
  EXPECT_NE(error_of({"--kernel", "k", "--cpus", "two"}).find("'two'"), std::string::npos);
  EXPECT_NE(error_of({"--kernel", "k", "--cpus", "256"}).find("too many vCPUs"), std::string::npos);
  EXPECT_NE(error_of({"--kernel", "k", "--memory", "1M"}).find("too small"), std::string::npos);
  EXPECT_NE(error_of({"--kernel", "k", "--memory", "lots"}).find("'lots'"), std::string::npos);
  EXPECT_NE(error_of({"--kernel", "k", "--memory", "16777217"}).find("multiple of 4K"),
            std::string::npos);
  EXPECT_NE(error_of({"--kernel", "k", "--serial", "tcp"}).find("--serial"), std::string::npos);
}

TEST(VmmOptions, VirtioDevicesInOrder) {
  auto o = parse_vmm_options({"--kernel", "k", "--disk", "path=/a.img", "--disk=path=/b.img,readonly=on",
                              "--net", "tap=tap0,mac=52:54:00:ab:CD:ef", "--net", "tap=tap1", "--rng"});
  ASSERT_EQ(o.disks.size(), 2u);
  EXPECT_EQ(o.disks[0].path, "/a.img");
  EXPECT_FALSE(o.disks[0].readonly);
  EXPECT_EQ(o.disks[1].path, "/b.img");
  EXPECT_TRUE(o.disks[1].readonly);
  ASSERT_EQ(o.nets.size(), 2u);
  EXPECT_EQ(o.nets[0].tap, "tap0");
  EXPECT_EQ(o.nets[0].mac, (MacAddress{0x52, 0x54, 0x00, 0xab, 0xcd, 0xef}));
  EXPECT_FALSE(o.nets[1].mac.has_value());
  EXPECT_TRUE(o.rng);
  EXPECT_FALSE(parse_vmm_options({"--kernel", "k"}).rng);
}

TEST(VmmOptions, RestoreTakesTheMachineFromTheSnapshot) {
  auto o = parse_vmm_options({"--restore", "/snap", "--serial", "file=/s", "--api-socket", "/a.sock",
                              "--disk", "path=/d.img"});
  EXPECT_EQ(o.restore_dir, "/snap");
  EXPECT_TRUE(o.kernel.empty());
  EXPECT_EQ(o.api_socket, "/a.sock");
  ASSERT_EQ(o.disks.size(), 1u);
  EXPECT_NE(error_of({"--restore", "/snap", "--memory", "1G"}).find("--memory cannot be used with --restore"),
            std::string::npos);
  EXPECT_NE(error_of({"--restore", "/snap", "--kernel", "k"}).find("--kernel cannot"), std::string::npos);
  EXPECT_NE(error_of({"--restore", "/snap", "--rng"}).find("--rng cannot"), std::string::npos);
  EXPECT_NE(error_of({"--restore="}).find("--restore needs a DIR"), std::string::npos);
}

TEST(VmmOptions, BadDeviceOptionsNameTheProblem) {
  auto err = [](std::vector<std::string> extra) {
    extra.insert(extra.begin(), {"--kernel", "k"});
    return error_of(extra);
  };
  EXPECT_NE(err({"--disk", "readonly=on"}).find("--disk needs path=PATH"), std::string::npos);
  EXPECT_NE(err({"--disk", "/a.img"}).find("not key=value"), std::string::npos);
  EXPECT_NE(err({"--disk", "path=/a,ro=on"}).find("unknown key 'ro'"), std::string::npos);
  EXPECT_NE(err({"--disk", "path=/a,readonly=yes"}).find("expected on or off"), std::string::npos);
  EXPECT_NE(err({"--disk", "path=/a,path=/b"}).find("given twice"), std::string::npos);
  EXPECT_NE(err({"--disk", "path=/a,"}).find("not key=value"), std::string::npos);
  EXPECT_NE(err({"--net", "mac=52:54:00:00:00:01"}).find("tap=NAME"), std::string::npos);
  EXPECT_NE(err({"--net", "tap=a-very-long-tap-name"}).find("tap=NAME"), std::string::npos);
  EXPECT_NE(err({"--net", "tap=t,mac=52:54:00:00:00"}).find("bad MAC"), std::string::npos);
  EXPECT_NE(err({"--net", "tap=t,mac=52:54-00-00-00-01"}).find("bad MAC"), std::string::npos);
  EXPECT_NE(err({"--net", "tap=t,mac=52:54:00:00:0g:01"}).find("bad MAC"), std::string::npos);
  EXPECT_NE(err({"--net", "tap=t,mac=01:00:5e:00:00:01"}).find("multicast"), std::string::npos);
  EXPECT_NE(err({"--rng=on"}).find("--rng takes no value"), std::string::npos);
  std::vector<std::string> many;
  for (int i = 0; i < 25; ++i) many.insert(many.end(), {"--disk", "path=/d" + std::to_string(i)});
  EXPECT_NE(err(many).find("too many virtio devices"), std::string::npos);
}

}  // namespace
}  // namespace keel
