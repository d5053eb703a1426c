#include "vmm/jail/process_jail.h"

#include <fcntl.h>
#include <grp.h>
#include <linux/close_range.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>

#include "common/error.h"
#include "common/log.h"
#include "vmm/jail/syscall_filter.h"

namespace keel::jail {

namespace {

pid_t g_started_pid = 0;      // the supervisor's, in jailed mode
int g_supervisor_alive = -1;  // hangs up when the supervisor is gone

// The supervisor may have died before the death signal was armed.
void exit_if_supervisor_gone() {
  pollfd hangup{g_supervisor_alive, POLLIN, 0};
  if (::poll(&hangup, 1, 0) != 0) std::_Exit(1);
}

uint32_t parse_id(const std::string& text, const std::string& whole) {
  uint32_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() ||
      value == static_cast<uint32_t>(-1)) {
    throw InputError("invalid value for --jail: '" + whole + "' (expected UID or UID:GID)");
  }
  return value;
}

void set_limit(int resource, rlim_t value, const char* name) {
  const rlimit limit{value, value};
  if (::setrlimit(resource, &limit) != 0) throw_errno(std::string("setrlimit ") + name);
}

// Highest descriptor open now: the limit leaves room above it for the
// control connections, a migration's sockets and a snapshot's files.
int highest_open_fd() {
  int highest = 2;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    int fd = 0;
    const std::string name = entry.path().filename().string();
    if (std::from_chars(name.data(), name.data() + name.size(), fd).ec == std::errc())
      highest = std::max(highest, fd);
  }
  return highest;
}

// An empty, read-only tmpfs as /, the old root detached: what the VMM
// needs it holds open already, so it needs no path at all.
void pivot_into_empty_root() {
  if (::unshare(CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS) != 0)
    throw_errno("unshare(CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS)");
  // Nothing done below may reach the host's mount table.
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0)
    throw_errno("making / private in the jail's mount namespace");
  // Any directory serves as the mount point: the mount is ours alone.
  const char* base = "/tmp";
  if (::mount("keel-jail", base, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=16k,mode=0755") !=
      0)
    throw_errno("mounting the jail's tmpfs root");
  if (::chdir(base) != 0) throw_errno("chdir to the jail's root");
  if (::mkdir("old", 0700) != 0) throw_errno("mkdir old root in the jail");
  if (::syscall(SYS_pivot_root, ".", "old") != 0) throw_errno("pivot_root into the jail");
  if (::chdir("/") != 0) throw_errno("chdir / in the jail");
  if (::umount2("/old", MNT_DETACH) != 0) throw_errno("detaching the old root");
  if (::rmdir("/old") != 0) throw_errno("rmdir old root in the jail");
  if (::mount(nullptr, "/", nullptr, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
              nullptr) != 0)
    throw_errno("remounting the jail's root read-only");
}

void check_writable_dir(const std::string& dir, const JailUser& user) {
  if (dir.empty()) return;
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) throw_errno("stat " + dir);
  if (st.st_uid != user.uid) {
    throw InputError("--snapshot-root " + dir + " belongs to uid " + std::to_string(st.st_uid) +
                     ", but the jailed VMM runs as uid " + std::to_string(user.uid) +
                     " and must own it (chown " + std::to_string(user.uid) + ":" +
                     std::to_string(user.gid) + " " + dir + ")");
  }
}

[[noreturn]] void supervise(pid_t child, const sigset_t& signals, const std::string& api_socket) {
  for (;;) {
    siginfo_t info{};
    if (::sigwaitinfo(&signals, &info) < 0) {
      if (errno == EINTR) continue;
      std::_Exit(1);
    }
    if (info.si_signo != SIGCHLD) {
      ::kill(child, info.si_signo);
      continue;
    }
    int status = 0;
    const pid_t done = ::waitpid(child, &status, WNOHANG);
    if (done != child) continue;
    struct stat st {};
    if (!api_socket.empty() && ::lstat(api_socket.c_str(), &st) == 0 && S_ISSOCK(st.st_mode))
      ::unlink(api_socket.c_str());
    if (WIFEXITED(status)) std::_Exit(WEXITSTATUS(status));
    const int sig = WTERMSIG(status);
    const char* name = ::sigdescr_np(sig);
    const std::string line = "keel-vmm: error: the jailed VMM was killed by signal " +
                             std::to_string(sig) + " (" + (name ? name : "?") + ")\n";
    [[maybe_unused]] auto unused = ::write(STDERR_FILENO, line.data(), line.size());
    std::_Exit(128 + sig);
  }
}

}  // namespace

