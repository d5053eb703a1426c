// What a storage host exports over NBD to the cluster: each VM's disk
// (export NAME) and its cloud-init seed disk (NAME/seed, read-only), only
// to the host that owns the VM now (/keel/owners/NAME), and to the host a
// live migration takes it to, by their cluster addresses. When the owner
// moves, the grants of the host it left are revoked: that host's sessions
// get EPERM for every write from then on and end once their requests are
// done, giving up the disk's lock (a host cut off, whose lease expired,
// cannot write a disk the VM's new owner writes, nor keep it from opening
// it).
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <utility>

#include "storage/nbd_negotiation.h"
#include "storage/vm_store.h"

namespace keel::cluster {

class ClusterNbdCatalog : public storage::NbdCatalog {
 public:
  // VM name to the cluster addresses of its owner host (and the host it
  // migrates to), read from etcd now (throws when it cannot be).
  using Holders = std::map<std::string, std::set<std::string>>;
  using Owners = std::function<Holders()>;
  ClusterNbdCatalog(storage::VmStore store, Owners owners);

  std::vector<std::string> names_for(const std::string& client) const override;
  Lookup find(const std::string& name, const std::string& client) const override;

  // The owners as etcd had them when the keeper read them: grants to any
  // other host revoked (after a fresh read, so that a grant made since the
  // keeper's read, to a migration's destination say, is not taken back).
  void update(Holders owners);
  // Every grant of `vm` revoked: it runs on the storage host itself now.
  // Returns once their sessions ended (the disk's lock free), or after a
  // few seconds.
  void revoke_all(const std::string& vm);

 private:
  // Whether `client` owns `vm`, asking etcd when the last known owners say no.
  bool owner(const std::string& vm, const std::string& client) const;
  // Under mutex_: the grant's sessions write no more, and are waited for.
  void revoke(const std::string& vm, const std::shared_ptr<std::atomic<bool>>& grant) const;
  // Until no session of a revoked grant of `vm` is left (each holds its
  // flag: the last reference is ours), at most a few seconds.
  void await_closed(const std::string& vm) const;

  storage::VmStore store_;
  Owners read_owners_;
  mutable std::mutex mutex_;
  mutable Holders owners_;
  // (VM, client) to the flag its connections' writes check.
  mutable std::map<std::pair<std::string, std::string>, std::shared_ptr<std::atomic<bool>>> grants_;
  // Revoked grants whose sessions may still hold the disk (VM name to flag).
  mutable std::multimap<std::string, std::shared_ptr<std::atomic<bool>>> closing_;
};

}  // namespace keel::cluster
