// Machine, part three: what the control socket asks for (status, pause,
// resume, shutdown, kill), on the event loop.
#include <unistd.h>

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <memory>
#include <string>

#include "common/error.h"
#include "vmm/jail/process_jail.h"
#include "vmm/jail/syscall_filter.h"
#include "vmm/machine.h"
#include "vmm/snapshot.h"

namespace keel {

namespace pb = ::keel::api::v1;

namespace {

constexpr auto kPauseTimeout = std::chrono::seconds(5);
constexpr uint32_t kDefaultShutdownTimeoutMs = 30000;

uint64_t ms(std::chrono::steady_clock::duration d) {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(d).count());
}

}  // namespace

// --- status ---------------------------------------------------------------

pb::StatusResult Machine::status() const {
  pb::StatusResult s;
  const auto now = std::chrono::steady_clock::now();
  const bool paused = vcpus_->pause_requested();
  s.set_state(vcpus_->stopping() ? pb::RUN_STATE_STOPPED
              : replica_held_    ? pb::RUN_STATE_REPLICA
              : shutting_down_   ? pb::RUN_STATE_SHUTTING_DOWN
              : paused           ? pb::RUN_STATE_PAUSED
                                 : pb::RUN_STATE_RUNNING);
  s.set_vcpus(config_.cpus());
  s.set_memory_bytes(config_.memory());
  s.set_uptime_ms(ms(now - started_));
  s.set_pid(static_cast<uint32_t>(jail::started_pid()));
  s.set_kernel(config_.kernel());
  s.set_restored_from(options_.restore_dir);
  s.set_pauses(pauses_);
  s.set_fenced(fenced_);
  s.set_paused_by_fence(paused && paused_by_fence_);
  s.set_receiving(!options_.incoming.empty() &&
                  started_ == std::chrono::steady_clock::time_point{});
  s.set_paused_ms_total(
      ms(paused_total_ + (paused_at_ ? now - *paused_at_ : std::chrono::steady_clock::duration{})));
  s.set_serial(options_.serial_file.empty() ? "stdout" : "file=" + options_.serial_file);
  unsigned slot = 1;
  auto add = [&](const std::string& type, const std::string& description) {
    pb::Device* d = s.add_devices();
    d->set_type(type);
    d->set_pci_address("00:" + std::string(slot < 16 ? "0" : "") + [&] {
      char hex[8];
      std::snprintf(hex, sizeof hex, "%x", slot);
      return std::string(hex);
    }() + ".0");
    d->set_description(description);
    ++slot;
  };
  for (const auto& disk : config_.disks()) {
    add("virtio-blk", "path=" + disk.path() + (disk.readonly() ? ",readonly=on" : "") +
                          ",serial=" + disk.serial());
  }
  for (const auto& net : config_.nets()) add("virtio-net", "tap=" + net.tap());
  if (config_.rng()) add("virtio-rng", "getrandom");
  // The functions in the same slot order as the devices above.
  const auto& functions = devices_->virtio_functions();
  for (size_t i = 0; i < functions.size() && i < static_cast<size_t>(s.devices_size()); ++i) {
    pb::Device* d = s.mutable_devices(static_cast<int>(i));
    d->set_error(functions[i]->needs_reset_reason());
    for (const auto& [name, value] : functions[i]->counters())
      (*d->mutable_counters())[name] = value;
  }
  return s;
}

// --- shutdown -------------------------------------------------------------

pb::Response Machine::stopped_response(const MachineStop& stop,
                                       std::chrono::steady_clock::time_point since) {
  pb::Response response;
  response.set_ok(true);
  pb::ShutdownResult* r = response.mutable_shutdown();
  r->set_forced(stop.reason == StopReason::kKilled);
  r->set_duration_ms(ms(std::chrono::steady_clock::now() - since));
  r->set_state(pb::RUN_STATE_STOPPED);
  return response;
}

