// Images and VMs in a pool on a real Btrfs volume (a loop device this test
// makes and removes): import (raw, qcow2, kernel), create as a snapshot that
// shares the image's extents, the seed disk, snapshot, rollback, clone,
// delete, an image in use, a full volume, and that a failure leaves
// nothing. Label "storage"; needs root, qemu-img and mtools, no KVM.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "common/child_process.h"
#include "common/unique_fd.h"
#include "storage/btrfs_subvolume.h"
#include "storage/image_store.h"
#include "storage/leftover_sweep.h"
#include "storage/pool.h"
#include "storage/raw_disk.h"
#include "storage/vm_store.h"
#include "tests/support/input_error.h"
#include "tests/support/scratch_btrfs.h"
#include "tests/support/scratch_dir.h"

namespace keel::testing {
namespace {

namespace fs = std::filesystem;
using storage::ImageStore;
using storage::Pool;
using storage::VmSpec;
using storage::VmStore;

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// The first `n` bytes (the disks are large and sparse).
std::string read_head(const fs::path& path, size_t n) {
  std::ifstream in(path, std::ios::binary);
  std::string out(n, '\0');
  in.read(out.data(), static_cast<std::streamsize>(n));
  out.resize(static_cast<size_t>(in.gcount()));
  return out;
}

void write_file(const fs::path& path, const std::string& data, uint64_t at = 0) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
  ASSERT_TRUE(fd.valid()) << path;
  ASSERT_EQ(::pwrite(fd.get(), data.data(), data.size(), static_cast<off_t>(at)),
            static_cast<ssize_t>(data.size()));
  ASSERT_EQ(::fsync(fd.get()), 0);
}

std::string random_bytes(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::string out(n, '\0');
  for (auto& c : out) c = static_cast<char>(gen());
  return out;
}

std::vector<std::string> names(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename());
  std::sort(out.begin(), out.end());
  return out;
}

// The physical address of a file's first extent and whether Btrfs marks
// it shared (FIEMAP).
struct FirstExtent {
  uint64_t physical = 0;
  bool shared = false;
};
FirstExtent first_extent(const fs::path& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  EXPECT_TRUE(fd.valid()) << path;
  std::vector<uint8_t> buf(sizeof(fiemap) + sizeof(fiemap_extent));
  auto* map = reinterpret_cast<fiemap*>(buf.data());
  map->fm_length = FIEMAP_MAX_OFFSET;
  map->fm_flags = FIEMAP_FLAG_SYNC;
  map->fm_extent_count = 1;
  EXPECT_EQ(::ioctl(fd.get(), FS_IOC_FIEMAP, map), 0) << path;
  EXPECT_EQ(map->fm_mapped_extents, 1u) << path;
  return {map->fm_extents[0].fe_physical,
          (map->fm_extents[0].fe_flags & FIEMAP_EXTENT_SHARED) != 0};
}

std::string mtype(const fs::path& seed, const std::string& file) {
  auto r = run_command({"mtype", "-i", seed.string(), "::" + file}, std::chrono::seconds(30));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return r.out;
}

class StorageVms : public ::testing::Test {
 protected:
  StorageVms() : pool_(Pool::init(volume_.mount_point() + "/pool")), images_(pool_), vms_(pool_) {}

  // A raw disk with 8 MiB of data at its start, a 32 MiB disk, and a kernel.
  storage::ImageFiles files() {
    const std::string disk = files_ / "disk.raw";
    if (!fs::exists(disk)) {
      write_file(disk, data_);
      fs::resize_file(disk, 32 << 20);
      write_file(files_ / "vmlinuz", "not really a kernel, but a file to copy\n");
      write_file(files_ / "initrd", "an initrd\n");
    }
    return {disk, files_ / "vmlinuz", files_ / "initrd", "console=ttyS0 root=/dev/vda"};
  }

  VmSpec spec(const std::string& name) {
    VmSpec s;
    s.name = name;
    s.image = "base";
    return s;
  }

  ScratchBtrfs volume_{uint64_t{512} << 20};
  ScratchDir files_{"keel-storage-vm-test"};
  const std::string data_ = random_bytes(8 << 20, 1);
  Pool pool_;
  ImageStore images_;
  VmStore vms_;
};

