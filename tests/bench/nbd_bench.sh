#!/usr/bin/env bash
# Benchmark (by hand, not a test): a VM disk over NBD. One pool VM's disk on
# Btrfs (a loop device) is read and written by the test guest's diskbench
# job in three ways: keel-vmm on the file itself (local, io_uring), keel-vmm
# on the export `keelctl nbd serve` makes of it over loopback TCP (Keel's
# NBD client), and QEMU (KVM, q35, virtio-blk-pci) on the very same export
# (QEMU's NBD client). 4 KiB random reads and writes at queue depth 1 and 32
# (diskbench's other tests run too and are left out). RUNS rounds, the order
# rotating; prints the medians, keel-nbd/keel-local and keel-nbd/qemu-nbd
# per test, then one JSON line.
#
# Where: tools/kvm-run --need kvm decides (the box on machines without a
# hardware-assisted /dev/kvm, where QEMU's KVM must run). In the box only
# the ratios mean anything.
#
# usage: tests/bench/nbd_bench.sh [BUILD_DIR] [RUNS]
# env:   KEEL_BENCH_SECONDS  seconds per diskbench test (default 3)
#        KEEL_BENCH_MIB      disk size and region used, MiB (default 256)
# Exit status 0 when every run of every peer produced its figures.
set -euo pipefail
build=$(cd "${1:-build}" && pwd)
runs=${2:-5}
top=$(cd "$(dirname "$0")/../.." && pwd)
secs=${KEEL_BENCH_SECONDS:-3}
mib=${KEEL_BENCH_MIB:-256}

if [[ -z ${KEEL_KVM_WHERE:-} ]]; then
	exec "$top/tools/kvm-run" --need kvm --build "$build" \
		--timeout $((180 + runs * 3 * (8 * secs + 60))) -- "$0" "$build" "$runs"
fi

vmm=$build/keel-vmm/keel-vmm
keelctl=$build/tools/keelctl/keelctl
testos=$build/guest-images/testos
qemu_cpu=$("$top/tools/qemu-kvm-cpu")
. "$top/tools/lib/scratch_btrfs.sh"
server=""
cleanup() {
	[[ -n $server ]] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
	scratch_btrfs_remove
}
trap cleanup EXIT
ip link set lo up
scratch_btrfs_make /var/tmp keel-nbd-bench $((mib * 3 + 512))
pool=$scratch_mnt/pool
tmp=$scratch_dir
export KEEL_POOL=$pool
"$keelctl" pool init "$pool" >/dev/null
dd if=/dev/zero of="$tmp/disk.raw" bs=1M count="$mib" status=none
"$keelctl" image import bench --disk "$tmp/disk.raw" --kernel "$testos/testos.bzImage" >/dev/null
"$keelctl" vm create b1 --image bench >/dev/null
disk=$pool/vms/b1/current/disk.raw
# Every block allocated, as a used disk's are.
dd if=/dev/zero of="$disk" bs=1M count="$mib" conv=notrunc,fsync status=none

port=10809
"$keelctl" nbd serve --listen "127.0.0.1:$port" --allow b1=127.0.0.1 >"$tmp/server.out" 2>"$tmp/server.err" &
server=$!
for _ in $(seq 100); do
	grep -q "serving NBD" "$tmp/server.out" && break
	sleep 0.1
done
grep -q "serving NBD" "$tmp/server.out" || {
	echo "nbd_bench: keelctl nbd serve did not start:" >&2
	cat "$tmp/server.err" >&2
	exit 1
}

results=$tmp/results # lines: PEER RUN TEST VALUE
failures=0
run_guest() { # PEER RUN
	local peer=$1 run=$2 out=$tmp/$1.console app="job=diskbench mib=$mib seconds=$secs"
	local -a cmd
	case $peer in
	keel-local) cmd=("$vmm" --disk "path=$disk") ;;
	keel-nbd) cmd=("$vmm" --disk "nbd=tcp:127.0.0.1:$port/b1") ;;
	qemu-nbd)
		cmd=(qemu-system-x86_64 -accel kvm -cpu "$qemu_cpu" -machine q35 -smp 1 -m 256 -nodefaults
			-no-user-config -display none -serial stdio -no-reboot -kernel "$testos/testos.elf"
			-append "$app" -drive "driver=nbd,host=127.0.0.1,port=$port,export=b1,if=none,id=d0"
			-device "virtio-blk-pci,drive=d0,disable-legacy=on")
		;;
	esac
	[[ $peer == keel-* ]] && cmd+=(--kernel "$testos/testos.bzImage" --memory 256M --cmdline "$app")
	local rc=0
	timeout --kill-after=10 $((180 + 12 * secs)) "${cmd[@]}" >"$out" 2>"$tmp/$peer.err" </dev/null || rc=$?
	tr -d '\r' <"$out" | awk -v peer="$peer" -v run="$run" '
    /^testos: diskbench test=rand/ {
      for (i = 2; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
      printf "%s %s %s-qd%s %s\n", peer, run, f["test"], f["qd"], f["iops"] }' >>"$results"
	if ((rc != 0)) || ! grep -q '^testos: diskbench OK' "$out"; then
		echo "nbd_bench: $peer run $run: exit $rc, no 'diskbench OK':" >&2
		tail -n 20 "$out" "$tmp/$peer.err" >&2
		failures=$((failures + 1))
	fi
}

peers=(keel-local keel-nbd qemu-nbd)
for ((r = 1; r <= runs; r++)); do
	for ((i = 0; i < 3; i++)); do run_guest "${peers[$(((i + r) % 3))]}" "$r"; done
done

python3 - "$results" "$failures" <<'EOF'
import json, statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
med = {}
for peer in ("keel-local", "keel-nbd", "qemu-nbd"):
    for test in ("randread-qd1", "randread-qd32", "randwrite-qd1", "randwrite-qd32"):
        v = [float(r[3]) for r in rows if r[0] == peer and r[2] == test]
        if v:
            med[(peer, test)] = statistics.median(v)
print("%-15s %11s %11s %11s %10s %10s" % ("test (IOPS)", "keel-local", "keel-nbd", "qemu-nbd",
                                          "nbd/local", "nbd/qemu"))
out = {"failures": int(sys.argv[2])}
for test in ("randread-qd1", "randread-qd32", "randwrite-qd1", "randwrite-qd32"):
    l, n, q = (med.get((p, test), 0) for p in ("keel-local", "keel-nbd", "qemu-nbd"))
    print("%-15s %11.0f %11.0f %11.0f %10.2f %10.2f" % (test, l, n, q, n / l if l else 0,
                                                       n / q if q else 0))
    out[test] = {"keel_local": l, "keel_nbd": n, "qemu_nbd": q}
print(json.dumps(out))
EOF
((failures == 0))