// ACPI power button (the guest's OS decides; a stock Linux with a handler
// powers off), then a kill when the guest has not stopped in time. The
// answer comes when the machine has stopped, either way.
void Machine::start_shutdown(uint32_t timeout_ms, Reply reply) {
  {
    std::lock_guard guard(stop_mutex_);
    stop_replies_.push_back(std::move(reply));
  }
  if (shutting_down_) return;  // a second request waits for the same stop
  shutting_down_ = true;
  shutdown_started_ = std::chrono::steady_clock::now();
  if (vcpus_->pause_requested()) {  // a paused guest cannot press anything
    if (paused_at_) paused_total_ += std::chrono::steady_clock::now() - *paused_at_;
    paused_at_.reset();
    resume();
  }
  devices_->press_power_button();
  journal_.publish(pb::EVENT_TYPE_POWER_BUTTON, "ACPI power button pressed for a shutdown");
  const uint32_t limit = timeout_ms != 0 ? timeout_ms : kDefaultShutdownTimeoutMs;
  shutdown_timer_.emplace(events_, std::chrono::milliseconds(limit));
  shutdown_timer_->async_wait([this, limit](const boost::system::error_code& ec) {
    if (ec) return;
    request_stop({StopReason::kKilled, "the guest did not power off within " +
                                           std::to_string(limit) + " ms of the ACPI power button"});
  });
}

// --- requests -------------------------------------------------------------

void Machine::handle_stream(const pb::Request& request, StreamReply reply) {
  if (request.operation_case() == pb::Request::kEventsSubscribe) {
    return journal_.subscribe(request.events_subscribe(), std::move(reply));
  }
  if (request.operation_case() != pb::Request::kConsoleAttach) {
    return ControlHandler::handle_stream(request, std::move(reply));
  }
  if (vcpus_->stopping()) {
    return reply(error_response(pb::ERROR_CODE_INVALID_STATE, "the machine is stopping"), {});
  }
  console_.attach(request.console_attach(), std::move(reply));
}

