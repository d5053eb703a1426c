// What a storage host's agent exports over NBD (cluster/cluster_nbd_catalog.h),
// on a real pool (Btrfs on a loop device, no KVM): a VM's disk and seed
// only to the addresses etcd names as its owner (here the owners come from
// the test, as the agent's read of /keel/owners would give them), and the
// grants of a host the VM left revoked: its sessions write no more and
// end, and the disk's lock with them, before the new owner opens the disk.
#include "cluster/cluster_nbd_catalog.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "common/tcp_endpoint.h"
#include "storage/image_lock.h"
#include "storage/image_store.h"
#include "storage/nbd_server.h"
#include "storage/pool.h"
#include "storage/vm_store.h"
#include "tests/support/nbd_raw_client.h"
#include "tests/support/scratch_btrfs.h"
#include "tests/support/scratch_dir.h"

namespace keel::testing {
namespace {

namespace fs = std::filesystem;
using cluster::ClusterNbdCatalog;
using Verdict = storage::NbdCatalog::Verdict;

// The hosts' cluster addresses: loopback ones, so that the test's clients
// can connect from them.
const std::string kH2 = "127.0.0.2", kH3 = "127.0.0.3";

class ClusterNbdCatalogTest : public ::testing::Test {
 protected:
  ClusterNbdCatalogTest() {
    std::ofstream(files_ / "disk.raw").put('x');
    fs::resize_file(files_ / "disk.raw", 1 << 20);
    std::ofstream(files_ / "kernel") << "kernel";
    storage::ImageStore(pool_).import("img", {files_ / "disk.raw", files_ / "kernel", "", ""});
    storage::VmSpec spec;
    spec.name = "web1";
    spec.image = "img";
    vms_.create(spec);
  }

  // What etcd says now (the catalog asks when its last look says no).
  void set_owners(ClusterNbdCatalog::Holders owners) {
    std::lock_guard lock(mutex_);
    owners_ = std::move(owners);
    unreadable_ = false;
  }
  void make_unreadable() {
    std::lock_guard lock(mutex_);
    unreadable_ = true;
  }
  ClusterNbdCatalog::Holders read_owners() {
    std::lock_guard lock(mutex_);
    ++reads_;
    if (unreadable_) throw std::runtime_error("no quorum (1 of 3 hosts reachable)");
    return owners_;
  }

