// What a storage host's agent exports over NBD (cluster/cluster_nbd_catalog.h),
// on a real pool (Btrfs on a loop device, no KVM): a VM's disk and seed
// only to the addresses etcd names as its owner (here the owners come from
// the test, as the agent's read of /keel/owners would give them), and the
// grants of a host the VM left revoked, its open connections' writes
// refused from then on.
#include "cluster/cluster_nbd_catalog.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <mutex>
#include <stdexcept>

#include "storage/image_store.h"
#include "storage/pool.h"
#include "storage/vm_store.h"
#include "tests/support/scratch_btrfs.h"
#include "tests/support/scratch_dir.h"

namespace keel::testing {
namespace {

namespace fs = std::filesystem;
using cluster::ClusterNbdCatalog;
using Verdict = storage::NbdCatalog::Verdict;

const std::string kH2 = "10.77.0.2", kH3 = "10.77.0.3";

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

TEST_F(ClusterNbdCatalogTest, AnOwnerMovingRevokesTheHostItLeft) {
  set_owners({{"web1", {kH2}}});
  auto old_grant = catalog_.find("web1", kH2).export_.revoked;
  ASSERT_TRUE(old_grant);
  // The VM's new owner opens its disk (the last look had h2: etcd is asked
  // again): h2's connection writes no more.
  set_owners({{"web1", {kH3}}});
  auto new_grant = catalog_.find("web1", kH3);
  ASSERT_EQ(new_grant.verdict, Verdict::kOpen);
  EXPECT_TRUE(old_grant->load()) << "h2 may still write a disk h3 owns";
  EXPECT_FALSE(new_grant.export_.revoked->load());
  EXPECT_EQ(catalog_.find("web1", kH2).verdict, Verdict::kNotAllowed);

  // Moved while nobody opened it anew: the keeper's look revokes it.
  auto h3_grant = new_grant.export_.revoked;
  set_owners({{"web1", {kH2}}});
  catalog_.update({{"web1", {kH2}}});
  EXPECT_TRUE(h3_grant->load());
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

TEST_F(ClusterNbdCatalogTest, StartedOnItsStorageHostEveryGrantGoes) {
  set_owners({{"web1", {kH2, kH3}}});
  auto a = catalog_.find("web1", kH2).export_.revoked;
  auto b = catalog_.find("web1", kH3).export_.revoked;
  catalog_.revoke_all("web1");
  EXPECT_TRUE(a->load());
  EXPECT_TRUE(b->load());
}

}  // namespace
}  // namespace keel::testing