void Machine::handle(const pb::Request& request, Reply reply) {
  if (vcpus_->stopping()) {
    return reply(error_response(pb::ERROR_CODE_INVALID_STATE, "the machine is stopping"));
  }
  const std::string busy = snapshot_writing_ ? std::string("a snapshot is being written")
                           : pausing_        ? std::string("the vCPUs are being paused")
                           : extension_      ? extension_->busy()
                                             : std::string();
  if (replica_held_) {
    switch (request.operation_case()) {
      case pb::Request::kStatus:
      case pb::Request::kMetrics:
      case pb::Request::kKill:
        break;
      case pb::Request::kReplicaStatus:
      case pb::Request::kTakeover:
        if (!extension_) {
          return reply(
              error_response(pb::ERROR_CODE_UNIMPLEMENTED, "this keel-vmm keeps no replica"));
        }
        return extension_->handle(request, std::move(reply));
      default:
        return reply(error_response(pb::ERROR_CODE_INVALID_STATE,
                                    "a passive replica (the guest runs elsewhere): status, "
                                    "metrics, replica-status, takeover and kill only"));
    }
  }
  switch (request.operation_case()) {
    case pb::Request::kPause:
    case pb::Request::kResume:
    case pb::Request::kShutdown:
    case pb::Request::kSnapshot:
      if (!busy.empty()) return reply(error_response(pb::ERROR_CODE_BUSY, busy));
      // A shutdown runs the guest (to press its power button): not while
      // the host is fenced.
      if (request.operation_case() == pb::Request::kShutdown && fence_passed()) {
        return reply(error_response(pb::ERROR_CODE_INVALID_STATE,
                                    "fenced: the host's lease deadline has passed, the guest "
                                    "may not run to shut down (kill stops it)"));
      }
      break;
    case pb::Request::kMigrate:
    case pb::Request::kReplicate:
      if (!busy.empty()) return reply(error_response(pb::ERROR_CODE_BUSY, busy));
      if (fence_passed()) {
        return reply(error_response(pb::ERROR_CODE_INVALID_STATE,
                                    "fenced: the host's lease deadline has passed"));
      }
      if (shutting_down_)
        return reply(error_response(pb::ERROR_CODE_INVALID_STATE, "the machine is shutting down"));
      if (vcpus_->pause_requested())
        return reply(error_response(pb::ERROR_CODE_INVALID_STATE, "paused: resume it first"));
      [[fallthrough]];
    case pb::Request::kMigrateStatus:
    case pb::Request::kMigrateCancel:
    case pb::Request::kReplicaStatus:
    case pb::Request::kReplicaStop:
    case pb::Request::kSwitchover:
    case pb::Request::kTakeover:
      if (!extension_) {
        return reply(
            error_response(pb::ERROR_CODE_UNIMPLEMENTED, "this keel-vmm does not migrate"));
      }
      return extension_->handle(request, std::move(reply));
    default:
      break;
  }
  switch (request.operation_case()) {
    case pb::Request::kStatus: {
      pb::Response response;
      response.set_ok(true);
      *response.mutable_status() = status();
      return reply(std::move(response));
    }
    case pb::Request::kMetrics: {
      pb::Response response;
      response.set_ok(true);
      *response.mutable_metrics() = metrics();
      return reply(std::move(response));
    }
    case pb::Request::kPause: {
      if (shutting_down_)
        return reply(error_response(pb::ERROR_CODE_INVALID_STATE, "the machine is shutting down"));
      if (vcpus_->pause_requested())
        return reply(error_response(pb::ERROR_CODE_INVALID_STATE, "already paused"));
      const auto begin = std::chrono::steady_clock::now();
      return pause_then([this, begin, reply = std::move(reply)](bool parked) {
        if (!parked) {
          return reply(error_response(pb::ERROR_CODE_FAILED, "a vCPU did not stop within 5 s"));
        }
        paused_at_ = std::chrono::steady_clock::now();
        ++pauses_;
        journal_.publish(pb::EVENT_TYPE_PAUSED, "paused through the control socket");
        pb::Response response;
        response.set_ok(true);
        response.mutable_pause()->set_state(pb::RUN_STATE_PAUSED);
        response.mutable_pause()->set_duration_ms(ms(std::chrono::steady_clock::now() - begin));
        reply(std::move(response));
      });
    }
    case pb::Request::kResume: {
      if (!vcpus_->pause_requested())
        return reply(error_response(pb::ERROR_CODE_INVALID_STATE, "not paused"));
      if (fence_passed()) {
        return reply(error_response(pb::ERROR_CODE_INVALID_STATE,
                                    "fenced: the host's lease deadline has passed (keel-agent "
                                    "resumes the guest once the VM is still this host's)"));
      }
      if (disks_released_) {
        // A migration that told its destination to run the guest and heard
        // nothing back: the guest may run there. Only with the images ours
        // again may it run here.
        try {
          claim_disks();
        } catch (const std::exception& e) {
          return reply(
              error_response(pb::ERROR_CODE_FAILED, std::string("not resumed: ") + e.what()));
        }
      }
      const auto begin = std::chrono::steady_clock::now();
      const auto paused_for =
          paused_at_ ? begin - *paused_at_ : std::chrono::steady_clock::duration{};
      paused_at_.reset();
      paused_total_ += paused_for;
      resume();
      pb::Event resumed;
      resumed.set_type(pb::EVENT_TYPE_RESUMED);
      resumed.set_detail("resumed through the control socket");
      resumed.set_duration_us(static_cast<uint64_t>(
          std::chrono::duration_cast<std::chrono::microseconds>(paused_for).count()));
      journal_.publish(std::move(resumed));
      pb::Response response;
      response.set_ok(true);
      response.mutable_resume()->set_state(shutting_down_ ? pb::RUN_STATE_SHUTTING_DOWN
                                                          : pb::RUN_STATE_RUNNING);
      response.mutable_resume()->set_duration_ms(ms(std::chrono::steady_clock::now() - begin));
      return reply(std::move(response));
    }
    case pb::Request::kShutdown:
      return start_shutdown(request.shutdown().timeout_ms(), std::move(reply));
    case pb::Request::kKill: {
      pb::Response response;
      response.set_ok(true);
      response.mutable_kill()->set_state(pb::RUN_STATE_STOPPED);
      reply(std::move(response));
      return request_stop({StopReason::kKilled, "kill request"});
    }
    case pb::Request::kSnapshot: {
      if (shutting_down_)
        return reply(error_response(pb::ERROR_CODE_INVALID_STATE, "the machine is shutting down"));
      if (request.snapshot().dir().empty()) {
        return reply(error_response(pb::ERROR_CODE_INVALID_ARGUMENT, "snapshot needs a directory"));
      }
      if (!snapshot_root_) {
        return reply(
            error_response(pb::ERROR_CODE_INVALID_STATE,
                           "snapshots are off: keel-vmm was started without --snapshot-root DIR"));
      }
      return take_snapshot(request.snapshot().dir(), std::move(reply));
    }
    case pb::Request::kMigrate:
    case pb::Request::kMigrateStatus:
    case pb::Request::kMigrateCancel:
    case pb::Request::kReplicate:
    case pb::Request::kReplicaStatus:
    case pb::Request::kReplicaStop:
    case pb::Request::kSwitchover:
    case pb::Request::kTakeover:
    case pb::Request::kConsoleAttach:  // handle_stream's
    case pb::Request::kEventsSubscribe:
    case pb::Request::OPERATION_NOT_SET:
      break;
  }
  reply(error_response(pb::ERROR_CODE_UNKNOWN_REQUEST, "no operation in the request"));
}