TEST_F(StorageVms, ImportsARawDiskAndAKernelAsAReadOnlyImage) {
  const auto image = images_.import("base", files());
  EXPECT_EQ(image.disk_bytes(), 32u << 20);
  EXPECT_EQ(image.cmdline(), "console=ttyS0 root=/dev/vda");
  const fs::path dir = images_.path("base");
  EXPECT_TRUE(storage::is_subvolume(dir));
  EXPECT_TRUE(storage::subvolume_read_only(dir));
  EXPECT_EQ(names(dir), (std::vector<std::string>{"disk.raw", "image.json", "initrd", "kernel"}));
  EXPECT_EQ(read_head(dir / "disk.raw", data_.size()), data_);
  EXPECT_EQ(fs::file_size(dir / "disk.raw"), 32u << 20);
  // Converted sparse: the 24 MiB of zeros take no room.
  EXPECT_LT(image.allocated_bytes(), 12u << 20);
  EXPECT_EQ(images_.get("base").source(), image.source());
  ASSERT_EQ(images_.list().size(), 1u);
  EXPECT_EQ(names(pool_.images()), (std::vector<std::string>{"base"}));
}

TEST_F(StorageVms, ImportsAQcow2DiskAsRaw) {
  const std::string qcow2 = files_ / "disk.qcow2";
  auto r = run_command({"qemu-img", "convert", "-f", "raw", "-O", "qcow2", files().disk, qcow2},
                       std::chrono::seconds(60));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto image = images_.import("fromqcow", {qcow2, "", "", ""});
  EXPECT_NE(image.source().find("(qcow2)"), std::string::npos) << image.source();
  EXPECT_EQ(image.disk_bytes(), 32u << 20);
  EXPECT_EQ(read_file(images_.path("fromqcow") / "disk.raw"), read_file(files().disk));
}

TEST_F(StorageVms, ImportRefusesWhatItCannotTakeAndLeavesNothing) {
  const auto f = files();
  EXPECT_NE(input_error([&] { images_.import("Bad/Name", f); }).find("not allowed"),
            std::string::npos);
  EXPECT_NE(input_error([&] { images_.import("x", {}); }).find("give a disk, a kernel or both"),
            std::string::npos);
  EXPECT_NE(input_error([&] {
              images_.import("x", {"/nonexistent.raw", "", "", ""});
            }).find("/nonexistent.raw"),
            std::string::npos);
  const std::string odd = files_ / "odd";
  write_file(odd, "1000 bytes are not whole sectors" + std::string(968, 'x'));
  EXPECT_NE(input_error([&] {
              images_.import("x", {odd, "", "", ""});
            }).find("not whole 512-byte sectors"),
            std::string::npos);
  const std::string vmdk = files_ / "disk.vmdk";
  ASSERT_EQ(
      run_command({"qemu-img", "create", "-q", "-f", "vmdk", vmdk, "16M"}, std::chrono::seconds(30))
          .exit_code,
      0);
  EXPECT_NE(input_error([&] {
              images_.import("x", {vmdk, "", "", ""});
            }).find("vmdk format"),
            std::string::npos);
  const std::string overlay = files_ / "overlay.qcow2";
  ASSERT_EQ(
      run_command({"qemu-img", "create", "-q", "-f", "qcow2", "-b", f.disk, "-F", "raw", overlay},
                  std::chrono::seconds(30))
          .exit_code,
      0);
  EXPECT_NE(input_error([&] {
              images_.import("x", {overlay, "", "", ""});
            }).find("overlay on"),
            std::string::npos);
  // A qcow2 whose data lives in another file names a host file as well.
  const std::string external = files_ / "external.qcow2";
  ASSERT_EQ(run_command({"qemu-img", "create", "-q", "-f", "qcow2", "-o",
                         "data_file=" + f.disk + ",data_file_raw=on", external, "32M"},
                        std::chrono::seconds(30))
                .exit_code,
            0);
  EXPECT_NE(input_error([&] {
              images_.import("x", {external, "", "", ""});
            }).find("keeps its data in an external file"),
            std::string::npos);
  images_.import("base", f);
  EXPECT_NE(input_error([&] { images_.import("base", f); }).find("has an image named base already"),
            std::string::npos);
  EXPECT_EQ(names(pool_.images()), (std::vector<std::string>{"base"}));
}

