#include "vmm/config/vmm_options.h"

#include <gtest/gtest.h>

#include <functional>

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
  EXPECT_EQ(o.config.kernel(), "k");
  EXPECT_EQ(o.config.initrd(), "i");
  EXPECT_EQ(o.config.cmdline(), "job=heartbeat count=3");
  EXPECT_EQ(o.config.cpus(), 2u);
  EXPECT_EQ(o.config.memory(), 4ull << 30);
  EXPECT_EQ(o.serial_file, "/tmp/s");
}

TEST(VmmOptions, Defaults) {
  auto o = parse_vmm_options({"--kernel", "k"});
  EXPECT_EQ(o.config.cpus(), 1u);
  EXPECT_EQ(o.config.memory(), 512ull << 20);
  EXPECT_TRUE(o.serial_file.empty());
  EXPECT_TRUE(parse_vmm_options({"--kernel", "k", "--serial", "stdout"}).serial_file.empty());
}

TEST(VmmOptions, HelpNeedsNoKernel) {
  EXPECT_TRUE(parse_vmm_options({"--help"}).help);
}

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
  auto o = parse_vmm_options({"--kernel", "k", "--disk", "path=/a.img",
                              "--disk=path=/images/a-rather-long-image-name.raw,readonly=on",
                              "--disk", "path=/c.img,serial=data-1", "--net",
                              "tap=tap0,mac=52:54:00:ab:CD:ef", "--net", "tap=tap1", "--rng"});
  const auto& c = o.config;
  ASSERT_EQ(c.disks_size(), 3);
  EXPECT_EQ(c.disks(0).path(), "/a.img");
  EXPECT_FALSE(c.disks(0).readonly());
  EXPECT_EQ(c.disks(1).path(), "/images/a-rather-long-image-name.raw");
  EXPECT_TRUE(c.disks(1).readonly());
  // The serial the guest reads, filled in so that a snapshot keeps it:
  // the file name's first 20 bytes unless given.
  EXPECT_EQ(c.disks(0).serial(), "a.img");
  EXPECT_EQ(c.disks(1).serial(), "a-rather-long-image-");
  EXPECT_EQ(c.disks(2).serial(), "data-1");
  ASSERT_EQ(c.nets_size(), 2);
  EXPECT_EQ(c.nets(0).tap(), "tap0");
  EXPECT_EQ(c.nets(0).mac(), std::string("\x52\x54\x00\xab\xcd\xef", 6));
  // A MAC derived from the tap's name: the same one every start, locally
  // administered and unicast.
  ASSERT_EQ(c.nets(1).mac().size(), 6u);
  EXPECT_EQ(c.nets(1).mac(),
            parse_vmm_options({"--kernel", "k", "--net", "tap=tap1"}).config.nets(0).mac());
  EXPECT_EQ(static_cast<uint8_t>(c.nets(1).mac()[0]) & 3, 2);
  EXPECT_NE(c.nets(1).mac(),
            parse_vmm_options({"--kernel", "k", "--net", "tap=tap2"}).config.nets(0).mac());
  EXPECT_TRUE(c.rng());
  EXPECT_FALSE(parse_vmm_options({"--kernel", "k"}).config.rng());
}

TEST(VmmOptions, RestoreTakesTheMachineFromTheSnapshot) {
  auto o = parse_vmm_options({"--restore", "/snap", "--serial", "file=/s", "--api-socket",
                              "/a.sock", "--disk", "path=/d.img"});
  EXPECT_EQ(o.restore_dir, "/snap");
  EXPECT_TRUE(o.config.kernel().empty());
  EXPECT_EQ(o.api_socket, "/a.sock");
  ASSERT_EQ(o.config.disks_size(), 1);
  // Left for the snapshot to fill in.
  EXPECT_TRUE(o.config.disks(0).serial().empty());
  EXPECT_NE(error_of({"--restore", "/snap", "--memory", "1G"})
                .find("--memory cannot be used with --restore"),
            std::string::npos);
  EXPECT_NE(error_of({"--restore", "/snap", "--kernel", "k"}).find("--kernel cannot"),
            std::string::npos);
  EXPECT_NE(error_of({"--restore", "/snap", "--rng"}).find("--rng cannot"), std::string::npos);
  EXPECT_NE(error_of({"--restore="}).find("--restore needs a DIR"), std::string::npos);
}