JailUser parse_jail_user(const std::string& text) {
  JailUser user;
  const size_t colon = text.find(':');
  user.uid = parse_id(text.substr(0, colon), text);
  user.gid = colon == std::string::npos ? user.uid : parse_id(text.substr(colon + 1), text);
  if (user.uid == 0 || user.gid == 0) {
    throw InputError("--jail " + text + ": the jailed VMM must not run as root (uid or gid 0)");
  }
  return user;
}

void close_inherited_fds() {
  if (::syscall(SYS_close_range, 3u, ~0u, 0u) != 0) throw_errno("close_range");
}

void enter_pid_namespace(const std::string& api_socket) {
  if (::unshare(CLONE_NEWPID) != 0) throw_errno("unshare(CLONE_NEWPID)");
  // Blocked before the fork, so that none is lost before the supervisor
  // waits; the child unblocks them.
  sigset_t signals, previous;
  sigemptyset(&signals);
  for (int sig : {SIGCHLD, SIGINT, SIGTERM, SIGHUP}) sigaddset(&signals, sig);
  if (::sigprocmask(SIG_BLOCK, &signals, &previous) != 0) throw_errno("sigprocmask");
  // The supervisor holds the write end: the child sees it hang up if the
  // supervisor died before the child's death signal was armed (getppid()
  // is 0 across the namespace boundary, so it cannot tell).
  g_started_pid = ::getpid();
  int alive[2];
  if (::pipe2(alive, O_CLOEXEC) != 0) throw_errno("pipe2");
  const pid_t child = ::fork();
  if (child < 0) throw_errno("fork into the jail's pid namespace");
  if (child > 0) {
    ::close(alive[0]);
    supervise(child, signals, api_socket);
  }
  ::close(alive[1]);
  // The child: PID 1 of its namespace. It dies with the supervisor (even a
  // SIGKILL of the supervisor ends the VM: nothing runs unsupervised).
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) throw_errno("prctl(PR_SET_PDEATHSIG)");
  g_supervisor_alive = alive[0];
  exit_if_supervisor_gone();
  if (::sigprocmask(SIG_SETMASK, &previous, nullptr) != 0) throw_errno("sigprocmask");
}

void enter_jail(const JailUser& user, const JailLimits& limits) {
  check_writable_dir(limits.writable_dir, user);
  const int highest_fd = highest_open_fd();
  // glibc reads /etc/localtime on its first time conversion, gmtime_r too
  // (the RTC's, on a vCPU thread): done while the file is in reach.
  ::tzset();
  pivot_into_empty_root();
  // Set while still root: raising a hard limit needs CAP_SYS_RESOURCE.
  set_limit(RLIMIT_CORE, 0, "RLIMIT_CORE");
  set_limit(RLIMIT_NOFILE, static_cast<rlim_t>(highest_fd) + 1 + 256, "RLIMIT_NOFILE");
  // Threads count against the user's processes; the uid is this VM's alone.
  set_limit(RLIMIT_NPROC, limits.threads + 64, "RLIMIT_NPROC");
  // A write past this fails with EFBIG instead of killing the VMM.
  ::signal(SIGXFSZ, SIG_IGN);
  set_limit(RLIMIT_FSIZE, limits.largest_file + (1ull << 30), "RLIMIT_FSIZE");
  if (::setgroups(0, nullptr) != 0) throw_errno("setgroups");
  if (::setresgid(user.gid, user.gid, user.gid) != 0)
    throw_errno("setresgid " + std::to_string(user.gid));
  if (::setresuid(user.uid, user.uid, user.uid) != 0)
    throw_errno("setresuid " + std::to_string(user.uid));
  // A change of user clears the death signal (commit_creds): armed again.
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) throw_errno("prctl(PR_SET_PDEATHSIG)");
  if (g_supervisor_alive >= 0) {
    exit_if_supervisor_gone();
    ::close(g_supervisor_alive);
    g_supervisor_alive = -1;
  }
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) throw_errno("prctl(PR_SET_NO_NEW_PRIVS)");
  // Guest memory is the guest's: no core file, no ptrace by the same user.
  if (::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) throw_errno("prctl(PR_SET_DUMPABLE)");
  install_process_filter();
  log::info("jailed: uid " + std::to_string(user.uid) + " gid " + std::to_string(user.gid) +
            ", empty root, pid namespace, seccomp filter");
}

pid_t started_pid() {
  return g_started_pid != 0 ? g_started_pid : ::getpid();
}

}  // namespace keel::jail
