#include "vmm/jail/syscall_filter.h"

#include <fcntl.h>
#include <linux/if_tun.h>
#include <linux/kvm.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "common/error.h"

namespace keel::jail {

namespace {

// Calls every thread makes: memory, locks, signals, its own end. Found by
// running keel-vmm under strace through boot, disks, network, snapshot,
// restore and migration, one thread kind at a time.
constexpr int kEveryThread[] = {
    SCMP_SYS(read),         SCMP_SYS(write),           SCMP_SYS(readv),
    SCMP_SYS(writev),       SCMP_SYS(close),           SCMP_SYS(futex),
    SCMP_SYS(rt_sigreturn), SCMP_SYS(rt_sigprocmask),  SCMP_SYS(sched_yield),
    SCMP_SYS(nanosleep),    SCMP_SYS(clock_nanosleep), SCMP_SYS(clock_gettime),
    SCMP_SYS(gettimeofday), SCMP_SYS(gettid),          SCMP_SYS(getpid),
    SCMP_SYS(exit),         SCMP_SYS(exit_group),      SCMP_SYS(madvise),
    SCMP_SYS(mmap),         SCMP_SYS(munmap),          SCMP_SYS(mprotect),
    SCMP_SYS(brk),          SCMP_SYS(mremap),          SCMP_SYS(set_robust_list),
    SCMP_SYS(rseq),         SCMP_SYS(restart_syscall), SCMP_SYS(tgkill),
    SCMP_SYS(poll),         SCMP_SYS(ppoll),           SCMP_SYS(getrandom),
};

// The event loop alone: control connections accepted, snapshot directories
// made, asio's own descriptors, the disks' io_uring.
constexpr int kLoopOnly[] = {
    SCMP_SYS(accept),          SCMP_SYS(accept4),        SCMP_SYS(mkdirat),
    SCMP_SYS(epoll_create1),   SCMP_SYS(eventfd2),       SCMP_SYS(timerfd_create),
    SCMP_SYS(timerfd_settime), SCMP_SYS(io_uring_enter), SCMP_SYS(io_uring_register),
};

// The event loop and the workers: files below the snapshot root (through
// its descriptor: the jail's own root is empty and read-only), a
// migration's socket, syncing disks.
constexpr int kLoopAndWorkers[] = {
    SCMP_SYS(pread64),      SCMP_SYS(pwrite64),    SCMP_SYS(preadv),
    SCMP_SYS(pwritev),      SCMP_SYS(lseek),       SCMP_SYS(fstat),
    SCMP_SYS(newfstatat),   SCMP_SYS(statx),       SCMP_SYS(fcntl),
    SCMP_SYS(openat),       SCMP_SYS(renameat2),   SCMP_SYS(fsync),
    SCMP_SYS(fdatasync),    SCMP_SYS(ftruncate),   SCMP_SYS(fallocate),
    SCMP_SYS(dup),          SCMP_SYS(dup3),        SCMP_SYS(pipe2),
    SCMP_SYS(epoll_ctl),    SCMP_SYS(epoll_wait),  SCMP_SYS(epoll_pwait),
    SCMP_SYS(unlinkat),     SCMP_SYS(connect),     SCMP_SYS(recvfrom),
    SCMP_SYS(sendto),       SCMP_SYS(recvmsg),     SCMP_SYS(sendmsg),
    SCMP_SYS(shutdown),     SCMP_SYS(getsockopt),  SCMP_SYS(setsockopt),
    SCMP_SYS(getsockname),  SCMP_SYS(getpeername), SCMP_SYS(sched_getaffinity),
    SCMP_SYS(rt_sigaction), SCMP_SYS(sigaltstack),
};

// What a vCPU thread asks of KVM: KVM_RUN, and what port and MMIO exits do
// (interrupt lines, MSI routes, the doorbells' ioeventfds).
constexpr unsigned long kVcpuIoctls[] = {
    KVM_RUN,
    KVM_IRQ_LINE,
    KVM_IRQ_LINE_STATUS,
    KVM_SIGNAL_MSI,
    KVM_SET_GSI_ROUTING,
    KVM_IRQFD,
    KVM_IOEVENTFD,
    KVM_GET_REGS,
    KVM_SET_REGS,
    KVM_GET_SREGS,
    // A device the driver starts (DRIVER_OK) from a vCPU: the tap's offloads
    // and its descriptor's blocking mode.
    TUNSETOFFLOAD,
    FIONBIO,
};

// ioctl request types (the type byte, _IOC_TYPE) by kind.
constexpr unsigned kKvmType = KVMIO;    // 0xAE
constexpr unsigned kTermiosType = 'T';  // FIONBIO, FIONREAD, TUN*: all 'T'

struct FilterDeleter {
  void operator()(scmp_filter_ctx ctx) const { seccomp_release(ctx); }
};
using Filter = std::unique_ptr<void, FilterDeleter>;

// Argument `arg` equal to `value` (SCMP_A0 and friends leave a field out,
// which clang's -Wmissing-field-initializers refuses).
scmp_arg_cmp equals(unsigned arg, scmp_datum_t value) {
  return scmp_arg_cmp{arg, SCMP_CMP_EQ, value, 0};
}

void allow(scmp_filter_ctx ctx, int call) {
  const int rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, call, 0);
  if (rc < 0) throw_errno(-rc, "seccomp_rule_add " + std::to_string(call));
}

template <typename T>
void allow_all(scmp_filter_ctx ctx, const T& calls) {
  for (int call : calls) allow(ctx, call);
}

void allow_ioctl_type(scmp_filter_ctx ctx, unsigned type) {
  const int rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1,
                                  SCMP_A1(SCMP_CMP_MASKED_EQ, 0xff00u, type << 8));
  if (rc < 0) throw_errno(-rc, "seccomp_rule_add ioctl");
}

