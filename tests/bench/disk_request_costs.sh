#!/usr/bin/env bash
# Benchmark (a program, not a test): where a virtio-blk request's time goes.
# The test guest's diskbench job runs on keel-vmm under `perf stat -I` (KVM
# and syscall tracepoints, context switches, CPU time, every thread of the
# VMM), and each diskbench test's steady middle is cut out of the intervals
# by the console lines' arrival times. fio (io_uring) on the same image
# beside it, under the same counters. Per request it prints: guest exits
# (all; to keel-vmm; doorbells KVM handled itself through ioeventfd;
# instructions KVM emulated), MSIs injected, keel-vmm's syscalls (and of
# them io_uring_enter, epoll_wait, read, write), context switches and CPU
# microseconds; then IOPS and keel/fio. Then one request's path at queue
# depth 1, from a `perf record` of the randread-qd1 test (syscalls and
# emulated instructions with CLOCK_MONOTONIC times): the medians of kick
# (the guest's doorbell write, emulated) to keel-vmm's event loop awake, to
# the io_uring submission returned, to the completion read, to the guest's
# next kick; and how often a wait ended in EINTR. Tracing adds a microsecond
# or two to each syscall.
#
#   tests/bench/disk_request_costs.sh BUILD [SECONDS]
#
# Needs perf (Debian's linux-perf) and tracefs (mounted if it is not).
# Environment: KEEL_BENCH_DIR (image directory, default BUILD), KEEL_BENCH_MIB
# (image and region, default 64). Runs where tools/kvm-run --need kvm says;
# in the box the counts still hold, the times do not.
set -euo pipefail
build=$(cd "${1:?usage: disk_request_costs.sh BUILD [SECONDS]}" && pwd)
secs=${2:-4}
top=$(cd "$(dirname "$0")/../.." && pwd)

if [[ -z ${KEEL_KVM_WHERE:-} ]]; then
	exec "$top/tools/kvm-run" --need kvm --build "$build" --env KEEL_BENCH_DIR --env KEEL_BENCH_MIB \
		--timeout $((300 + 20 * secs)) -- "$0" "$build" "$secs"
fi
command -v perf >/dev/null || {
	echo "disk_request_costs: perf not installed (linux-perf)" >&2
	exit 1
}
[[ -d /sys/kernel/tracing/events/kvm ]] || mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || true
[[ -d /sys/kernel/tracing/events/kvm ]] || {
	echo "disk_request_costs: no KVM tracepoints (tracefs)" >&2
	exit 1
}

export KEEL_BENCH_BUILD=$build KEEL_BENCH_SECONDS=$secs
exec python3 - <<'PY'
import os, shutil, subprocess, sys, tempfile, threading, time

build = os.environ["KEEL_BENCH_BUILD"]
secs = int(os.environ["KEEL_BENCH_SECONDS"])
mib = int(os.environ.get("KEEL_BENCH_MIB") or "64")
where = os.environ.get("KEEL_KVM_WHERE", "?")
imgdir = os.environ.get("KEEL_BENCH_DIR") or build
vmm = f"{build}/keel-vmm/keel-vmm"
testos = f"{build}/guest-images/testos/testos.bzImage"
scratch = tempfile.mkdtemp(prefix="keel-disk-costs-", dir="/var/tmp")
img = f"{imgdir}/disk-costs-{os.getpid()}.img"
INTERVAL_MS = 200

# (label, perf event); the first group is counted in the guest's vCPU
# thread (KVM), the rest in keel-vmm's threads.
EVENTS = [
    ("exits", "kvm:kvm_exit"),
    ("to VMM", "kvm:kvm_userspace_exit"),
    ("ioeventfd", "kvm:kvm_fast_mmio"),
    ("emulated", "kvm:kvm_emulate_insn"),
    ("MSIs", "kvm:kvm_msi_set_irq"),
    ("syscalls", "raw_syscalls:sys_enter"),
    ("uring_enter", "syscalls:sys_enter_io_uring_enter"),
    ("epoll_wait", "syscalls:sys_enter_epoll_wait"),
    ("read", "syscalls:sys_enter_read"),
    ("write", "syscalls:sys_enter_write"),
    ("ctx sw", "context-switches"),
    ("cpu us", "task-clock"),
]
FIO_EVENTS = [e for e in EVENTS if not e[1].startswith("kvm:")]

def perf_argv(events, out):
    argv = ["perf", "stat", "-I", str(INTERVAL_MS), "-x", ";", "-o", out]
    for _, e in events:
        argv += ["-e", e]
    return argv + ["--"]

def read_intervals(path):
    """{interval end (s since perf start): {event: count}}"""
    out = {}
    for line in open(path):
        if not line.strip() or line.startswith("#"):
            continue
        f = line.strip().split(";")
        if len(f) < 4 or f[1] in ("", "<not counted>", "<not supported>"):
            continue
        out.setdefault(round(float(f[0]), 3), {})[f[3]] = float(f[1])
    return out