TEST_F(StorageVms, ImportRefusesAVolumeTooFullAndLeavesNothing) {
  // 600 MiB of data do not fit a 512 MiB volume.
  const std::string big = files_ / "big.raw";
  write_file(big, random_bytes(1 << 20, 2));
  for (int i = 1; i < 600; ++i) write_file(big, random_bytes(1 << 20, 2 + i), uint64_t(i) << 20);
  const std::string message = input_error([&] { images_.import("big", {big, "", "", ""}); });
  EXPECT_NE(message.find("too full"), std::string::npos) << message;
  EXPECT_NE(message.find("importing image big"), std::string::npos) << message;
  EXPECT_TRUE(names(pool_.images()).empty());
}

TEST_F(StorageVms, CreateIsASnapshotThatSharesTheImagesExtents) {
  images_.import("base", files());
  VmSpec s = spec("web1");
  s.disk_bytes = 1ull << 30;
  const auto vm = vms_.create(s);
  const fs::path disk = vms_.current("web1") / "disk.raw";
  EXPECT_EQ(fs::file_size(disk), 1ull << 30);
  EXPECT_EQ(read_head(disk, data_.size()), data_);
  const auto in_image = first_extent(images_.path("base") / "disk.raw");
  const auto in_vm = first_extent(disk);
  EXPECT_EQ(in_vm.physical, in_image.physical) << "the VM's disk is a copy, not a snapshot";
  EXPECT_TRUE(in_vm.shared);
  EXPECT_TRUE(storage::is_subvolume(vms_.current("web1")));
  EXPECT_FALSE(storage::subvolume_read_only(vms_.current("web1")));
  // Disks are nodatacow, the image's and the VM's; files made later too.
  EXPECT_TRUE(storage::is_nodatacow(images_.path("base") / "disk.raw"));
  EXPECT_TRUE(storage::is_nodatacow(disk));
  EXPECT_TRUE(storage::is_nodatacow(vms_.current("web1") / "seed.img"));
  EXPECT_EQ(names(vms_.current("web1")),
            (std::vector<std::string>{"disk.raw", "initrd", "kernel", "seed.img", "vm.json"}));
  // A write to the VM's disk leaves the image as it was.
  write_file(disk, "written by the VM", 0);
  EXPECT_EQ(read_head(images_.path("base") / "disk.raw", data_.size()), data_);
  EXPECT_EQ(vms_.get("web1").mac(), vm.mac());
  EXPECT_EQ(vm.cmdline(), "console=ttyS0 root=/dev/vda");
  EXPECT_EQ(images_.users("base"), (std::vector<std::string>{"web1"}));
}

TEST_F(StorageVms, TheSeedDiskCarriesHostnameAddressKeysOrTheOperatorsUserData) {
  images_.import("base", files());
  VmSpec s = spec("web1");
  s.hostname = "web1.example.org";
  s.address = "10.0.9.5/24";
  s.gateway = "10.0.9.1";
  s.ssh_keys = {"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKeel it's a key"};
  s.tap = "ktap1";
  const auto vm = vms_.create(s);
  const fs::path seed = vms_.current("web1") / "seed.img";
  auto label = run_command({"blkid", "-p", "-o", "value", "-s", "LABEL", seed.string()},
                           std::chrono::seconds(30));
  EXPECT_EQ(label.out, "cidata\n");
  const std::string meta = mtype(seed, "meta-data");
  EXPECT_NE(meta.find("local-hostname: 'web1.example.org'"), std::string::npos) << meta;
  EXPECT_NE(meta.find("instance-id: '" + vm.instance_id() + "'"), std::string::npos) << meta;
  const std::string net = mtype(seed, "network-config");
  EXPECT_NE(net.find("macaddress: '" + vm.mac() + "'"), std::string::npos) << net;
  EXPECT_NE(net.find("- '10.0.9.5/24'"), std::string::npos) << net;
  EXPECT_NE(net.find("via: '10.0.9.1'"), std::string::npos) << net;
  const std::string user = mtype(seed, "user-data");
  EXPECT_EQ(user.rfind("#cloud-config\n", 0), 0u) << user;
  // YAML's single quotes: the key's own quote doubled.
  EXPECT_NE(user.find("- 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKeel it''s a key'"),
            std::string::npos)
      << user;

  VmSpec own = spec("web2");
  own.user_data = "#cloud-config\nruncmd:\n  - echo mine\n";
  vms_.create(own);
  EXPECT_EQ(mtype(vms_.current("web2") / "seed.img", "user-data"), *own.user_data);
  EXPECT_NE(mtype(vms_.current("web2") / "seed.img", "network-config").find("dhcp4: true"),
            std::string::npos);
}

