// HostVms and the health of the host's pool (storage/pool_health.h),
// looked at by the keeper once a second. A pool that cannot keep its VMs
// (read-only, counting device errors, short of space) is said in the
// host's record (`unhealthy`: no replica is placed here meanwhile, and
// `keelctl cluster status` shows why; written again when what is wrong
// changes, not when its figures do), and each highly available VM this
// host runs is switched over to its passive, one after another, as `host
// drain` would; this host then keeps no replica of it (the new active picks
// a third host). A VM that cannot be handed over (not protected yet, its
// passive unhealthy too) runs on here and is tried again every
// kHandoverRetry. VMs without HA run on: moving them is the operator's
// choice (`vm migrate`, `host drain`).
#include "cluster/etcd_records.h"
#include "cluster/host_vms.h"
#include "common/log.h"

namespace keel::cluster {

namespace api = keel::agent::v1;

namespace {

constexpr auto kHandoverRetry = std::chrono::seconds(10);

}  // namespace

void HostVms::keep_health() {
  if (!health_) return;
  const storage::PoolHealth::Problem problem = health_->check();
  {
    std::lock_guard lock(mutex_);
    unhealthy_now_ = !problem.kind.empty();
    if (handover_done_) {
      handover_.join();
      handover_done_ = false;
    }
  }
  if (problem.kind != reported_unhealthy_) {
    try {
      context_.report_health(problem.text);
      if (problem.kind.empty()) {
        log::info("host " + context_.host + " is healthy again");
      } else {
        log::warning("host " + context_.host + " is unhealthy: " + problem.text);
      }
      reported_unhealthy_ = problem.kind;
    } catch (const std::exception& e) {
      log::info("host " + context_.host + "'s health not in its record yet: " + e.what());
      return;
    }
  }
  if (problem.kind.empty()) return;
  std::vector<std::string> names;
  std::lock_guard lock(mutex_);
  if (handover_.joinable() || stopping_) return;
  const auto now = std::chrono::steady_clock::now();
  for (const auto& [name, generation] : generations_) {
    if (migrating_out_.count(name) || stopping_vms_.count(name) || protecting_.count(name))
      continue;
    auto it = handover_problems_.find(name);
    if (it != handover_problems_.end() && it->second.retry_at > now) continue;
    names.push_back(name);
  }
  if (names.empty()) return;
  handover_ =
      std::thread([this, names, why = "host " + context_.host + " is unhealthy: " + problem.text] {
        hand_over(names, why);
        std::lock_guard done(mutex_);
        handover_done_ = true;
      });
}

void HostVms::hand_over(const std::vector<std::string>& names, const std::string& why) {
  for (const auto& name : names) {
    {
      // The agent stopping, or the pool well again: no more handovers.
      std::lock_guard lock(mutex_);
      if (stopping_ || !unhealthy_now_) return;
    }
    std::string failure;
    try {
      auto vm = read_record<api::ClusterVm>(*context_.etcd(), kVmsPrefix + name, nullptr);
      if (!vm || !vm->ha()) {
        // Looked at again after the retry time (HA may be enabled meanwhile).
        std::lock_guard lock(mutex_);
        handover_problems_[name] = {"", std::chrono::steady_clock::now() + kHandoverRetry};
        continue;
      }
      api::VmHaRequest ask;
      ask.set_name(name);
      ask.set_action(api::HA_ACTION_SWITCHOVER);
      const api::VmHaResponse done = ha_switchover(ask, why);
      log::info("VM " + name + " handed over to host " + done.status().active() + ": " + why);
    } catch (const std::exception& e) {
      failure = e.what();
    }
    std::lock_guard lock(mutex_);
    // Said once per new reason: tried again every kHandoverRetry.
    auto it = handover_problems_.find(name);
    if (!failure.empty() && (it == handover_problems_.end() || it->second.why != failure)) {
      log::warning("VM " + name + " runs on here: " + why +
                   ", and its switchover failed: " + failure);
    }
    if (failure.empty()) {
      handover_problems_.erase(name);
    } else {
      handover_problems_[name] = {failure, std::chrono::steady_clock::now() + kHandoverRetry};
    }
  }
}

}  // namespace keel::cluster
