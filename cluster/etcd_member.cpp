#include "cluster/etcd_member.h"

#include <signal.h>

#include "common/log.h"

namespace keel::cluster {

namespace {
std::string url(const std::string& address, int port) {
  bool v6 = address.find(':') != std::string::npos;
  return "https://" + (v6 ? "[" + address + "]" : address) + ":" + std::to_string(port);
}
}  // namespace

std::string peer_url(const std::string& address) {
  return url(address, kEtcdPeerPort);
}

std::string client_url(const std::string& address) {
  return url(address, kEtcdClientPort);
}

std::vector<std::string> etcd_command_line(const EtcdMemberSettings& s) {
  std::vector<std::string> argv = {
      s.etcd_binary,
      "--name=" + s.name,
      "--data-dir=" + s.data_dir,
      "--listen-peer-urls=" + peer_url(s.address),
      "--initial-advertise-peer-urls=" + peer_url(s.address),
      // Loopback too: the agent talks to its own member there whatever
      // the cluster network does.
      "--listen-client-urls=" + client_url(s.address) + "," + client_url("127.0.0.1"),
      "--advertise-client-urls=" + client_url(s.address),
      "--initial-cluster=" + s.initial_cluster,
      std::string("--initial-cluster-state=") + (s.new_cluster ? "new" : "existing"),
      "--initial-cluster-token=" + s.cluster_token,
      "--heartbeat-interval=" + std::to_string(s.heartbeat.count()),
      "--election-timeout=" + std::to_string(s.election.count()),
      // A member cut off and back must not depose a working leader with
      // its inflated term: it first asks whether it could win.
      "--pre-vote=true",
      // Member changes that would leave the cluster without a majority of
      // started members are refused.
      "--strict-reconfig-check=true",
      "--enable-v2=false",
      "--logger=zap",
      "--log-outputs=" + (s.log_file.empty() ? std::string("stderr") : s.log_file),
      "--cert-file=" + s.tls_dir + "/host.crt",
      "--key-file=" + s.tls_dir + "/host.key",
      "--trusted-ca-file=" + s.tls_dir + "/ca.crt",
      "--client-cert-auth=true",
      "--peer-cert-file=" + s.tls_dir + "/host.crt",
      "--peer-key-file=" + s.tls_dir + "/host.key",
      "--peer-trusted-ca-file=" + s.tls_dir + "/ca.crt",
      "--peer-client-cert-auth=true",
  };
  return argv;
}

EtcdMember::EtcdMember(EtcdMemberSettings settings) : settings_(std::move(settings)) {
  // Spawned by the supervisor's own thread, which lives as long as this
  // object: a child's parent-death signal follows the thread that forked
  // it, and a thread of the gRPC server's pool may end any time.
  supervisor_ = std::thread([this] { supervise(); });
}

EtcdMember::~EtcdMember() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  stop_requested_.notify_all();
  supervisor_.join();
  if (child_) {
    child_->signal(SIGTERM);
    for (int i = 0; i < 50 && !child_->try_wait(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  // ~ChildProcess kills what is still running.
}

pid_t EtcdMember::pid() const {
  std::lock_guard lock(mutex_);
  return child_ ? child_->pid() : 0;
}

unsigned EtcdMember::restarts() const {
  std::lock_guard lock(mutex_);
  return restarts_;
}

void EtcdMember::supervise() {
  std::unique_lock lock(mutex_);
  bool first = true;
  while (!stopping_) {
    if (!first) {
      // ChildProcess offers no exit notification; etcd exits rarely, and a
      // 200 ms look is well inside the election timeout that a restart
      // competes with anyway.
      stop_requested_.wait_for(lock, std::chrono::milliseconds(200));
      if (stopping_) break;
      if (child_) {
        auto code = child_->try_wait();
        if (!code) continue;
        log::warning("etcd member " + settings_.name + " exited (code " + std::to_string(*code) +
                     "); starting it again in 1 s");
        child_.reset();
      }
      if (stop_requested_.wait_for(lock, std::chrono::seconds(1), [this] { return stopping_; })) {
        break;
      }
    }
    try {
      child_ = ChildProcess::spawn(etcd_command_line(settings_), {});
      if (first) {
        log::info("etcd member " + settings_.name + " started (pid " +
                  std::to_string(child_->pid()) + ")");
      } else {
        ++restarts_;
      }
    } catch (const std::exception& e) {
      log::error("etcd member " + settings_.name + " cannot start: " + e.what());
    }
    first = false;
  }
}

}  // namespace keel::cluster
