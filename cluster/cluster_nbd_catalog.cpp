#include "cluster/cluster_nbd_catalog.h"

#include <chrono>
#include <filesystem>
#include <thread>
#include <vector>

#include "common/log.h"
#include "storage/pool_nbd_catalog.h"

namespace keel::cluster {

namespace fs = std::filesystem;

namespace {
const std::string kSeedSuffix = "/seed";
// A revoked session ends once its requests are done (storage/nbd_connection.cpp
// looks at its grant every 200 ms): far less than this, unless the disk hangs.
constexpr auto kCloseWait = std::chrono::seconds(5);
}  // namespace

ClusterNbdCatalog::ClusterNbdCatalog(storage::VmStore store, Owners owners)
    : store_(std::move(store)), read_owners_(std::move(owners)) {}

bool ClusterNbdCatalog::owner(const std::string& vm, const std::string& client) const {
  {
    std::lock_guard lock(mutex_);
    auto it = owners_.find(vm);
    if (it != owners_.end() && it->second.count(client)) return true;
  }
  // A start a moment ago: the owners read once a second may not have it yet.
  Holders now;
  try {
    now = read_owners_();
  } catch (const std::exception& e) {
    log::warning("nbd: cannot read the VMs' owners (" + std::string(e.what()) + "): " + client +
                 " refused " + vm);
    return false;
  }
  auto it = now.find(vm);
  const bool yes = it != now.end() && it->second.count(client);
  std::lock_guard lock(mutex_);
  owners_[vm] = it != now.end() ? it->second : std::set<std::string>{};
  return yes;
}

std::vector<std::string> ClusterNbdCatalog::names_for(const std::string& client) const {
  std::vector<std::string> names;
  std::lock_guard lock(mutex_);
  for (const auto& [vm, addresses] : owners_) {
    if (addresses.count(client)) names.insert(names.end(), {vm, vm + kSeedSuffix});
  }
  return names;
}

storage::NbdCatalog::Lookup ClusterNbdCatalog::find(const std::string& name,
                                                    const std::string& client) const {
  const bool seed =
      name.size() > kSeedSuffix.size() &&
      name.compare(name.size() - kSeedSuffix.size(), kSeedSuffix.size(), kSeedSuffix) == 0;
  const std::string vm = seed ? name.substr(0, name.size() - kSeedSuffix.size()) : name;
  Lookup lookup;
  try {
    storage::check_pool_name("VM", vm);
    store_.get(vm);
  } catch (const std::exception&) {
    return lookup;  // not a VM of this pool
  }
  if (!owner(vm, client)) {
    lookup.verdict = Verdict::kNotAllowed;
    return lookup;
  }
  if (seed) {
    const fs::path path = store_.current(vm) / "seed.img";
    std::error_code ec;
    if (!fs::is_regular_file(fs::symlink_status(path, ec))) return lookup;
    const auto size = fs::file_size(path, ec);
    if (ec) return lookup;
    lookup.verdict = Verdict::kOpen;
    lookup.export_ = {name, path.string(), "seed disk of Keel VM " + vm, size, true, nullptr};
  } else {
    lookup = storage::PoolNbdCatalog(store_, {{vm, {client}}}).find(vm, client);
    if (lookup.verdict != Verdict::kOpen) return lookup;
  }
  std::unique_lock lock(mutex_);
  // The VM's new owner opening its disk: whoever had it before (and is not
  // the other end of a migration) writes no more.
  const std::set<std::string> holders = owners_[vm];
  for (auto it = grants_.begin(); it != grants_.end();) {
    if (it->first.first == vm && it->first.second != client && !holders.count(it->first.second)) {
      log::warning("nbd: VM " + vm + " opened by its owner " + client + ": writes from " +
                   it->first.second + " refused");
      revoke(vm, it->second);
      it = grants_.erase(it);
    } else {
      ++it;
    }
  }
  auto& grant = grants_[{vm, client}];
  if (!grant) grant = std::make_shared<std::atomic<bool>>(false);
  lookup.export_.revoked = grant;
  lock.unlock();
  // The disk's lock is the old holder's until its session ended.
  await_closed(vm);
  return lookup;
}

void ClusterNbdCatalog::revoke(const std::string& vm,
                               const std::shared_ptr<std::atomic<bool>>& grant) const {
  grant->store(true);
  closing_.emplace(vm, grant);
}

void ClusterNbdCatalog::await_closed(const std::string& vm) const {
  const auto until = std::chrono::steady_clock::now() + kCloseWait;
  while (true) {
    {
      std::lock_guard lock(mutex_);
      bool open = false;
      for (auto it = closing_.begin(); it != closing_.end();) {
        if (it->second.use_count() == 1) {
          it = closing_.erase(it);
          continue;
        }
        open = open || it->first == vm;
        ++it;
      }
      if (!open) return;
    }
    if (std::chrono::steady_clock::now() >= until) {
      log::warning("nbd: VM " + vm + ": a revoked session still holds its disk after " +
                   std::to_string(kCloseWait.count()) + " s");
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

void ClusterNbdCatalog::update(Holders owners) {
  auto not_holder = [](const Holders& holders, const std::pair<std::string, std::string>& grant) {
    auto it = holders.find(grant.first);
    // No owner at all: the VM stopped; its connection ends with its VMM.
    return it != holders.end() && !it->second.empty() && !it->second.count(grant.second);
  };
  std::vector<std::pair<std::string, std::string>> suspects;
  {
    std::lock_guard lock(mutex_);
    for (const auto& [grant, flag] : grants_) {
      if (not_holder(owners, grant)) suspects.push_back(grant);
    }
  }
  if (!suspects.empty()) {
    try {
      owners = read_owners_();
    } catch (const std::exception& e) {
      log::info(std::string("nbd: the VMs' owners not read again: ") + e.what());
    }
  }
  std::lock_guard lock(mutex_);
  owners_ = std::move(owners);
  for (const auto& grant : suspects) {
    auto it = grants_.find(grant);
    if (it == grants_.end() || !not_holder(owners_, grant)) continue;
    // Moved to another host: the old one may write no more.
    log::warning("nbd: VM " + grant.first + " is host " + *owners_[grant.first].begin() +
                 "'s now: writes from " + grant.second + " refused");
    revoke(grant.first, it->second);
    grants_.erase(it);
  }
}

void ClusterNbdCatalog::revoke_all(const std::string& vm) {
  {
    std::lock_guard lock(mutex_);
    for (auto it = grants_.begin(); it != grants_.end();) {
      if (it->first.first != vm) {
        ++it;
        continue;
      }
      log::warning("nbd: VM " + vm + " runs on its storage host now: writes from " +
                   it->first.second + " refused");
      revoke(vm, it->second);
      it = grants_.erase(it);
    }
  }
  await_closed(vm);
}

}  // namespace keel::cluster
