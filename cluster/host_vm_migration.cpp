// HostVms, live migration between hosts: the owner record's handover
// around keel-vmm's own migration (migration/).
//
// Ownership stays exact throughout: the owner record (on the source's
// lease) names the destination as `migrating_to` before the destination's
// keel-vmm starts, so that the storage host lets it open the disks too;
// the destination's guest runs only after the source's stopped (keel-vmm's
// handover), and the record then becomes the destination's, on its lease,
// at the next generation: written by the source when its keel-vmm reports
// the migration done, or by the destination's keeper when the source could
// not (it died after the handover). A migration that failed leaves the
// record the source's alone; the destination's keel-vmm ends (or is ended
// by its keeper).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>

#include <fstream>
#include <sstream>
#include <thread>

#include "cluster/agent_client.h"
#include "cluster/cluster_event_log.h"
#include "cluster/etcd_records.h"
#include "cluster/host_vms.h"
#include "common/log.h"
#include "common/unique_fd.h"
#include "control/control_client.h"
#include "storage/json_record.h"

namespace keel::cluster {

namespace api = keel::agent::v1;
namespace pb = keel::api::v1;

namespace {

// A whole migration: memory at tens of MB/s, and a guest dirtying it.
constexpr auto kMigrationTimeout = std::chrono::minutes(30);
constexpr auto kIncomingTimeout = std::chrono::seconds(120);

// After a migration's answer did not come: cancels it, then whether it
// surely ended with the guest still here (cancelled, failed, or none).
bool migration_stopped(const std::string& name) {
  auto phase = [&] {
    pb::Request status;
    status.mutable_migrate_status();
    return call_vmm(name, status, std::chrono::seconds(2)).migrate_status().phase();
  };
  auto ended_here = [](pb::MigrationPhase p) {
    return p == pb::MIGRATION_PHASE_CANCELLED || p == pb::MIGRATION_PHASE_FAILED;
  };
  try {
    pb::Request cancel;
    cancel.mutable_migrate_cancel();
    if (!call_vmm(name, cancel, std::chrono::seconds(10)).ok()) {
      // Refused: none under way, or too late (the destination was told).
      const auto now = phase();
      return ended_here(now) || now == pb::MIGRATION_PHASE_NONE;
    }
    // Cancelled before the destination was told to run the guest: the
    // sender stops at its next batch (or its watchdog cuts it off).
    for (int i = 0; i < 100; ++i) {
      if (ended_here(phase())) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  } catch (const ControlClientError&) {
    return false;  // not known: the keepers settle it
  }
}

}  // namespace

api::VmIncomingResponse HostVms::incoming(const api::VmIncomingRequest& request) {
  const std::string& name = request.name();
  if (context_.fenced()) {
    throw refused("host " + context_.host + " is fenced (its lease is not being renewed)");
  }
  auto etcd = context_.etcd();
  auto record = read_record<api::ClusterVm>(*etcd, kVmsPrefix + name, nullptr);
  int64_t owner_revision = 0;
  auto owner = read_record<api::Owner>(*etcd, kOwnersPrefix + name, &owner_revision);
  if (!record) throw refused("no VM named '" + name + "' in the cluster");
  if (!owner || owner->migrating_to() != context_.host ||
      owner->generation() != request.generation()) {
    throw refused("VM " + name + " is not migrating to host " + context_.host);
  }
  const bool vmm_here = running().count(name) > 0;
  {
    std::lock_guard lock(mutex_);
    if (vmm_here || generations_.count(name) || starting_.count(name) || incoming_.count(name)) {
      throw refused("VM " + name + " runs on this host already");
    }
    incoming_[name] = request.generation();
  }
  try {
    // Before its guest can run here: nobody else takes the VM from now on.
    if (!mark_incoming(name, request.generation(), owner_revision)) {
      throw refused("VM " + name + ": its owner record changed meanwhile");
    }
    auto [vm, files, log] = prepare(*record);
    const std::string address = address_of(context_.host);
    const uint16_t port = free_port(address);
    files.incoming = "tcp:" + host_port(address, port);
    files.restore.clear();
    std::vector<std::string> argv{vmm_program()};
    for (auto& a : storage::vmm_arguments(vm, files)) argv.push_back(std::move(a));
    argv.push_back("--fence-file");
    argv.push_back(context_.fence_file);
    VmmLaunch launch{name, argv, log, [port] { return listening(port); }};
    const pid_t pid = supervisor_->start(launch);
    log::info("VM " + name + ": keel-vmm " + std::to_string(pid) + " waits for it at " +
              files.incoming);
    api::VmIncomingResponse out;
    out.set_address(files.incoming);
    out.set_pid(static_cast<uint32_t>(pid));
    out.set_lease(context_.lease());
    return out;
  } catch (...) {
    try {
      drop_incoming(name);
    } catch (const std::exception& e) {
      log::warning("VM " + name +
                   ": its arrival mark stays until this host's lease ends: " + e.what());
    }
    std::lock_guard lock(mutex_);
    incoming_.erase(name);
    throw;
  }
}

bool HostVms::mark_incoming(const std::string& name, uint64_t generation, int64_t revision) {
  api::Owner mark;
  mark.set_host(context_.host);
  mark.set_generation(generation);
  mark.set_since(storage::utc_now());
  etcdserverpb::TxnRequest txn;
  *txn.add_compare() = EtcdClient::key_mod_revision(kOwnersPrefix + name, revision);
  *txn.add_compare() = EtcdClient::key_absent(kIncomingPrefix + name);
  *txn.add_success() = EtcdClient::put_op(kIncomingPrefix + name, to_json(mark), context_.lease());
  return context_.etcd()->txn(txn).succeeded();
}

void HostVms::drop_incoming(const std::string& name) {
  auto etcd = context_.etcd();
  int64_t revision = 0;
  auto mark = read_record<api::Owner>(*etcd, kIncomingPrefix + name, &revision);
  if (!mark || mark->host() != context_.host) return;
  etcdserverpb::TxnRequest txn;
  *txn.add_compare() = EtcdClient::key_mod_revision(kIncomingPrefix + name, revision);
  *txn.add_success() = EtcdClient::delete_op(kIncomingPrefix + name);
  etcd->txn(txn);
}

bool HostVms::recall_incoming(const std::string& name) {
  auto etcd = context_.etcd();
  auto kv = etcd->get(kIncomingPrefix + name);
  api::Owner mark;
  if (!kv || !from_json(kv->value, &mark) || mark.host() != context_.host) return false;
  if (kv->lease != context_.lease()) {
    etcdserverpb::TxnRequest txn;
    *txn.add_compare() = EtcdClient::key_mod_revision(kv->key, kv->mod_revision);
    *txn.add_success() = EtcdClient::put_op(kv->key, kv->value, context_.lease());
    if (!etcd->txn(txn).succeeded()) return false;
  }
  std::lock_guard lock(mutex_);
  incoming_[name] = mark.generation();
  return true;
}

void HostVms::settle_migration(const std::string& name, const api::Owner& owner, int64_t revision) {
  if (!migration_over(name)) return;
  api::Owner alone = owner;
  alone.clear_migrating_to();
  etcdserverpb::TxnRequest txn;
  *txn.add_compare() = EtcdClient::key_mod_revision(kOwnersPrefix + name, revision);
  *txn.add_success() = EtcdClient::put_op(kOwnersPrefix + name, to_json(alone), context_.lease());
  if (context_.etcd()->txn(txn).succeeded()) {
    log::warning("VM " + name + ": its migration to " + owner.migrating_to() +
                 " is over (nothing arrives there): the VM is this host's alone again; a guest "
                 "paused by it here stays paused (resume or stop it)");
  }
}

uint64_t HostVms::take_over(const std::string& name, const api::Owner& owner, int64_t revision,
                            int64_t lease) {
  auto etcd = context_.etcd();
  int64_t vm_revision = 0;
  auto vm = read_record<api::ClusterVm>(*etcd, kVmsPrefix + name, &vm_revision);
  if (!vm) return 0;
  api::Owner next;
  next.set_host(owner.migrating_to());
  next.set_generation(owner.generation() + 1);
  next.set_since(storage::utc_now());
  vm->set_generation(next.generation());
  vm->set_last_host(next.host());
  etcdserverpb::TxnRequest txn;
  *txn.add_compare() = EtcdClient::key_mod_revision(kOwnersPrefix + name, revision);
  *txn.add_compare() = EtcdClient::key_mod_revision(kVmsPrefix + name, vm_revision);
  *txn.add_success() = EtcdClient::put_op(kVmsPrefix + name, to_json(*vm));
  *txn.add_success() = EtcdClient::put_op(kOwnersPrefix + name, to_json(next), lease);
  *txn.add_success() = EtcdClient::delete_op(kIncomingPrefix + name);
  return etcd->txn(txn).succeeded() ? next.generation() : 0;
}

bool HostVms::keep_incoming(const std::string& name, pid_t pid,
                            const std::optional<api::Owner>& owner, int64_t owner_revision,
                            const std::optional<api::ClusterVm>& vm) {
  if (owner && owner->host() == context_.host) {
    std::lock_guard lock(mutex_);
    incoming_.erase(name);
    return false;  // handed over: this host's like any other
  }
  bool receiving = true;
  try {
    pb::Request status;
    status.mutable_status();
    auto answer = call_vmm(name, status, std::chrono::seconds(2));
    receiving = !answer.ok() || answer.status().receiving();
  } catch (const ControlClientError&) {
    // An --incoming opens its socket once its source connected.
  }
  uint64_t expected = 0;
  {
    std::lock_guard lock(mutex_);
    if (auto it = incoming_.find(name); it != incoming_.end()) expected = it->second;
  }
  if (owner && owner->migrating_to() == context_.host) {
    if (receiving) return true;  // still arriving
    // The guest runs here: the source could not hand the record over.
    if (uint64_t generation = take_over(name, *owner, owner_revision, context_.lease())) {
      own(name, generation);
      log::info("VM " + name + " is this host's after its migration (generation " +
                std::to_string(generation) + ")");
    }
    return true;
  }
  if (!owner && !receiving && vm && expected != 0 && vm->generation() == expected) {
    // Handed over, then its source's lease expired before the record moved:
    // nobody else took the VM, and its only guest runs here.
    const uint64_t generation = claim(name);
    own(name, generation);
    log::info("VM " + name + " is this host's after its migration (generation " +
              std::to_string(generation) + ")");
    return true;
  }
  log::warning("VM " + name + ": its migration here was given up: keel-vmm " + std::to_string(pid) +
               " ended");
  ::kill(pid, SIGKILL);
  {
    std::lock_guard lock(mutex_);
    incoming_.erase(name);
  }
  drop_incoming(name);
  return true;
}

api::VmMigrateResponse HostVms::migrate(const api::VmMigrateRequest& request) {
  const std::string& name = request.name();
  if (context_.fenced()) {
    throw refused("host " + context_.host + " is fenced (its lease is not being renewed)");
  }
  if (request.to() == context_.host) throw refused("VM " + name + " runs on " + request.to());
  uint64_t generation = 0;
  {
    std::lock_guard lock(mutex_);
    auto it = generations_.find(name);
    if (it == generations_.end()) throw refused("VM " + name + " is not running on this host");
    generation = it->second;
  }
  NameHold outgoing(*this, migrating_out_, name);
  if (!outgoing.held()) throw refused("VM " + name + " is migrating already");
  auto etcd = context_.etcd();
  int64_t revision = 0;
  auto owner = read_record<api::Owner>(*etcd, kOwnersPrefix + name, &revision);
  if (!owner || owner->host() != context_.host || owner->generation() != generation) {
    throw refused("VM " + name + " is not this host's (its owner record moved)");
  }
  // The destination may open the disks from now on.
  auto put_owner = [&](const api::Owner& next) {
    etcdserverpb::TxnRequest txn;
    *txn.add_compare() = EtcdClient::key_mod_revision(kOwnersPrefix + name, revision);
    *txn.add_success() = EtcdClient::put_op(kOwnersPrefix + name, to_json(next), context_.lease());
    auto answer = etcd->txn(txn);
    if (!answer.succeeded()) throw refused("VM " + name + ": its owner record changed meanwhile");
    revision = answer.header().revision();
  };
  api::Owner migrating = *owner;
  migrating.set_migrating_to(request.to());
  put_owner(migrating);
  auto back_to_source = [&] {
    try {
      put_owner(*owner);
    } catch (const std::exception& e) {
      log::error("VM " + name + ": its owner record still names " + request.to() + ": " + e.what());
    }
  };
  api::VmIncomingResponse destination;
  try {
    AgentClient peer(host_port(address_of(request.to()), kAgentPort), kIncomingTimeout,
                     context_.peer_tls());
    api::VmIncomingRequest incoming;
    incoming.set_name(name);
    incoming.set_generation(generation);
    destination = peer.host_vm_incoming(incoming);
  } catch (const AgentCallError& e) {
    back_to_source();
    throw refused("host " + request.to() + ": " + e.what());
  } catch (...) {
    back_to_source();
    throw;
  }
  pb::Request migrate;
  migrate.mutable_migrate()->set_to(destination.address());
  migrate.mutable_migrate()->set_downtime_ms(request.downtime_ms());
  migrate.mutable_migrate()->set_bandwidth_mbps(request.bandwidth_mbps());
  pb::Response answer;
  auto told = [&](api::ClusterEventType type, const std::string& detail) {
    auto event = cluster_event(type, name, detail);
    event.set_peer(request.to());
    return event;
  };
  context_.tell(
      told(api::CLUSTER_EVENT_VM_MIGRATION_STARTED,
           "VM " + name + " migrating from host " + context_.host + " to " + request.to()));
  auto failed = [&](const std::string& why) {
    context_.tell(told(api::CLUSTER_EVENT_VM_MIGRATION_FAILED,
                       "VM " + name + " not migrated to " + request.to() + ": " + why));
  };
  try {
    answer = call_vmm(name, migrate, kMigrationTimeout);
  } catch (const ControlClientError& e) {
    // The keel-vmm may be migrating on (a cap too low for the VM's memory,
    // a guest dirtying it faster than it goes): the record goes back to
    // this host only once the migration surely ended without the
    // destination running the guest. Otherwise, as for an uncertain end,
    // the keepers settle it by where the guest runs.
    if (!migration_stopped(name)) {
      failed(std::string("its keel-vmm did not answer (") + e.what() +
             "); outcome unknown (the destination takes the VM if its guest runs there)");
      throw AgentError(AgentError::Code::kInternal,
                       "VM " + name + ": its keel-vmm did not answer the migration (" + e.what() +
                           "); outcome unknown");
    }
    failed(std::string("its keel-vmm did not answer, cancelled: ") + e.what());
    back_to_source();
    throw AgentError(
        AgentError::Code::kInternal,
        "VM " + name + ": its keel-vmm did not answer the migration: " + e.what() + " (cancelled)");
  }
  if (!answer.ok()) {
    if (answer.error().code() == pb::ERROR_CODE_INTERNAL) {
      // Uncertain: the guest may run on the destination. The record stays
      // as it is; the destination's keeper takes it if its guest runs.
      failed("outcome unknown (the destination takes the VM if its guest runs there): " +
             answer.error().message());
      throw AgentError(AgentError::Code::kInternal,
                       "VM " + name + ": migration outcome unknown: " + answer.error().message() +
                           " (the guest stays paused here)");
    }
    failed(answer.error().message());
    back_to_source();
    throw refused("VM " + name + ": migration to " + request.to() +
                  " failed: " + answer.error().message());
  }
  api::VmMigrateResponse out;
  out.set_from(context_.host);
  out.set_to(request.to());
  out.set_downtime_us(answer.migrate().downtime_us());
  out.set_elapsed_ms(answer.migrate().elapsed_ms());
  out.set_bytes_sent(answer.migrate().bytes_sent());
  out.set_rounds(answer.migrate().rounds_total());
  {
    std::lock_guard lock(mutex_);
    generations_.erase(name);
  }
  try {
    out.set_generation(take_over(name, migrating, revision, destination.lease()));
  } catch (const std::exception& e) {
    log::warning("VM " + name + ": owner record not handed to " + request.to() + " (" + e.what() +
                 "); its keeper takes it");
  }
  log::info("VM " + name + " migrated to " + request.to() + ": paused " +
            std::to_string(out.downtime_us() / 1000.0) + " ms");
  auto done = told(api::CLUSTER_EVENT_VM_MIGRATED,
                   "VM " + name + " migrated from host " + context_.host + " to " + request.to());
  done.set_duration_us(out.downtime_us());
  context_.tell(std::move(done));
  return out;
}

}  // namespace keel::cluster