// A paused guest stays paused; a running one is paused for the snapshot and
// resumed after it. The state is captured here; memory and the state file
// are written on a thread of their own, so that a slow file system never
// keeps the event loop (the control socket, signals, the devices) waiting.
void Machine::pause_then(std::function<void(bool)> then) {
  struct Wait {
    explicit Wait(boost::asio::io_context& events) : timer(events) {}
    boost::asio::steady_timer timer;
    std::function<void(bool)> then;
    bool done = false;
  };
  auto wait = std::make_shared<Wait>(events_);
  wait->then = std::move(then);
  pausing_ = true;
  wait->timer.expires_after(kPauseTimeout);
  wait->timer.async_wait([this, wait](const boost::system::error_code& ec) {
    if (ec || wait->done) return;
    wait->done = true;
    pausing_ = false;
    resume();
    wait->then(false);
  });
  vcpus_->request_pause([this, wait] {
    boost::asio::post(events_, [this, wait] {
      if (wait->done) return;
      wait->done = true;
      pausing_ = false;
      wait->timer.cancel();
      wait->then(true);
    });
  });
}

void Machine::take_snapshot(const std::string& dir, Reply reply) {
  const auto begin = std::chrono::steady_clock::now();
  if (vcpus_->pause_requested()) return write_snapshot_paused(dir, std::move(reply), true, begin);
  pause_then([this, dir, reply = std::move(reply), begin](bool parked) {
    if (!parked) {
      return reply(error_response(pb::ERROR_CODE_FAILED, "a vCPU did not stop within 5 s"));
    }
    write_snapshot_paused(dir, reply, false, begin);
  });
}

void Machine::write_snapshot_paused(const std::string& dir, Reply reply, bool was_paused,
                                    std::chrono::steady_clock::time_point begin) {
  auto failed = [this, was_paused, &reply](pb::ErrorCode code, const std::string& message) {
    if (!was_paused) resume();
    reply(error_response(code, message));
  };
  std::shared_ptr<SnapshotWrite> job;
  try {
    job = std::make_shared<SnapshotWrite>(*this, *snapshot_root_, dir);
  } catch (const InputError& e) {
    return failed(pb::ERROR_CODE_INVALID_ARGUMENT, e.what());
  } catch (const std::exception& e) {
    return failed(pb::ERROR_CODE_FAILED, std::string("snapshot failed: ") + e.what());
  }
  if (snapshot_writer_.joinable()) snapshot_writer_.join();  // the last one, done
  snapshot_writing_ = true;
  snapshot_writer_ = std::thread([this, job, was_paused, begin, reply = std::move(reply)] {
    pb::Response response;
    try {
      jail::confine_thread(jail::ThreadKind::kWorker, "snapshot");
      *response.mutable_snapshot() = job->write(snapshot_cancel_);
      response.set_ok(true);
    } catch (const std::exception& e) {
      response = error_response(pb::ERROR_CODE_FAILED, std::string("snapshot failed: ") + e.what());
    }
    boost::asio::post(events_, [this, was_paused, begin, reply, response]() mutable {
      snapshot_writing_ = false;
      if (!was_paused && !vcpus_->stopping()) resume();
      const auto paused = std::chrono::steady_clock::now() - begin;
      ++(response.ok() ? snapshots_.written : snapshots_.failed);
      snapshots_.paused += paused;
      if (response.ok()) {
        snapshots_.bytes += response.snapshot().bytes_written();
        response.mutable_snapshot()->set_pause_ms(ms(paused));
      }
      pb::Event event;
      event.set_type(response.ok() ? pb::EVENT_TYPE_SNAPSHOT_TAKEN
                                   : pb::EVENT_TYPE_SNAPSHOT_FAILED);
      event.set_detail(response.ok() ? "snapshot written" : response.error().message());
      event.set_dir(response.ok() ? response.snapshot().dir() : std::string());
      event.set_duration_us(static_cast<uint64_t>(
          std::chrono::duration_cast<std::chrono::microseconds>(paused).count()));
      journal_.publish(std::move(event));
      reply(std::move(response));
    });
  });
}

void Machine::end_snapshot_writer() {
  if (!snapshot_writer_.joinable()) return;
  snapshot_cancel_.store(true);
  snapshot_writer_.join();
}

}  // namespace keel
