#include "migration/replica_control.h"

#include "common/log.h"
#include "vmm/jail/syscall_filter.h"

namespace keel::migration {

namespace pb = ::keel::api::v1;

namespace {

constexpr uint32_t kDefaultEpochMs = 30;
constexpr uint32_t kDefaultMinEpochMs = 10;
// Short enough for the run permit's default (half a second: the passive
// takes over after 750 ms of silence) to cover an epoch, its transfer and
// its acknowledgement.
constexpr uint32_t kDefaultMaxEpochMs = 250;
constexpr uint32_t kDefaultRunPermitMs = 500;
// Beyond the longest epoch: its transfer and acknowledgement.
constexpr uint32_t kPermitBeyondEpochMs = 250;
constexpr uint32_t kLongestEpochMs = 10000;

pb::Response info_response(pb::Response response) {
  response.set_ok(true);
  return response;
}

}  // namespace

ReplicaControl::~ReplicaControl() {
  std::shared_ptr<ReplicaSender> sender;
  {
    std::lock_guard guard(mutex_);
    sender = sender_;
  }
  if (sender) sender->stop();
  if (thread_.joinable()) thread_.join();
}

std::string ReplicaControl::busy() const {
  std::lock_guard guard(mutex_);
  if (running_) return "the guest is replicated (keelctl replica-status; replica-stop ends it)";
  if (sender_ && sender_->info().phase() == pb::REPLICA_PHASE_UNCERTAIN) {
    // Not even a fence's resume: the passive may run the guest.
    return "a switchover told the passive to run the guest and it did not confirm: it may "
           "run it (keelctl replica-status; replica-stop --run-on runs it on here once the "
           "passive's copy surely never ran; else kill)";
  }
  if (sender_ && sender_->info().guest_held()) {
    return "the guest waits after a failed replication: the passive may run it "
           "(keelctl replica-status; replica-stop --run-on runs it on here)";
  }
  return "";
}

void ReplicaControl::start(const pb::Replicate& request, ControlHandler::Reply reply) {
  ReplicaSettings settings;
  try {
    settings.to = parse_tcp_endpoint(request.to(), "replica address");
  } catch (const InputError& e) {
    return reply(error_response(pb::ERROR_CODE_INVALID_ARGUMENT, e.what()));
  }
  auto pick = [](uint32_t asked, uint32_t fallback) {
    return std::chrono::milliseconds(asked != 0 ? asked : fallback);
  };
  settings.epoch = pick(request.epoch_ms(), kDefaultEpochMs);
  // Bounds not given make room for the target given.
  const auto target = static_cast<uint32_t>(settings.epoch.count());
  settings.min_epoch = pick(request.min_epoch_ms(), std::min(kDefaultMinEpochMs, target));
  settings.max_epoch = pick(request.max_epoch_ms(), std::max(kDefaultMaxEpochMs, target));
  if (settings.max_epoch.count() > kLongestEpochMs) {
    return reply(error_response(pb::ERROR_CODE_INVALID_ARGUMENT,
                                "epochs above " + std::to_string(kLongestEpochMs) + " ms"));
  }
  if (settings.min_epoch > settings.epoch || settings.epoch > settings.max_epoch) {
    return reply(error_response(pb::ERROR_CODE_INVALID_ARGUMENT,
                                "epoch bounds out of order: min " +
                                    std::to_string(settings.min_epoch.count()) + " ms, target " +
                                    std::to_string(settings.epoch.count()) + " ms, max " +
                                    std::to_string(settings.max_epoch.count()) + " ms"));
  }

  settings.run_permit = std::chrono::milliseconds(
      std::max<int64_t>(kDefaultRunPermitMs, settings.max_epoch.count() + kPermitBeyondEpochMs));

  std::lock_guard guard(mutex_);
  if (running_)
    return reply(error_response(pb::ERROR_CODE_BUSY, "the guest is replicated already"));
  if (thread_.joinable()) thread_.join();  // the last one ended: its thread is done
  sender_ = std::make_shared<ReplicaSender>(machine_, std::move(settings));
  running_ = true;
  log::info("replication to " + request.to() + " starting");
  thread_ = std::thread([this, sender = sender_, reply = std::move(reply)] {
    jail::confine_thread(jail::ThreadKind::kWorker, "replicate");
    pb::ReplicaInfo outcome = sender->run([&reply](const pb::ReplicaInfo& first) {
      if (first.phase() == pb::REPLICA_PHASE_PROTECTED) {
        pb::Response response;
        *response.mutable_replicate() = first;
        return reply(info_response(std::move(response)));
      }
      reply(error_response(pb::ERROR_CODE_FAILED, first.phase() == pb::REPLICA_PHASE_STOPPED
                                                      ? "stopped before the first epoch"
                                                      : first.error()));
    });
    ControlHandler::Reply switchover_reply;
    {
      std::lock_guard guard(mutex_);
      running_ = false;
      switchover_reply = std::move(switchover_reply_);
    }
    if (switchover_reply) {
      if (outcome.phase() == pb::REPLICA_PHASE_SWITCHED_OVER) {
        pb::Response response;
        *response.mutable_switchover() = outcome;
        switchover_reply(info_response(std::move(response)));
      } else {
        switchover_reply(error_response(outcome.phase() == pb::REPLICA_PHASE_UNCERTAIN
                                            ? pb::ERROR_CODE_INTERNAL
                                            : pb::ERROR_CODE_FAILED,
                                        outcome.error()));
      }
    }
    if (outcome.phase() == pb::REPLICA_PHASE_SWITCHED_OVER) {
      log::info("switchover to " + outcome.peer() + " done: paused " +
                std::to_string(outcome.switchover_pause_us() / 1000.0) + " ms");
    } else if (outcome.phase() == pb::REPLICA_PHASE_STOPPED) {
      log::info("replication to " + outcome.peer() + " stopped after epoch " +
                std::to_string(outcome.epoch()));
    } else {
      log::warning("replication to " + outcome.peer() + " failed after epoch " +
                   std::to_string(outcome.epoch()) + ": " + outcome.error());
    }
  });
}

void ReplicaControl::add_metrics(MetricSet& set) const {
  pb::ReplicaInfo info;
  {
    std::lock_guard guard(mutex_);
    if (sender_) {
      info = sender_->info();
    } else if (passive_) {
      info = passive_->info();
    } else {
      return;  // no replication was ever started here
    }
  }
  const std::string role = info.role() == pb::REPLICA_ROLE_PASSIVE ? "passive" : "active";
  set.gauge("keel_replica_protected",
            "1 while the passive has an acknowledged copy to take over from",
            info.phase() == pb::REPLICA_PHASE_PROTECTED ? 1 : 0, {{"role", role}});
  set.counter("keel_replica_epochs_total", "Epochs acknowledged (active) or applied (passive)",
              double(info.epoch()), {{"role", role}});
  set.counter("keel_replica_sent_bytes_total", "Bytes the active sent", double(info.bytes_sent()),
              {{"role", role}});
  set.gauge("keel_replica_last_pause_seconds", "The guest's pause at the last checkpoint",
            double(info.last_pause_us()) / 1e6, {{"role", role}});
  set.gauge("keel_replica_last_ack_age_seconds",
            "Since the last acknowledgement (active) or applied epoch (passive)",
            double(info.last_ack_age_ms()) / 1e3, {{"role", role}});
}

void ReplicaControl::handle(const pb::Request& request, ControlHandler::Reply reply) {
  switch (request.operation_case()) {
    case pb::Request::kReplicate:
      // A copy that took over runs the guest: it may protect it in turn.
      if (passive_ && !passive_->runs_guest()) {
        return reply(error_response(pb::ERROR_CODE_INVALID_STATE, "a passive replica"));
      }
      return start(request.replicate(), std::move(reply));
    case pb::Request::kReplicaStatus: {
      pb::Response response;
      std::lock_guard guard(mutex_);
      if (passive_ && !sender_) {
        *response.mutable_replica_status() = passive_->info();
        return reply(info_response(std::move(response)));
      }
      if (sender_) {
        *response.mutable_replica_status() = sender_->info();
      } else {
        response.mutable_replica_status()->set_role(pb::REPLICA_ROLE_NONE);
        response.mutable_replica_status()->set_phase(pb::REPLICA_PHASE_NONE);
      }
      return reply(info_response(std::move(response)));
    }
    case pb::Request::kReplicaStop: {
      std::shared_ptr<ReplicaSender> sender;
      bool running = false;
      {
        std::lock_guard guard(mutex_);
        sender = sender_;
        running = running_;
      }
      if (sender && !running &&
          (sender->info().guest_held() || sender->info().phase() == pb::REPLICA_PHASE_UNCERTAIN)) {
        // A failed replication's guest waits, or an uncertain switchover's:
        // it runs on here only on the caller's word that the passive's copy
        // does not run.
        if (!request.replica_stop().run_held()) {
          return reply(error_response(
              pb::ERROR_CODE_INVALID_STATE,
              "the replication has ended and the guest waits here, the passive may run it: "
              "replica-stop --run-on runs it on here once the passive's copy surely does not "
              "run (keel-agent does so once etcd says the VM is still this host's)"));
        }
        if (std::string why = sender->run_on(); !why.empty())
          return reply(error_response(pb::ERROR_CODE_INVALID_STATE, why));
        pb::Response response;
        *response.mutable_replica_stop() = sender->info();
        return reply(info_response(std::move(response)));
      }
      if (!sender || !running)
        return reply(error_response(pb::ERROR_CODE_INVALID_STATE, "not replicating"));
      // Once asked for, a switchover goes through or fails on its own: a
      // stop could come after the passive was told to run the guest.
      if (sender->info().phase() == pb::REPLICA_PHASE_SWITCHING_OVER) {
        return reply(error_response(pb::ERROR_CODE_BUSY,
                                    "a switchover is under way: it ends on its own "
                                    "(replica-status)"));
      }
      if (std::string why = sender->stop(); !why.empty())
        return reply(error_response(pb::ERROR_CODE_INVALID_STATE, why));
      pb::Response response;
      *response.mutable_replica_stop() = sender->info();
      return reply(info_response(std::move(response)));
    }
    case pb::Request::kSwitchover: {
      std::shared_ptr<ReplicaSender> sender;
      std::lock_guard guard(mutex_);
      if (running_) sender = sender_;
      if (!sender) return reply(error_response(pb::ERROR_CODE_INVALID_STATE, "not replicating"));
      if (switchover_reply_)
        return reply(error_response(pb::ERROR_CODE_BUSY, "a switchover is under way"));
      if (std::string why = sender->switchover(); !why.empty())
        return reply(error_response(pb::ERROR_CODE_INVALID_STATE, why));
      switchover_reply_ = std::move(reply);
      return;
    }
    case pb::Request::kTakeover:
      if (!passive_ || passive_->runs_guest()) {
        return reply(error_response(pb::ERROR_CODE_INVALID_STATE,
                                    "not a passive replica (keel-vmm --replica-of): the guest "
                                    "runs here"));
      }
      return passive_->takeover(std::move(reply));
    default:
      return reply(error_response(pb::ERROR_CODE_UNKNOWN_REQUEST, "not a replica request"));
  }
}

}  // namespace keel::migration