  ScratchBtrfs volume_{uint64_t{256} << 20};
  ScratchDir files_{"keel-cluster-nbd"};
  storage::Pool pool_ = storage::Pool::init(volume_.mount_point() + "/pool");
  storage::VmStore vms_{pool_};
  std::mutex mutex_;
  ClusterNbdCatalog::Holders owners_;
  bool unreadable_ = false;
  int reads_ = 0;
  ClusterNbdCatalog catalog_{vms_, [this] { return read_owners(); }};
};

TEST_F(ClusterNbdCatalogTest, OnlyTheOwnerSeesAndOpensTheDiskAndItsSeed) {
  set_owners({{"web1", {kH2}}});
  auto disk = catalog_.find("web1", kH2);
  ASSERT_EQ(disk.verdict, Verdict::kOpen);
  EXPECT_FALSE(disk.export_.read_only);
  ASSERT_TRUE(disk.export_.revoked);
  EXPECT_FALSE(disk.export_.revoked->load());
  EXPECT_EQ(disk.export_.path, (vms_.current("web1") / "disk.raw").string());
  auto seed = catalog_.find("web1/seed", kH2);
  ASSERT_EQ(seed.verdict, Verdict::kOpen);
  EXPECT_TRUE(seed.export_.read_only);
  EXPECT_EQ(catalog_.names_for(kH2), (std::vector<std::string>{"web1", "web1/seed"}));

  // Another host: not allowed, and shown nothing.
  EXPECT_EQ(catalog_.find("web1", kH3).verdict, Verdict::kNotAllowed);
  EXPECT_EQ(catalog_.find("web1/seed", kH3).verdict, Verdict::kNotAllowed);
  EXPECT_TRUE(catalog_.names_for(kH3).empty());
  // Names that are no VM of this pool, or no name at all.
  for (const char* name : {"nosuch", "", "/seed", "web1/seed/seed", "../web1", "web1/disk.raw"}) {
    EXPECT_EQ(catalog_.find(name, kH2).verdict, Verdict::kUnknown) << "'" << name << "'";
  }
}

TEST_F(ClusterNbdCatalogTest, AMigrationsTwoEndsBothKeepTheirGrants) {
  set_owners({{"web1", {kH2}}});
  auto source = catalog_.find("web1", kH2).export_.revoked;
  set_owners({{"web1", {kH2, kH3}}});
  auto destination = catalog_.find("web1", kH3).export_.revoked;
  ASSERT_TRUE(destination);
  EXPECT_FALSE(source->load()) << "the source lost its disk as the destination opened it";
  // A look at the owners taken before the destination was named: etcd is
  // asked again before anything is revoked.
  const int reads = reads_;
  catalog_.update({{"web1", {kH2}}});
  EXPECT_GT(reads_, reads);
  EXPECT_FALSE(destination->load());
  EXPECT_FALSE(source->load());
  // Handed over: the source goes.
  set_owners({{"web1", {kH3}}});
  catalog_.update({{"web1", {kH3}}});
  EXPECT_TRUE(source->load());
  EXPECT_FALSE(destination->load());
}

TEST_F(ClusterNbdCatalogTest, AStoppedVmKeepsItsLastGrantUntilItsVmmEnds) {
  set_owners({{"web1", {kH2}}});
  auto grant = catalog_.find("web1", kH2).export_.revoked;
  // No owner at all: the VM stopped; its connection ends with its VMM.
  set_owners({});
  catalog_.update({});
  EXPECT_FALSE(grant->load());
  EXPECT_EQ(catalog_.find("web1", kH2).verdict, Verdict::kNotAllowed);
}

TEST_F(ClusterNbdCatalogTest, OwnersThatCannotBeReadOpenNothing) {
  make_unreadable();
  EXPECT_EQ(catalog_.find("web1", kH2).verdict, Verdict::kNotAllowed);
  EXPECT_EQ(catalog_.find("web1/seed", kH2).verdict, Verdict::kNotAllowed);
}

// Served over NBD: sessions as the storage host's agent runs them.
class ClusterNbdServerTest : public ClusterNbdCatalogTest {
 protected:
  ClusterNbdServerTest() : thread_([this] { server_.run(); }) {}
  ~ClusterNbdServerTest() override {
    server_.stop();
    thread_.join();
  }
  // A client from `address` that opened web1's disk (or tried: `*answer`).
  std::unique_ptr<RawClient> open_from(const std::string& address, uint32_t* answer) {
    auto client = std::make_unique<RawClient>(server_.port(), address);
    client->send(client_flags(storage::nbd::kClientFixedNewstyle));
    *answer = client->go("web1");
    return client;
  }
  std::shared_ptr<ClusterNbdCatalog> shared_ =
      std::make_shared<ClusterNbdCatalog>(vms_, [this] { return read_owners(); });
  storage::NbdServer server_{shared_, parse_host_port("127.0.0.1:0", "test")};
  std::thread thread_;
};

TEST_F(ClusterNbdServerTest, TheNewOwnerOpensTheDiskTheOldOneHeld) {
  set_owners({{"web1", {kH2}}});
  uint32_t answer = 0;
  auto h2 = open_from(kH2, &answer);
  ASSERT_EQ(answer, storage::nbd::kRepAck);
  h2->request(storage::nbd::kCmdWrite, 0, 4, 0, "h2h2");
  EXPECT_EQ(h2->reply_error(), 0u);
  // h3 owns it now (h2 cut off, say, and still connected): h3's open ends
  // h2's session and takes the disk's lock.
  set_owners({{"web1", {kH3}}});
  auto h3 = open_from(kH3, &answer);
  EXPECT_EQ(answer, storage::nbd::kRepAck) << h3->last_message();
  EXPECT_TRUE(h2->closed_by_server()) << "h2's session went on after the VM moved";
  h3->request(storage::nbd::kCmdWrite, 0, 4, 0, "h3h3");
  EXPECT_EQ(h3->reply_error(), 0u);
  auto refused = open_from(kH2, &answer);
  EXPECT_EQ(answer, storage::nbd::kRepErrUnknown);

  // Moved back while nobody opened it anew: the keeper's look ends h3's
  // session, and h2 opens the disk.
  set_owners({{"web1", {kH2}}});
  shared_->update({{"web1", {kH2}}});
  EXPECT_TRUE(h3->closed_by_server()) << "h3's session went on after the VM moved";
  auto back = open_from(kH2, &answer);
  EXPECT_EQ(answer, storage::nbd::kRepAck) << back->last_message();
}

TEST_F(ClusterNbdServerTest, StartedOnItsStorageHostEveryGrantGoes) {
  set_owners({{"web1", {kH2}}});
  uint32_t answer = 0;
  auto h2 = open_from(kH2, &answer);
  ASSERT_EQ(answer, storage::nbd::kRepAck);
  // What the agent does before its own keel-vmm opens the disk: returns
  // once the disk's lock is free.
  shared_->revoke_all("web1");
  storage::ImageLock lock((vms_.current("web1") / "disk.raw").string(), "VM web1");
  EXPECT_TRUE(lock.valid());
  EXPECT_TRUE(h2->closed_by_server());
}

}  // namespace
}  // namespace keel::testing