void allow_ioctl(scmp_filter_ctx ctx, unsigned long request) {
  const int rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1,
                                  SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu, request));
  if (rc < 0) throw_errno(-rc, "seccomp_rule_add ioctl");
}

// Threads only: clone without CLONE_THREAD would be a new process. clone3
// hides its flags in memory a filter cannot read: ENOSYS sends glibc back
// to clone.
void allow_threads(scmp_filter_ctx ctx) {
  int rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(clone), 1,
                            SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD));
  if (rc < 0) throw_errno(-rc, "seccomp_rule_add clone");
  rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
  if (rc < 0) throw_errno(-rc, "seccomp_rule_add clone3");
}

// Thread names only (the filters name threads in their messages).
void allow_prctl_name(scmp_filter_ctx ctx) {
  const int rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(prctl), 1, equals(0, PR_SET_NAME));
  if (rc < 0) throw_errno(-rc, "seccomp_rule_add prctl");
}

// Sockets the VMM makes after the drop: a migration's TCP connection.
void allow_tcp_sockets(scmp_filter_ctx ctx) {
  for (int family : {AF_INET, AF_INET6}) {
    const int rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(socket), 1,
                                    equals(0, static_cast<scmp_datum_t>(family)));
    if (rc < 0) throw_errno(-rc, "seccomp_rule_add socket");
  }
}

// Filters stacked later (each thread's own): they can only narrow.
void allow_more_filters(scmp_filter_ctx ctx) {
  const int rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(seccomp), 1,
                                  equals(0, SECCOMP_SET_MODE_FILTER));
  if (rc < 0) throw_errno(-rc, "seccomp_rule_add seccomp");
}

Filter new_filter() {
  Filter ctx(seccomp_init(SCMP_ACT_TRAP));
  if (!ctx) throw std::runtime_error("seccomp_init failed");
  // enter_jail() set no_new_privs already; libseccomp would set it again
  // on every load, a prctl the filters do not allow.
  const int rc = seccomp_attr_set(ctx.get(), SCMP_FLTATR_CTL_NNP, 0);
  if (rc < 0) throw_errno(-rc, "seccomp_attr_set SCMP_FLTATR_CTL_NNP");
  return ctx;
}

void load(const Filter& ctx, const char* what) {
  const int rc = seccomp_load(ctx.get());
  if (rc < 0) throw_errno(-rc, std::string("loading the ") + what + " seccomp filter");
}

// Filled before the first filter loads: the handler only reads them.
std::vector<std::string> g_call_names;
std::atomic<bool> g_filtered{false};
thread_local ThreadKind t_kind = ThreadKind::kEventLoop;