TEST(VmmOptions, ReplicaOfTakesTheMachineFromTheActive) {
  auto o = parse_vmm_options(
      {"--replica-of", "tcp:127.0.0.1:0", "--disk", "path=/d.img", "--api-socket", "/a.sock"});
  EXPECT_EQ(o.replica_of, "tcp:127.0.0.1:0");
  EXPECT_TRUE(o.streamed());
  EXPECT_TRUE(o.config.kernel().empty());
  EXPECT_NE(error_of({"--replica-of", "tcp:127.0.0.1:0", "--cpus", "2"})
                .find("--cpus cannot be used with --replica-of"),
            std::string::npos);
  EXPECT_EQ(error_of({"--replica-of", "tcp:127.0.0.1:0", "--incoming", "tcp:127.0.0.1:0"}),
            "--restore, --incoming and --replica-of exclude each other");
  EXPECT_EQ(error_of({"--replica-of="}), "--replica-of needs tcp:ADDR:PORT");
  EXPECT_FALSE(parse_vmm_options({"--kernel", "k"}).streamed());
}

TEST(VmmOptions, BadDeviceOptionsNameTheProblem) {
  auto err = [](std::vector<std::string> extra) {
    extra.insert(extra.begin(), {"--kernel", "k"});
    return error_of(extra);
  };
  EXPECT_NE(err({"--disk", "readonly=on"}).find("--disk needs one of path=PATH and nbd="),
            std::string::npos);
  EXPECT_NE(err({"--disk", "path=/a,nbd=tcp:1.2.3.4:1/x"}).find("needs one of"), std::string::npos);
  EXPECT_NE(err({"--disk", "path=/a,timeout=3"}).find("timeout= is for NBD disks"),
            std::string::npos);
  EXPECT_NE(err({"--disk", "nbd=tcp:1.2.3.4:1/x,timeout=0"}).find("seconds, 1 to 3600"),
            std::string::npos);
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
  EXPECT_NE(err({"--disk", "path=/a,serial="}).find("serial= needs 1 to 20 bytes"),
            std::string::npos);
  EXPECT_NE(err({"--disk", "path=/a,serial=123456789012345678901"}).find("longer than 20 bytes"),
            std::string::npos);
  EXPECT_NE(err({"--rng=on"}).find("--rng takes no value"), std::string::npos);
  std::vector<std::string> many;
  for (int i = 0; i < 25; ++i) many.insert(many.end(), {"--disk", "path=/d" + std::to_string(i)});
  EXPECT_NE(err(many).find("too many virtio devices"), std::string::npos);
}

namespace st = ::keel::state::v1;

st::VmConfig snapshot_config() {
  return parse_vmm_options({"--kernel", "k", "--cpus", "2", "--disk", "path=/old/a.img", "--disk",
                            "path=/old/b.img,readonly=on,serial=b", "--net", "tap=old0"})
      .config;
}