TEST_F(StorageVms, CreateRefusesBadSettingsAndLeavesNothing) {
  images_.import("base", files());
  images_.import("nokernel", {files().disk, "", "", ""});
  auto refused = [&](VmSpec s, const std::string& want) {
    const std::string message = input_error([&] { vms_.create(s); });
    EXPECT_NE(message.find(want), std::string::npos) << message;
  };
  VmSpec s = spec("web1");
  s.image = "none";
  refused(s, "no image named none");
  s.image = "nokernel";
  refused(s, "has no kernel");
  s = spec("web1");
  s.disk_bytes = 1 << 20;
  refused(s, "smaller than image base's disk");
  s = spec("web1");
  s.address = "10.0.0.300/24";
  refused(s, "not ADDRESS/PREFIX");
  s.address = "10.0.0.3";
  refused(s, "not ADDRESS/PREFIX");
  s = spec("web1");
  s.gateway = "10.0.0.1";
  refused(s, "a gateway needs an address");
  s = spec("web1");
  s.hostname = "-bad-";
  refused(s, "not a hostname");
  s = spec("web1");
  s.ssh_keys = {"not a key"};
  refused(s, "not a public key line");
  s = spec("web1");
  s.cpus = 0;
  refused(s, "--cpus");
  s = spec("under_score");  // a pool name, but not a hostname
  refused(s, "not a hostname");
  EXPECT_TRUE(names(pool_.vms()).empty());

  // A failure after the snapshot was taken: the image's disk carries the
  // immutable flag into the snapshot, so growing it fails half-way.
  storage::set_subvolume_read_only(images_.path("base"), false);
  const std::string disk = (images_.path("base") / "disk.raw").string();
  ASSERT_EQ(run_command({"chattr", "+i", disk}, std::chrono::seconds(10)).exit_code, 0);
  storage::set_subvolume_read_only(images_.path("base"), true);
  s = spec("web1");
  s.disk_bytes = 1ull << 30;
  EXPECT_ANY_THROW(vms_.create(s));
  EXPECT_TRUE(names(pool_.vms()).empty()) << "a failed create left something behind";
  auto list =
      run_command({"btrfs", "subvolume", "list", volume_.mount_point()}, std::chrono::seconds(10));
  EXPECT_EQ(list.out.find("pool/vms"), std::string::npos) << "a failed create left a subvolume:\n"
                                                          << list.out;
  storage::set_subvolume_read_only(images_.path("base"), false);
  run_command({"chattr", "-i", disk}, std::chrono::seconds(10));
}

TEST_F(StorageVms, SnapshotRollbackAndDeleteSnapshot) {
  images_.import("base", files());
  vms_.create(spec("web1"));
  const fs::path disk = vms_.current("web1") / "disk.raw";
  write_file(disk, "before");
  vms_.snapshot("web1", "s1");
  write_file(disk, "after!");
  EXPECT_EQ(read_head(disk, 6), "after!");
  const fs::path snap = vms_.path("web1") / "snapshots" / "s1";
  EXPECT_TRUE(storage::subvolume_read_only(snap));
  EXPECT_NE(input_error([&] { vms_.snapshot("web1", "s1"); }).find("already"), std::string::npos);
  ASSERT_EQ(vms_.snapshots("web1").size(), 1u);
  EXPECT_EQ(vms_.snapshots("web1")[0].name, "s1");

  vms_.rollback("web1", "s1");
  EXPECT_EQ(read_head(disk, 6), "before");
  EXPECT_FALSE(storage::subvolume_read_only(vms_.current("web1")));
  EXPECT_EQ(names(vms_.path("web1")), (std::vector<std::string>{"current", "snapshots"}));
  // Rolled back twice: the snapshot is still there, unchanged.
  write_file(disk, "again!");
  vms_.rollback("web1", "s1");
  EXPECT_EQ(read_head(disk, 6), "before");
  EXPECT_NE(input_error([&] { vms_.rollback("web1", "s2"); }).find("no snapshot named s2"),
            std::string::npos);
  vms_.delete_snapshot("web1", "s1");
  EXPECT_TRUE(vms_.snapshots("web1").empty());
}

