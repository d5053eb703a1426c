// Seccomp filters for a jailed keel-vmm (libseccomp), one per thread kind.
// The process filter (every call any keel-vmm thread makes) goes on first,
// at the drop; each thread then stacks the narrower filter of its kind
// when it starts (filters only ever narrow: the kernel runs them all).
// A call outside the filter never runs: SIGSYS stops the VMM at once with
// a line naming the call and the thread kind, exit code kForbiddenCallExit.
#pragma once

namespace keel::jail {

enum class ThreadKind {
  kEventLoop,  // main: control socket, devices' queues, disks, network
  kVcpu,       // KVM_RUN and the exits handled on it (port and MMIO devices)
  kWorker,     // snapshot writer, migration sender and its helpers
};

inline constexpr int kForbiddenCallExit = 15;

// Installs the SIGSYS handler and the process filter on the calling thread
// (the main thread, before any other thread exists). Threads started later
// inherit it.
void install_process_filter();

// On a thread of `kind`, first thing: names the thread `name` (at most 15
// characters) and stacks that kind's filter when the process is filtered
// (jailed).
void confine_thread(ThreadKind kind, const char* name);

const char* thread_kind_name(ThreadKind kind);

}  // namespace keel::jail
