#include "migration/migration_control.h"

#include <optional>

#include "common/log.h"
#include "control/control_server.h"
#include "vmm/jail/syscall_filter.h"

namespace keel::migration {

namespace pb = ::keel::api::v1;

namespace {

constexpr uint32_t kDefaultDowntimeMs = 5;

}  // namespace

MigrationControl::~MigrationControl() {
  std::shared_ptr<MigrationSender> sender;
  {
    std::lock_guard guard(mutex_);
    sender = sender_;
  }
  if (sender) sender->cancel();
  if (thread_.joinable()) thread_.join();
}

std::string MigrationControl::busy() const {
  {
    std::lock_guard guard(mutex_);
    if (running_) return "a live migration is under way (keelctl migrate-status)";
  }
  return replicas_.busy();
}

bool MigrationControl::may_pause_for_fence() const {
  std::lock_guard guard(mutex_);
  return !running_;
}

void MigrationControl::start(const pb::Migrate& request, Reply reply) {
  MigrationSettings settings;
  try {
    settings.to = parse_tcp_endpoint(request.to(), "migration address");
  } catch (const InputError& e) {
    return reply(error_response(pb::ERROR_CODE_INVALID_ARGUMENT, e.what()));
  }
  if (request.connections() > 1) {
    return reply(error_response(pb::ERROR_CODE_UNIMPLEMENTED,
                                "more than one connection is not implemented yet"));
  }
  if (request.downtime_ms() > 60000)
    return reply(error_response(pb::ERROR_CODE_INVALID_ARGUMENT, "downtime above 60000 ms"));
  settings.downtime = std::chrono::milliseconds(request.downtime_ms() != 0 ? request.downtime_ms()
                                                                           : kDefaultDowntimeMs);
  if (request.bandwidth_mbps() > 1000000)
    return reply(error_response(pb::ERROR_CODE_INVALID_ARGUMENT, "bandwidth above 1000000 MB/s"));
  settings.bandwidth = request.bandwidth_mbps() * 1000000;

  std::lock_guard guard(mutex_);
  if (running_) return reply(error_response(pb::ERROR_CODE_BUSY, "a live migration is under way"));
  if (thread_.joinable()) thread_.join();  // the last one ended: its thread is done
  sender_ = std::make_shared<MigrationSender>(machine_, std::move(settings));
  running_ = true;
  log::info("live migration to " + request.to() + " starting");
  if (journal_) {
    pb::Event event;
    event.set_type(pb::EVENT_TYPE_MIGRATION_STARTED);
    event.set_detail("live migration starting");
    event.set_peer(request.to());
    journal_->publish(std::move(event));
  }
  thread_ = std::thread([this, sender = sender_, reply = std::move(reply)] {
    jail::confine_thread(jail::ThreadKind::kWorker, "migrate");
    pb::MigrationInfo outcome = sender->run();
    {
      std::lock_guard guard(mutex_);
      running_ = false;
      switch (outcome.phase()) {
        case pb::MIGRATION_PHASE_COMPLETED:
          ++ended_.completed;
          break;
        case pb::MIGRATION_PHASE_CANCELLED:
          ++ended_.cancelled;
          break;
        case pb::MIGRATION_PHASE_UNCERTAIN:
          ++ended_.uncertain;
          break;
        default:
          ++ended_.failed;
          break;
      }
      ended_.rounds += outcome.rounds_total();
      ended_.bytes += outcome.bytes_sent();
      ended_.downtime_us += outcome.downtime_us();
    }
    if (outcome.phase() == pb::MIGRATION_PHASE_COMPLETED) {
      log::info("live migration to " + outcome.to() + " done: paused " +
                std::to_string(outcome.downtime_us() / 1000.0) + " ms, " +
                std::to_string(outcome.bytes_sent() >> 20) + " MiB sent in " +
                std::to_string(outcome.rounds_total()) + " rounds");
      pb::Response response;
      response.set_ok(true);
      *response.mutable_migrate() = outcome;
      return reply(std::move(response));
    }
    log::warning("live migration to " + outcome.to() + " failed: " + outcome.error());
    if (journal_) {
      // Finished is the machine's word, with its stop (the guest left).
      pb::Event event;
      event.set_type(pb::EVENT_TYPE_MIGRATION_FAILED);
      event.set_detail(outcome.error());
      event.set_peer(outcome.to());
      journal_->publish(std::move(event));
    }
    reply(error_response(outcome.phase() == pb::MIGRATION_PHASE_UNCERTAIN ? pb::ERROR_CODE_INTERNAL
                                                                          : pb::ERROR_CODE_FAILED,
                         outcome.error()));
  });
}

void MigrationControl::add_metrics(MetricSet& set) const {
  Totals t;
  std::optional<pb::MigrationInfo> now;  // the one under way, or the last
  bool running = false;
  {
    std::lock_guard guard(mutex_);
    t = ended_;
    running = running_;
    if (sender_) now = sender_->info();
  }
  const std::string help = "Live migrations sent, by outcome";
  set.counter("keel_migrations_total", help, double(t.completed), {{"result", "completed"}});
  set.counter("keel_migrations_total", help, double(t.failed), {{"result", "failed"}});
  set.counter("keel_migrations_total", help, double(t.cancelled), {{"result", "cancelled"}});
  set.counter("keel_migrations_total", help, double(t.uncertain), {{"result", "uncertain"}});
  const uint64_t rounds = t.rounds + (running && now ? now->rounds_total() : 0);
  const uint64_t bytes = t.bytes + (running && now ? now->bytes_sent() : 0);
  set.gauge("keel_migration_in_progress", "1 while a live migration is sent", running ? 1 : 0);
  set.counter("keel_migration_rounds_total", "Rounds over memory sent by live migrations",
              double(rounds));
  set.counter("keel_migration_sent_bytes_total", "Bytes sent by live migrations", double(bytes));
  set.counter("keel_migration_downtime_seconds_total",
              "The guest's pauses at the end of completed migrations", double(t.downtime_us) / 1e6);
  double dirty_rate = 0;
  if (now && now->rounds_size() > 0) {
    dirty_rate = double(now->rounds(now->rounds_size() - 1).dirty_rate_bytes_per_s());
  }
  set.gauge("keel_migration_dirty_rate_bytes_per_second",
            "What the guest wrote per second during the last round measured", dirty_rate);
  replicas_.add_metrics(set);
}

void MigrationControl::handle(const pb::Request& request, Reply reply) {
  switch (request.operation_case()) {
    case pb::Request::kMigrate:
      return start(request.migrate(), std::move(reply));
    case pb::Request::kMigrateStatus: {
      pb::Response response;
      response.set_ok(true);
      std::lock_guard guard(mutex_);
      if (sender_) {
        *response.mutable_migrate_status() = sender_->info();
      } else {
        response.mutable_migrate_status()->set_phase(pb::MIGRATION_PHASE_NONE);
      }
      return reply(std::move(response));
    }
    case pb::Request::kMigrateCancel: {
      std::shared_ptr<MigrationSender> sender;
      {
        std::lock_guard guard(mutex_);
        if (running_) sender = sender_;
      }
      if (!sender)
        return reply(error_response(pb::ERROR_CODE_INVALID_STATE, "no migration under way"));
      if (std::string why = sender->cancel(); !why.empty())
        return reply(error_response(pb::ERROR_CODE_INVALID_STATE, why));
      pb::Response response;
      response.set_ok(true);
      *response.mutable_migrate_cancel() = sender->info();
      return reply(std::move(response));
    }
    case pb::Request::kReplicate:
    case pb::Request::kReplicaStatus:
    case pb::Request::kReplicaStop:
    case pb::Request::kSwitchover:
    case pb::Request::kTakeover:
      return replicas_.handle(request, std::move(reply));
    default:
      return reply(error_response(pb::ERROR_CODE_UNKNOWN_REQUEST, "not a migration request"));
  }
}

}  // namespace keel::migration