TEST_F(StorageVms, CloneIsANewMachineOnTheSameExtents) {
  images_.import("base", files());
  VmSpec s = spec("web1");
  s.tap = "ktap1";
  s.user_data = "#cloud-config\n";
  const auto first = vms_.create(s);
  write_file(vms_.current("web1") / "disk.raw", "web1's own data");
  vms_.snapshot("web1", "s1");
  write_file(vms_.current("web1") / "disk.raw", "web1's newer data");

  const auto copy = vms_.clone("web1", "web2");
  EXPECT_EQ(copy.name(), "web2");
  EXPECT_EQ(copy.hostname(), "web2");
  EXPECT_NE(copy.mac(), first.mac());
  EXPECT_NE(copy.instance_id(), first.instance_id());
  EXPECT_EQ(copy.tap(), "ktap1");
  EXPECT_EQ(read_head(vms_.current("web2") / "disk.raw", 17), "web1's newer data");
  EXPECT_NE(mtype(vms_.current("web2") / "seed.img", "meta-data").find("local-hostname: 'web2'"),
            std::string::npos);
  EXPECT_EQ(mtype(vms_.current("web2") / "seed.img", "user-data"), "#cloud-config\n");
  EXPECT_TRUE(vms_.snapshots("web2").empty());

  const auto old = vms_.clone("web1", "web3", "s1", "old-web1");
  EXPECT_EQ(old.hostname(), "old-web1");
  EXPECT_EQ(read_head(vms_.current("web3") / "disk.raw", 15), "web1's own data");
  EXPECT_NE(input_error([&] { vms_.clone("web1", "web2"); }).find("has a VM named web2 already"),
            std::string::npos);
  EXPECT_EQ(vms_.list().size(), 3u);
}

// vm.json is read back as untrusted input: what would reach keel-vmm's
// command line or the seed disk is checked again.
TEST_F(StorageVms, ATamperedRecordIsRefused) {
  images_.import("base", files());
  VmSpec s = spec("web1");
  s.tap = "ktap1";
  const auto vm = vms_.create(s);
  const fs::path record = vms_.current("web1") / "vm.json";
  const std::string original = read_file(record);
  auto tamper = [&](const std::string& from, const std::string& to) {
    std::string text = original;
    const auto at = text.find(from);
    ASSERT_NE(at, std::string::npos) << from;
    text.replace(at, from.size(), to);
    std::ofstream(record, std::ios::binary | std::ios::trunc) << text;
  };
  tamper("\"ktap1\"", "\"ktap1,script=x\"");
  EXPECT_NE(input_error([&] { vms_.get("web1"); }).find("is not a network interface name"),
            std::string::npos);
  tamper("\"" + vm.mac() + "\"", "\"not a mac\"");
  EXPECT_NE(input_error([&] { vms_.get("web1"); }).find("vm.json: MAC"), std::string::npos);
  tamper("\"image\": \"base\"", "\"image\": \"../../etc\"");
  EXPECT_NE(input_error([&] { vms_.get("web1"); }).find("not allowed"), std::string::npos);
  std::ofstream(record, std::ios::binary | std::ios::trunc) << original;
  EXPECT_EQ(vms_.get("web1").tap(), "ktap1");
}