std::string restore_error(std::vector<std::string> args, const st::VmConfig& snapshot) {
  args.insert(args.begin(), {"--restore", "/snap"});
  try {
    config_for_restore(parse_vmm_options(args), snapshot);
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

TEST(VmmOptions, RestoreReplacesHostResourcesAndKeepsWhatTheGuestSees) {
  const st::VmConfig snapshot = snapshot_config();
  // The snapshot's own paths and taps are never used: a crafted snapshot
  // must not pick /dev/sda or another VM's image.
  EXPECT_NE(restore_error({}, snapshot).find("the snapshot has 2 disks: name each with --disk"),
            std::string::npos);
  EXPECT_NE(restore_error({"--disk", "path=/x", "--disk", "path=/y,readonly=on"}, snapshot)
                .find("the snapshot has 1 network adapters: name each with --net tap=NAME"),
            std::string::npos);
  auto same = config_for_restore(
      parse_vmm_options({"--restore", "/snap", "--disk", "path=/old/a.img", "--disk",
                         "path=/old/b.img,readonly=on", "--net", "tap=old0"}),
      snapshot);
  EXPECT_EQ(same.SerializeAsString(), snapshot.SerializeAsString());

  auto moved = config_for_restore(
      parse_vmm_options({"--restore", "/snap", "--disk", "path=/new/copy.img", "--disk",
                         "path=/new/b.img,readonly=on", "--net", "tap=new0"}),
      snapshot);
  EXPECT_EQ(moved.cpus(), 2u);
  EXPECT_EQ(moved.disks(0).path(), "/new/copy.img");
  EXPECT_EQ(moved.disks(0).serial(), "a.img")
      << "the guest's disk ID must not follow the copy's name";
  EXPECT_EQ(moved.disks(1).serial(), "b");
  EXPECT_EQ(moved.nets(0).tap(), "new0");
  EXPECT_EQ(moved.nets(0).mac(), snapshot.nets(0).mac());

  EXPECT_NE(restore_error({"--disk", "path=/x"}, snapshot)
                .find("--disk given 1 times; the snapshot has 2"),
            std::string::npos);
  EXPECT_NE(restore_error({"--disk", "path=/x", "--disk", "path=/y"}, snapshot)
                .find("--disk /y: the snapshot's disk 1 is read-only"),
            std::string::npos);
  EXPECT_NE(
      restore_error({"--disk", "path=/x,serial=other", "--disk", "path=/y,readonly=on"}, snapshot)
          .find("by serial \"a.img\""),
      std::string::npos);
  EXPECT_NE(restore_error({"--disk", "path=/x", "--disk", "path=/y,readonly=on", "--net",
                           "tap=t,mac=52:54:00:00:00:01"},
                          snapshot)
                .find("the guest knows adapter 0 by MAC"),
            std::string::npos);
}

TEST(VmmOptions, ASnapshotsConfigurationIsCheckedAsTheCommandLineIs) {
  auto refusal = [](const std::function<void(st::VmConfig&)>& spoil) {
    st::VmConfig c = snapshot_config();
    spoil(c);
    try {
      config_for_restore(parse_vmm_options({"--restore", "/snap", "--disk", "path=/a", "--disk",
                                            "path=/b,readonly=on", "--net", "tap=t0"}),
                         c);
    } catch (const InputError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_EQ(refusal([](st::VmConfig&) {}), "");
  EXPECT_EQ(refusal([](st::VmConfig& c) { c.set_cpus(0); }), "snapshot: no vCPUs");
  EXPECT_NE(refusal([](st::VmConfig& c) { c.set_cpus(300); }).find("snapshot: too many vCPUs"),
            std::string::npos);
  EXPECT_NE(refusal([](st::VmConfig& c) {
              c.set_memory((32ull << 20) + 1);
            }).find("snapshot: guest memory must be"),
            std::string::npos);
  EXPECT_NE(refusal([](st::VmConfig& c) { c.set_memory(1ull << 50); }).find("beyond"),
            std::string::npos);
  EXPECT_NE(refusal([](st::VmConfig& c) {
              c.mutable_disks(1)->set_serial(std::string(21, 's'));
            }).find("snapshot: disk 1: serial"),
            std::string::npos);
  EXPECT_NE(
      refusal([](st::VmConfig& c) { c.mutable_nets(0)->set_mac("abc"); }).find("6 bytes, not 3"),
      std::string::npos);
  EXPECT_NE(refusal([](st::VmConfig& c) {
              c.mutable_nets(0)->set_mac(std::string("\x01\0\0\0\0\1", 6));
            }).find("multicast"),
            std::string::npos);
  EXPECT_NE(refusal([](st::VmConfig& c) {
              c.mutable_nets(0)->set_tap(std::string(16, 't'));
            }).find("snapshot: network adapter 0 needs tap=NAME"),
            std::string::npos);
  EXPECT_NE(refusal([](st::VmConfig& c) {
              for (int i = 0; i < 23; ++i) c.add_disks()->set_path("/d");
            }).find("too many virtio devices"),
            std::string::npos);
}

}  // namespace
}  // namespace keel