def window_sums(intervals, start, end, events):
    """Sums over the intervals that lie inside [start, end], and the time they cover."""
    total = {e: 0.0 for _, e in events}
    covered = 0.0
    for t, counts in intervals.items():
        if t - INTERVAL_MS / 1000 >= start and t <= end:
            covered += INTERVAL_MS / 1000
            for _, e in events:
                total[e] += counts.get(e, 0.0)
    return total, covered

NR_READ, NR_EPOLL_WAIT, NR_IO_URING_ENTER = 0, 232, 426

def timeline(fio_qd1_iops):
    """One request's path at queue depth 1 (see the header)."""
    data = f"{scratch}/perf.data"
    t0 = time.monotonic()
    p = subprocess.Popen(["perf", "record", "-q", "-k", "CLOCK_MONOTONIC", "-o", data,
                          "-e", "kvm:kvm_emulate_insn", "-e", "raw_syscalls:sys_enter",
                          "-e", "raw_syscalls:sys_exit", "--",
                          vmm, "--kernel", testos, "--memory", "256M", "--disk", f"path={img}",
                          "--cmdline", f"job=diskbench mib={mib} seconds={secs}"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    lines = [(time.monotonic(), raw.decode(errors="replace").rstrip("\r\n")) for raw in p.stdout]
    p.wait()
    start = next((t for t, l in lines if l.startswith("testos: disk device")), None)
    end = next((t for t, l in lines if l.startswith("testos: diskbench test=randread bs=4096 qd=1 ")), None)
    if start is None or end is None:
        print("  timeline: keel-vmm gave no randread-qd1 result under perf record")
        return
    start, end = start + 0.5, end - 0.5
    script = subprocess.run(["perf", "script", "-i", data], capture_output=True, text=True).stdout
    kicks, main = [], {}
    per_tid = {}
    for line in script.splitlines():
        f = line.split()
        try:
            i = next(k for k, w in enumerate(f) if w.endswith(":") and w[:-1].replace(".", "").isdigit())
        except StopIteration:
            continue
        tid, ts, event = int(f[i - 2].split("/")[-1]), float(f[i][:-1]), f[i + 1]
        if not start <= ts <= end:
            continue
        if event == "kvm:kvm_emulate_insn:":
            kicks.append((ts, f[i + 2].rsplit(":", 1)[0]))
        elif event in ("raw_syscalls:sys_enter:", "raw_syscalls:sys_exit:"):
            nr = int(f[i + 3])
            enter = event.endswith("enter:")
            value = f[i + 4].strip("(,") if enter else f[i + 5]
            per_tid.setdefault(tid, []).append((ts, enter, nr, value))
    if not kicks or not per_tid:
        print("  timeline: no kicks or syscalls traced")
        return
    # The doorbell: the instruction emulated most often; the event loop: the
    # thread that submits to io_uring most often.
    rips = {}
    for _, rip in kicks:
        rips[rip] = rips.get(rip, 0) + 1
    doorbell = max(rips, key=rips.get)
    kicks = [ts for ts, rip in kicks if rip == doorbell]
    loop = max(per_tid, key=lambda t: sum(1 for e in per_tid[t] if e[2] == NR_IO_URING_ENTER))
    events = per_tid[loop]
    phases = {"A": [], "B": [], "C": [], "D": []}
    eintr = 0
    j = 0
    for k, k_next in zip(kicks, kicks[1:]):
        while j < len(events) and events[j][0] < k:
            j += 1
        wake = submitted = done = None
        m = j
        while m < len(events) and events[m][0] < k_next:
            ts, enter, nr, value = events[m]
            if not enter and nr == NR_EPOLL_WAIT and value == "-4":
                eintr += 1
            if wake is None:
                if not enter and nr == NR_EPOLL_WAIT and value not in ("0", "-4"):
                    wake = ts
            elif submitted is None:
                if not enter and nr == NR_IO_URING_ENTER:
                    submitted = ts
            elif done is None and enter and nr == NR_READ:
                done = ts
            m += 1
        if None in (wake, submitted, done):
            continue
        phases["A"].append(wake - k)
        phases["B"].append(submitted - wake)
        phases["C"].append(done - submitted)
        phases["D"].append(k_next - done)
    n = len(phases["A"])
    if n == 0:
        print("  timeline: no complete request cycle found")
        return
    med = {key: sorted(v)[len(v) // 2] * 1e6 for key, v in phases.items()}
    cycle = sorted(b - a for a, b in zip(kicks, kicks[1:]))[len(kicks) // 2 - 1] * 1e6
    print(f"  one request at queue depth 1 (randread, perf record, {n} cycles; medians, us):")
    print(f"    A kick emulated -> event loop awake (epoll_wait returns)        {med['A']:8.1f}")
    print(f"    B awake -> ioeventfd read, chain parsed, io_uring_enter returned {med['B']:8.1f}")
    print(f"    C submitted -> completion read (disk, io_uring, eventfd, wakes)  {med['C']:8.1f}")
    print(f"    D completion read -> used ring -> guest's next kick emulated     {med['D']:8.1f}")
    print(f"    kick to kick {cycle:.1f} us; waits ended by EINTR per request {eintr / max(1, len(kicks) - 1):.2f}"
          + (f"; fio at queue depth 1: {1e6 / fio_qd1_iops:.1f} us a request" if fio_qd1_iops else ""))

subprocess.run(["dd", "if=/dev/zero", f"of={img}", "bs=1M", f"count={mib}", "conv=fsync", "status=none"],
               check=True)
try:
    # keel-vmm: each diskbench test's line arrives as the test ends.
    perf_out = f"{scratch}/keel.csv"
    t0 = time.monotonic()
    p = subprocess.Popen(perf_argv(EVENTS, perf_out) + [
        vmm, "--kernel", testos, "--memory", "256M", "--disk", f"path={img}",
        "--cmdline", f"job=diskbench mib={mib} seconds={secs}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=open(f"{scratch}/keel.err", "wb"))
    lines = []
    for raw in p.stdout:
        lines.append((time.monotonic() - t0, raw.decode(errors="replace").rstrip("\r\n")))
    if p.wait() != 0 or not any(l.startswith("testos: diskbench OK") for _, l in lines):
        sys.exit("disk_request_costs: keel-vmm failed: " + repr([l for _, l in lines[-5:]]) +
                 open(f"{scratch}/keel.err").read())
    intervals = read_intervals(perf_out)
    start = next(t for t, l in lines if l.startswith("testos: disk device"))
    rows = []
    for t, l in lines:
        if not l.startswith("testos: diskbench test="):
            continue
        kv = dict(w.split("=", 1) for w in l.split()[2:] if "=" in w)
        name = f"{kv['test']}-qd{kv['qd']}"
        # The steady middle: half a second off each end.
        sums, covered = window_sums(intervals, start + 0.5, t - 0.5, EVENTS)
        start = t
        if kv["test"].startswith("seq") or covered <= 0:
            continue
        rows.append((name, int(kv["iops"]), sums, covered))

    # fio on the same image, the same random tests, same counters.
    fio_iops = {}
    fio_costs = {}
    for name, rw, qd in [("randread-qd1", "randread", 1), ("randread-qd32", "randread", 32),
                         ("randwrite-qd1", "randwrite", 1), ("randwrite-qd32", "randwrite", 32)]:
        out = f"{scratch}/fio-{name}.csv"
        r = subprocess.run(perf_argv(FIO_EVENTS, out) + [
            "fio", "--name", name, "--filename", img, "--ioengine=io_uring", "--direct=1", f"--size={mib}M",
            f"--rw={rw}", "--bs=4k", f"--iodepth={qd}", "--time_based=1", f"--runtime={secs}",
            "--norandommap=1", "--output-format=terse", "--terse-version=3"],
            capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"disk_request_costs: fio failed: {r.stderr}")
        f = r.stdout.strip().split(";")
        iops = int(f[7] if rw == "randread" else f[48])
        fio_iops[name] = iops
        iv = read_intervals(out)
        end = max(iv) if iv else 0
        sums, covered = window_sums(iv, 0.7, end - 0.3, FIO_EVENTS)
        if covered > 0 and iops > 0:
            fio_costs[name] = {e: sums[e] / (iops * covered) for _, e in FIO_EVENTS}

    print(f"disk_request_costs: where={where}, {mib} MiB image in {imgdir}, {secs} s per test, "
          f"counts per request over each test's steady middle ({os.cpu_count()} CPUs)")
    head = "  {:<15}{:>9}".format("test", "IOPS") + "".join(f"{label:>12}" for label, _ in EVENTS)
    print(head)
    for name, iops, sums, covered in rows:
        per = [sums[e] / (iops * covered) for _, e in EVENTS]
        cells = "".join(f"{v * 1000 if e == 'task-clock' else v:>12.2f}" for (_, e), v in zip(EVENTS, per))
        print("  {:<15}{:>9}".format("keel " + name, iops) + cells)
        fc = fio_costs.get(name)
        if fc:
            cells = "".join(
                f"{'':>12}" if e.startswith("kvm:") else f"{fc[e] * 1000 if e == 'task-clock' else fc[e]:>12.2f}"
                for _, e in EVENTS)
            print("  {:<15}{:>9}".format("fio  " + name, fio_iops[name]) + cells)
    timeline(fio_iops.get("randread-qd1"))
    print("  keel/fio IOPS: " + ", ".join(
        f"{name} {iops / fio_iops[name]:.2f}" for name, iops, _, _ in rows if fio_iops.get(name)))
    print("  (exits: every guest exit; to VMM: KVM_RUN returning to keel-vmm; ioeventfd: doorbells KVM "
          "handled itself on its fast MMIO path; emulated: instructions KVM's emulator ran; a KVM without "
          "those tracepoints (PVM has no kvm_exit, no kvm_fast_mmio) counts 0 there. cpu us: CPU time of "
          "every keel-vmm (or fio) thread per request, from task-clock: keel-vmm's includes the vCPU "
          "thread, busy the whole time since the test guest polls its queues)")
finally:
    os.unlink(img)
    shutil.rmtree(scratch, ignore_errors=True)
PY