// A disk a keel-vmm (or the NBD server) holds is not deleted or rolled
// back under it: the image's lock is what they take.
TEST_F(StorageVms, AVmWhoseDiskIsInUseIsNotDeletedOrRolledBack) {
  images_.import("base", files());
  vms_.create(spec("web1"));
  vms_.snapshot("web1", "s1");
  {
    storage::RawDisk held({.path = (vms_.current("web1") / "disk.raw").string()});
    EXPECT_NE(input_error([&] {
                vms_.remove("web1");
              }).find("VM web1 cannot be deleted: its disk is in use"),
              std::string::npos);
    EXPECT_NE(input_error([&] {
                vms_.rollback("web1", "s1");
              }).find("VM web1 cannot be rolled back: its disk is in use"),
              std::string::npos);
    EXPECT_EQ(names(vms_.path("web1")), (std::vector<std::string>{"current", "snapshots"}));
  }
  vms_.rollback("web1", "s1");
  vms_.remove("web1");
  EXPECT_TRUE(names(pool_.vms()).empty());
}

// A PID that was a process of ours and is no more.
pid_t dead_pid() {
  const pid_t pid = ::fork();
  if (pid == 0) ::_exit(0);
  ::waitpid(pid, nullptr, 0);
  return pid;
}

TEST_F(StorageVms, LeftoversOfADeadKeelctlAreUndoneOrFinished) {
  images_.import("base", files());
  vms_.create(spec("web1"));
  write_file(vms_.current("web1") / "disk.raw", "before");
  vms_.snapshot("web1", "s1");
  const std::string dead = std::to_string(dead_pid());
  const std::string alive = std::to_string(::getpid());
  // An import and a create that never finished, a delete half done, and a
  // rollback stopped between its two renames (no current).
  storage::create_subvolume((pool_.images() / (".import-x-" + dead)).string());
  fs::create_directory(pool_.vms() / (".create-y-" + dead));
  storage::create_subvolume((pool_.vms() / (".create-y-" + dead) / "current").string());
  vms_.create(spec("gone"));
  fs::rename(vms_.path("gone"), pool_.vms() / (".delete-gone-" + dead));
  fs::rename(vms_.current("web1"), vms_.path("web1") / (".old-" + dead));
  storage::snapshot_subvolume((vms_.path("web1") / "snapshots" / "s1").string(),
                              (vms_.path("web1") / (".rollback-" + dead)).string(), false);
  // Another process at work: left alone.
  fs::create_directory(pool_.vms() / (".create-busy-" + alive));

  const auto done = storage::sweep_leftovers(pool_);
  EXPECT_EQ(done.size(), 5u);
  EXPECT_EQ(names(vms_.path("web1")), (std::vector<std::string>{"current", "snapshots"}));
  EXPECT_EQ(read_head(vms_.current("web1") / "disk.raw", 6), "before");
  EXPECT_EQ(vms_.get("web1").name(), "web1");
  std::vector<std::string> hidden;
  for (const auto& dir : {pool_.images(), pool_.vms()}) {
    for (const auto& e : fs::directory_iterator(dir)) {
      if (e.path().filename().string()[0] == '.') hidden.push_back(e.path().filename());
    }
  }
  EXPECT_EQ(hidden, (std::vector<std::string>{".create-busy-" + alive}));
  fs::remove(pool_.vms() / (".create-busy-" + alive));
  EXPECT_TRUE(storage::sweep_leftovers(pool_).empty());
}

TEST_F(StorageVms, AnImageInUseIsKeptAndDeletingTheVmsFreesIt) {
  images_.import("base", files());
  vms_.create(spec("web1"));
  vms_.create(spec("web2"));
  vms_.snapshot("web1", "s1");
  const std::string message = input_error([&] { images_.remove("base"); });
  EXPECT_NE(message.find("VMs web1, web2 use it"), std::string::npos) << message;
  vms_.remove("web1");
  EXPECT_NE(input_error([&] { images_.remove("base"); }).find("VM web2 uses it"),
            std::string::npos);
  vms_.remove("web2");
  EXPECT_TRUE(names(pool_.vms()).empty());
  images_.remove("base");
  EXPECT_TRUE(names(pool_.images()).empty());
  auto list =
      run_command({"btrfs", "subvolume", "list", volume_.mount_point()}, std::chrono::seconds(10));
  EXPECT_EQ(list.out, "") << "subvolumes left behind";
  EXPECT_NE(input_error([&] { vms_.get("web1"); }).find("no VM named web1"), std::string::npos);
}

}  // namespace
}  // namespace keel::testing
