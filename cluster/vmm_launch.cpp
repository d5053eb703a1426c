#include "cluster/vmm_launch.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <sstream>
#include <thread>

#include "cluster/agent_error.h"
#include "common/error.h"
#include "common/unique_fd.h"
#include "control/control_client.h"
#include "storage/vm_runtime.h"

namespace keel::cluster {

namespace fs = std::filesystem;

namespace {

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Forks twice (the VMM's parent exits at once, so init adopts it) and
// returns the VMM's PID.
pid_t spawn_detached(const std::vector<std::string>& argv, const fs::path& log) {
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) throw_errno("pipe");
  const pid_t child = ::fork();
  if (child < 0) throw_errno("fork");
  if (child == 0) {
    ::close(pipe_fds[0]);
    // The starter's blocked signals (keel-agent blocks SIGTERM and SIGINT
    // for sigwait) and ignored ones are not the VMM's.
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::signal(SIGPIPE, SIG_DFL);
    ::setsid();
    const pid_t vmm = ::fork();
    if (vmm != 0) {
      (void)!::write(pipe_fds[1], &vmm, sizeof vmm);
      ::_exit(vmm < 0 ? 1 : 0);
    }
    const int null = ::open("/dev/null", O_RDONLY);
    const int out = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW, 0600);
    if (null < 0 || out < 0) ::_exit(127);
    ::dup2(null, 0);
    ::dup2(out, 1);
    ::dup2(out, 2);
    if (null > 2) ::close(null);
    if (out > 2) ::close(out);
    std::vector<char*> cargv;
    for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
    cargv.push_back(nullptr);
    ::execvp(cargv[0], cargv.data());
    ::_exit(127);
  }
  ::close(pipe_fds[1]);
  pid_t vmm = -1;
  const ssize_t got = ::read(pipe_fds[0], &vmm, sizeof vmm);
  ::close(pipe_fds[0]);
  int status = 0;
  ::waitpid(child, &status, 0);
  if (got != sizeof vmm || vmm <= 0) throw std::runtime_error("could not start " + argv.at(0));
  return vmm;
}

}  // namespace

std::string vmm_program() {
  if (const char* env = std::getenv("KEEL_VMM"); env != nullptr && *env != '\0') return env;
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec).parent_path();
  for (const fs::path& p : {self / "keel-vmm", self / ".." / "keel-vmm" / "keel-vmm",
                            self / ".." / ".." / "keel-vmm" / "keel-vmm"}) {
    if (::access(p.c_str(), X_OK) == 0) return fs::weakly_canonical(p).string();
  }
  return "keel-vmm";
}

std::string last_line(const fs::path& file) {
  std::string text = read_text(file);
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  const auto start = text.rfind('\n');
  return start == std::string::npos ? text : text.substr(start + 1);
}

namespace {

// keel-vmm appends to its --serial file; a VM's console.log is kept for
// this run's output, the run before's moved to console.log.1 (not lost).
void keep_previous_console(const std::vector<std::string>& argv) {
  for (size_t i = 0; i + 1 < argv.size(); ++i) {
    if (argv[i] != "--serial" || argv[i + 1].rfind("file=", 0) != 0) continue;
    const std::string path = argv[i + 1].substr(5);
    std::error_code none_yet;
    fs::rename(path, path + ".1", none_yet);
  }
}

}  // namespace

pid_t launch_vmm(const VmmLaunch& launch) {
  const std::string& name = launch.vm;
  const fs::path run_dir = storage::vm_run_dir(name);
  fs::create_directories(run_dir);
  ::chmod(run_dir.c_str(), 0700);
  // One start at a time: the check below and the PID file written after
  // the start belong together.
  const fs::path lock_path = run_dir / "start.lock";
  UniqueFd lock(::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!lock.valid()) throw_errno("opening " + lock_path.string());
  if (::flock(lock.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) throw InputError("VM " + name + " is being started already");
    throw_errno("locking " + lock_path.string());
  }
  if (auto pid = storage::running_vmm(name)) {
    throw InputError("VM " + name + " is running already (keel-vmm " + std::to_string(*pid) + ")");
  }
  fs::remove(storage::vm_api_socket(name));
  keep_previous_console(launch.argv);
  const fs::path link = run_dir / "keel-vmm.log";
  std::error_code ignored;
  fs::remove(link, ignored);
  if (link != launch.log) fs::create_symlink(launch.log, link, ignored);

  const pid_t vmm = spawn_detached(launch.argv, launch.log);
  {
    // Whole or not at all: a temporary file renamed over the old one.
    const fs::path pid_path = storage::vm_pid_file(name);
    const fs::path tmp = pid_path.string() + ".tmp";
    std::ofstream pid_file(tmp, std::ios::trunc);
    pid_file << vmm << "\n";
    pid_file.close();
    if (!pid_file || ::rename(tmp.c_str(), pid_path.c_str()) != 0) {
      ::kill(vmm, SIGKILL);  // a VMM nobody could find again must not run on
      throw std::runtime_error("could not record keel-vmm's PID in " + pid_path.string());
    }
  }
  // Started once its control socket answers; a VMM that ends first failed:
  // its log says why.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < deadline) {
    if (::kill(vmm, 0) != 0) {
      std::string text = read_text(launch.log);
      const auto keep = text.size() > 2000 ? text.size() - 2000 : 0;
      throw InputError("keel-vmm for " + name + " ended at start:\n" + text.substr(keep));
    }
    if (launch.ready) {
      if (launch.ready()) return vmm;
    } else {
      try {
        ControlClient client(storage::vm_api_socket(name).string(), std::chrono::milliseconds(200));
        keel::api::v1::Request request;
        request.mutable_status();
        if (client.call(request, std::chrono::seconds(5)).ok()) return vmm;
      } catch (const ControlClientError&) {
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ::kill(vmm, SIGKILL);
  throw std::runtime_error("keel-vmm for " + name + " (PID " + std::to_string(vmm) +
                           ") was not ready within 30 s");
}

// A TCP port free on `address` now (the kernel's choice).
uint16_t free_port(const std::string& address) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in at{};
  at.sin_family = AF_INET;
  if (!fd.valid() || ::inet_pton(AF_INET, address.c_str(), &at.sin_addr) != 1 ||
      ::bind(fd.get(), reinterpret_cast<sockaddr*>(&at), sizeof at) != 0) {
    throw AgentError(AgentError::Code::kInternal,
                     "no port for a migration on " + address + " (IPv4 only for now)");
  }
  socklen_t length = sizeof at;
  ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&at), &length);
  return ntohs(at.sin_port);
}

// Whether a socket of this network namespace listens on TCP `port`
// (/proc/net/tcp: local address ADDR:PORT in hex, state 0A).
bool listening(uint16_t port) {
  std::ifstream in("/proc/net/tcp");
  std::string line;
  std::getline(in, line);  // the header
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string slot, local, remote, state;
    fields >> slot >> local >> remote >> state;
    const auto colon = local.find(':');
    if (colon == std::string::npos || state != "0A") continue;
    if (std::stoul(local.substr(colon + 1), nullptr, 16) == port) return true;
  }
  return false;
}

keel::api::v1::Response call_vmm(const std::string& vm, keel::api::v1::Request request,
                                 std::chrono::milliseconds wait) {
  ControlClient client(storage::vm_api_socket(vm).string(), std::chrono::seconds(5));
  return client.call(std::move(request), wait);
}

}  // namespace keel::cluster
