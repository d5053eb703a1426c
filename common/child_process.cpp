#include "common/child_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <stdexcept>
#include <string_view>
#include <utility>

#include "common/error.h"

namespace keel {

namespace {

int decode_status(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 255;
}

void make_pipe(UniqueFd& read_end, UniqueFd& write_end) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) < 0) throw_errno("pipe2");
  read_end.reset(fds[0]);
  write_end.reset(fds[1]);
}

}  // namespace

ChildProcess ChildProcess::spawn(const std::vector<std::string>& argv, const Options& options) {
  if (argv.empty()) throw std::invalid_argument("ChildProcess::spawn: empty argv");
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  // Everything the child needs is prepared before fork: after it, only
  // async-signal-safe calls. The environment is this one plus extra_env.
  std::vector<std::string> env_storage = options.extra_env;
  std::vector<char*> env;
  for (auto& e : env_storage) env.push_back(e.data());
  for (char** e = environ; *e != nullptr; ++e) {
    std::string_view entry(*e);
    bool overridden = false;
    for (const auto& x : env_storage) {
      auto eq = x.find('=');
      if (entry.substr(0, eq + 1) == std::string_view(x).substr(0, eq + 1)) overridden = true;
    }
    if (!overridden) env.push_back(*e);
  }
  env.push_back(nullptr);
  const pid_t parent = ::getpid();
  UniqueFd out_read, out_write, err_read, err_write;
  if (options.capture_stdout) make_pipe(out_read, out_write);
  if (options.capture_stderr) make_pipe(err_read, err_write);

  pid_t pid = ::fork();
  if (pid < 0) throw_errno("fork");
  if (pid == 0) {
    // The child dies with its owner, however the owner ends (a test killed
    // from outside must not leave a guest running).
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    if (out_write.valid()) ::dup2(out_write.get(), STDOUT_FILENO);
    if (err_write.valid()) ::dup2(err_write.get(), STDERR_FILENO);
    ::execvpe(args[0], args.data(), env.data());
    ::_exit(127);
  }
  ChildProcess child;
  child.pid_ = pid;
  child.stdout_ = std::move(out_read);
  child.stderr_ = std::move(err_read);
  return child;
}

ChildProcess::ChildProcess(ChildProcess&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)),
      status_(other.status_),
      stdout_(std::move(other.stdout_)),
      stderr_(std::move(other.stderr_)) {}

ChildProcess& ChildProcess::operator=(ChildProcess&& other) noexcept {
  if (this != &other) {
    kill_and_reap();
    pid_ = std::exchange(other.pid_, -1);
    status_ = other.status_;
    stdout_ = std::move(other.stdout_);
    stderr_ = std::move(other.stderr_);
  }
  return *this;
}

ChildProcess::~ChildProcess() {
  kill_and_reap();
}

void ChildProcess::kill_and_reap() {
  if (pid_ > 0 && !status_) {
    ::kill(pid_, SIGKILL);
    int status;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
  }
  pid_ = -1;
}

void ChildProcess::signal(int signo) const {
  if (pid_ > 0 && !status_) ::kill(pid_, signo);
}

int ChildProcess::wait() {
  if (status_) return *status_;
  if (pid_ <= 0) throw std::logic_error("ChildProcess::wait on a moved-from process");
  int status;
  while (::waitpid(pid_, &status, 0) < 0) {
    if (errno != EINTR) throw_errno("waitpid");
  }
  status_ = decode_status(status);
  return *status_;
}

std::optional<int> ChildProcess::try_wait() {
  if (status_) return status_;
  if (pid_ <= 0) throw std::logic_error("ChildProcess::try_wait on a moved-from process");
  int status;
  pid_t r = ::waitpid(pid_, &status, WNOHANG);
  if (r < 0) throw_errno("waitpid");
  if (r == 0) return std::nullopt;
  status_ = decode_status(status);
  return status_;
}

CommandResult run_command(const std::vector<std::string>& argv, std::chrono::milliseconds timeout,
                          const std::vector<std::string>& extra_env, const CommandWatch& watch) {
  ChildProcess::Options options;
  options.capture_stdout = true;
  options.capture_stderr = true;
  options.extra_env = extra_env;
  auto child = ChildProcess::spawn(argv, options);
  CommandResult result{0, false, {}, {}};
  auto deadline = std::chrono::steady_clock::now() + timeout;
  pollfd fds[2] = {{child.stdout_fd(), POLLIN, 0}, {child.stderr_fd(), POLLIN, 0}};
  std::string* sinks[2] = {&result.out, &result.err};
  int open_fds = 2;
  char buf[4096];
  while (open_fds > 0) {
    if (watch && watch(result, child.pid())) {
      result.timed_out = true;
      child.signal(SIGKILL);
      break;
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      result.timed_out = true;
      child.signal(SIGKILL);
      break;
    }
    int n = ::poll(fds, 2, static_cast<int>(left.count()));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_errno("poll");
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      ssize_t got = ::read(fds[i].fd, buf, sizeof buf);
      if (got > 0) {
        sinks[i]->append(buf, static_cast<size_t>(got));
      } else if (got == 0 || errno != EINTR) {
        fds[i].fd = -1;
        --open_fds;
      }
    }
  }
  result.exit_code = child.wait();
  if (result.timed_out) result.exit_code = 124;
  return result;
}

}  // namespace keel