void append(char* line, size_t size, size_t& used, const char* text) {
  while (*text && used + 1 < size) line[used++] = *text++;
  line[used] = '\0';
}

// Async-signal-safe: fixed buffers, write(2) and _exit(2) only. The call
// did not run; the VMM stops before a compromised thread tries another.
void on_forbidden_call(int, siginfo_t* info, void*) {
  char line[256];
  size_t used = 0;
  char number[16];
  int n = info->si_syscall, digits = 0;
  char reversed[16];
  do {
    reversed[digits++] = static_cast<char>('0' + (n % 10 + 10) % 10);
    n /= 10;
  } while (n != 0 && digits < 15);
  for (int i = 0; i < digits; ++i) number[i] = reversed[digits - 1 - i];
  number[digits] = '\0';
  const int call = info->si_syscall;
  const char* name =
      (call >= 0 && static_cast<size_t>(call) < g_call_names.size() && !g_call_names[call].empty())
          ? g_call_names[call].c_str()
          : "unknown";
  append(line, sizeof line, used, "keel-vmm: error: seccomp: forbidden system call ");
  append(line, sizeof line, used, name);
  append(line, sizeof line, used, " (");
  append(line, sizeof line, used, number);
  append(line, sizeof line, used, ") on a ");
  append(line, sizeof line, used, thread_kind_name(t_kind));
  append(line, sizeof line, used, " thread: the VMM stops (exit code 15)\n");
  [[maybe_unused]] auto unused = ::write(STDERR_FILENO, line, used);
  ::_exit(kForbiddenCallExit);
}

void install_sigsys_handler() {
  g_call_names.resize(512);
  for (int call = 0; call < static_cast<int>(g_call_names.size()); ++call) {
    if (char* name = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, call)) {
      g_call_names[call] = name;
      std::free(name);
    }
  }
  struct sigaction action {};
  action.sa_sigaction = on_forbidden_call;
  action.sa_flags = SA_SIGINFO;
  sigfillset(&action.sa_mask);
  if (::sigaction(SIGSYS, &action, nullptr) != 0) throw_errno("sigaction SIGSYS");
}

}  // namespace

const char* thread_kind_name(ThreadKind kind) {
  switch (kind) {
    case ThreadKind::kEventLoop:
      return "event-loop";
    case ThreadKind::kVcpu:
      return "vCPU";
    case ThreadKind::kWorker:
      return "worker";
  }
  return "?";
}

namespace {

// The rules of one thread kind. The event loop's are every call keel-vmm
// makes (it starts the workers; the vCPUs' KVM ioctls are KVM's type),
// so the process filter is built from them too.
Filter filter_for(ThreadKind kind) {
  Filter ctx = new_filter();
  allow_all(ctx.get(), kEveryThread);
  allow_prctl_name(ctx.get());
  switch (kind) {
    case ThreadKind::kVcpu:
      for (unsigned long request : kVcpuIoctls) allow_ioctl(ctx.get(), request);
      // Work handed to the event loop (asio's post wakes its epoll).
      allow(ctx.get(), SCMP_SYS(epoll_ctl));
      break;
    case ThreadKind::kEventLoop:
      allow_all(ctx.get(), kLoopOnly);
      [[fallthrough]];
    case ThreadKind::kWorker:
      // Workers start workers too (the migration's watchdog, the throttle).
      allow_more_filters(ctx.get());
      allow_all(ctx.get(), kLoopAndWorkers);
      allow_threads(ctx.get());
      allow_tcp_sockets(ctx.get());
      allow_ioctl_type(ctx.get(), kKvmType);
      allow_ioctl_type(ctx.get(), kTermiosType);
      break;
  }
  return ctx;
}

}  // namespace

void install_process_filter() {
  install_sigsys_handler();
  load(filter_for(ThreadKind::kEventLoop), "process");
  g_filtered.store(true);
}

void confine_thread(ThreadKind kind, const char* name) {
  // Named for operators (top -H) whether filtered or not; PR_SET_NAME is
  // allowed to every kind.
  ::pthread_setname_np(::pthread_self(), name);
  t_kind = kind;
  if (!g_filtered.load()) return;
  load(filter_for(kind), thread_kind_name(kind));
}

}  // namespace keel::jail
