#!/usr/bin/env bash
# Benchmark (by hand, not a test): virtio-blk on one raw image file. The host
# peer is fio (io_uring, O_DIRECT where the file system takes it); the guest
# side is the test guest's diskbench job, on keel-vmm and on QEMU (KVM, q35,
# testos.elf through PVH, virtio-blk-pci) on the very same file. Same tests
# everywhere: 4 KiB randread/randwrite at queue depth 1 and 32, 1 MiB
# seqread/seqwrite at depth 4, time-based. RUNS rounds (the order of the three
# rotates each round); prints per test the medians, keel/fio and keel/qemu,
# then one JSON line.
#
# Where: tools/kvm-run --need kvm decides (KEEL_KVM_WHERE); QEMU runs beside
# keel-vmm in the same place, with -cpu from tools/qemu-kvm-cpu (host, or on
# a PVM /dev/kvm host,-arch-capabilities), said in the results. In the KVM test
# host ("box": QEMU TCG with nested KVM, 5-20x slower) only the ratios mean
# anything. There the image sits on two file systems in turn: the box's tmpfs
# (/var/tmp: no O_DIRECT, so fio and QEMU run buffered) and Btrfs on a loop
# device (nodatacow image; O_DIRECT applies at Btrfs, the loop device below
# is backed by a tmpfs file, so the data lives in RAM). Directly on a host,
# the image is in $KEEL_BENCH_DIR (default BUILD_DIR), whatever file system
# that is.
#
# usage: tests/bench/disk_bench.sh [BUILD_DIR] [RUNS]
# env:   KEEL_BENCH_SECONDS  seconds per test (default 3)
#        KEEL_BENCH_MIB      image size and region used, MiB (default 256)
#        KEEL_BENCH_FS       box only: "tmpfs btrfs" (default), or one of them
#        KEEL_BENCH_DIR      direct only: where the image goes
# Exit status 0 when every run of every peer produced all six figures.
set -euo pipefail
build=$(cd "${1:-build}" && pwd)
runs=${2:-5}
top=$(cd "$(dirname "$0")/../.." && pwd)
secs=${KEEL_BENCH_SECONDS:-3}
mib=${KEEL_BENCH_MIB:-256}

if [[ -z ${KEEL_KVM_WHERE:-} ]]; then
	# Each round: three peers x six tests x secs, plus two guest boots.
	exec "$top/tools/kvm-run" --need kvm --build "$build" \
		--timeout $((120 + runs * 2 * (20 * secs + 60))) -- "$0" "$build" "$runs"
fi
where=$KEEL_KVM_WHERE

vmm=$build/keel-vmm/keel-vmm
testos=$build/guest-images/testos
[[ -x $vmm && -f $testos/testos.bzImage && -f $testos/testos.elf ]] ||
	{
		echo "disk_bench: build keel-vmm and testos first ($build)" >&2
		exit 1
	}
command -v fio >/dev/null || {
	echo "disk_bench: fio not installed" >&2
	exit 1
}
# The QEMU peer's CPU model: host, or what this /dev/kvm takes (PVM refuses
# an MSR of QEMU's host model; tools/qemu-kvm-cpu).
qemu_cpu=$("$top/tools/qemu-kvm-cpu")

tests=(randread-qd1 randread-qd32 randwrite-qd1 randwrite-qd32 seqread-qd4 seqwrite-qd4)
failures=0
pids=() mounts=() loops=() dirs=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for m in "${mounts[@]}"; do umount "$m" 2>/dev/null || true; done
	for l in "${loops[@]}"; do losetup -d "$l" 2>/dev/null || true; done
	for d in "${dirs[@]}"; do rm -rf "$d"; done
}
trap cleanup EXIT
# Scratch (logs, tmpfs images): the box's /var/tmp is a tmpfs; directly, the
# usual temp dir.
tmp=$(mktemp -d "${TMPDIR:-/var/tmp}/keel-disk-bench.XXXXXX")
dirs+=("$tmp")
results=$tmp/results # lines: FS PEER RUN TEST VALUE

# $1: image path. Writes it in full so that every read hits allocated blocks.
make_image() {
	rm -f "$1"
	: >"$1"
	chattr +C "$1" 2>/dev/null || true # Btrfs: no copy-on-write, like a VM image should be
	dd if=/dev/zero of="$1" bs=1M count="$mib" conv=fsync status=none
}

# Prints 1 if O_DIRECT opens work in directory $1, else 0.
direct_works() {
	if dd if=/dev/zero of="$1/.odirect-probe" bs=4096 count=1 oflag=direct status=none 2>/dev/null; then
		echo 1
	else
		echo 0
	fi
	rm -f "$1/.odirect-probe"
}

# The first QEMU cache/aio mode that opens image $1 (io_uring first).
qemu_cache_mode() {
	local mode
	for mode in cache=none,aio=io_uring cache=none,aio=native cache=none,aio=threads \
		cache=writeback,aio=io_uring cache=writeback,aio=threads; do
		if echo quit | timeout 60 qemu-system-x86_64 -machine none -nodefaults -no-user-config \
			-display none -monitor stdio -drive "file=$1,if=none,format=raw,id=d0,$mode" \
			>/dev/null 2>&1; then
			echo "$mode"
			return
		fi
	done
	echo none
}

# Prints yes/no: does process $1 hold file $2 open with O_DIRECT (any fd)?
fd_direct() {
	local fd flags
	for fd in /proc/"$1"/fd/*; do
		[[ $(readlink "$fd" 2>/dev/null) == "$2" ]] || continue
		flags=$(awk '/^flags:/ { print $2 }' "/proc/$1/fdinfo/${fd##*/}" 2>/dev/null) || continue
		[[ -n $flags ]] && (((8#$flags) & 8#40000)) && {
			echo yes
			return
		}
	done
	echo no
}

# fio on image $1 (direct $2): one job per test, one after the other.
# Appends "FS fio RUN TEST VALUE" to the results ($3 = FS label, $4 = run).
run_fio() {
	local img=$1 direct=$2 fs=$3 run=$4 job=$tmp/fio.job out=$tmp/fio.out
	{
		printf '[global]\nioengine=io_uring\ndirect=%s\nfilename=%s\nsize=%sM\n' "$direct" "$img" "$mib"
		printf 'time_based=1\nruntime=%s\nnorandommap=1\nstonewall=1\n' "$secs"
		printf '[randread-qd1]\nrw=randread\nbs=4k\niodepth=1\n'
		printf '[randread-qd32]\nrw=randread\nbs=4k\niodepth=32\n'
		printf '[randwrite-qd1]\nrw=randwrite\nbs=4k\niodepth=1\n'
		printf '[randwrite-qd32]\nrw=randwrite\nbs=4k\niodepth=32\n'
		printf '[seqread-qd4]\nrw=read\nbs=1M\niodepth=4\n'
		printf '[seqwrite-qd4]\nrw=write\nbs=1M\niodepth=4\n'
	} >"$job"
	if ! fio --output-format=terse --terse-version=3 "$job" >"$out" 2>"$tmp/fio.err"; then
		echo "disk_bench: fio failed:" >&2
		cat "$tmp/fio.err" "$out" >&2
		failures=$((failures + 1))
		return
	fi
	# Terse v3: 3 job name, 5 error, 7/8 read KiB/s / IOPS, 48/49 write KiB/s / IOPS.
	awk -F';' -v fs="$fs" -v run="$run" '
    $5 != 0 { next }
    { rw = ($3 ~ /read/) ? 7 : 48
      if ($3 ~ /^seq/) printf "%s fio %s %s %.2f\n", fs, run, $3, $rw / 1024
      else printf "%s fio %s %s %d\n", fs, run, $3, $(rw + 1) }' "$out" >>"$results"
	local got
	got=$(awk -v fs="$fs" -v run="$run" '$1 == fs && $2 == "fio" && $3 == run' "$results" | wc -l)
	((got == 6)) || {
		echo "disk_bench: fio gave $got of 6 figures" >&2
		cat "$out" >&2
		failures=$((failures + 1))
	}
}

# A VMM running diskbench; $1 peer name (keel|qemu), $2 image, $3 FS label,
# $4 run, $5 QEMU cache mode. Records whether the image fd is O_DIRECT.
run_guest() {
	local peer=$1 img=$2 fs=$3 run=$4 mode=${5:-} out=$tmp/$1.console pid
	local app="job=diskbench mib=$mib seconds=$secs"
	local -a cmd
	if [[ $peer == keel ]]; then
		cmd=("$vmm" --kernel "$testos/testos.bzImage" --memory 256M --cmdline "$app" --disk "path=$img")
	else
		cmd=(qemu-system-x86_64 -accel kvm -cpu "$qemu_cpu" -machine q35 -smp 1 -m 256 -nodefaults
			-no-user-config -display none -serial stdio -no-reboot -kernel "$testos/testos.elf"
			-append "$app" -drive "file=$img,if=none,format=raw,id=d0,$mode"
			-device "virtio-blk-pci,drive=d0,disable-legacy=on")
	fi
	timeout --kill-after=10 $((180 + 12 * secs)) "${cmd[@]}" >"$out" 2>"$tmp/$peer.err" </dev/null &
	pid=$!
	pids+=("$pid")
	# Once the guest found its disk, look at how the VMM opened the image.
	local vmm_pid
	while kill -0 "$pid" 2>/dev/null && ! grep -q '^testos: disk device' "$out"; do sleep 0.2; done
	vmm_pid=$(pgrep -P "$pid" | sed -n 1p || true)
	[[ -n $vmm_pid ]] && echo "$fs $peer $run odirect $(fd_direct "$vmm_pid" "$img")" >>"$tmp/odirect"
	local rc=0
	wait "$pid" || rc=$?
	tr -d '\r' <"$out" | awk -v fs="$fs" -v peer="$peer" -v run="$run" '
    /^testos: diskbench test=/ {
      for (i = 2; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
      v = (f["test"] ~ /^seq/) ? f["mib_s"] : f["iops"]
      printf "%s %s %s %s-qd%s %s\n", fs, peer, run, f["test"], f["qd"], v }' >>"$results"
	if ((rc != 0)) || ! grep -q '^testos: diskbench OK tests=6' "$out"; then
		echo "disk_bench: $peer run $run on $fs: exit $rc, no 'diskbench OK tests=6':" >&2
		tail -n 20 "$out" "$tmp/$peer.err" >&2
		failures=$((failures + 1))
	fi
}

# One file system: image, then RUNS rounds of fio, keel, qemu (rotating).
bench_fs() {
	local fs=$1 dir=$2 note=$3 direct img mode
	img=$dir/disk-bench.img
	direct=$(direct_works "$dir")
	make_image "$img"
	mode=$(qemu_cache_mode "$img")
	[[ $mode == none ]] && {
		echo "disk_bench: QEMU opens $img in no cache mode" >&2
		failures=$((failures + 1))
	}
	echo "== $fs: $note"
	echo "   image $img, $mib MiB, pre-written; fio io_uring direct=$direct; qemu $mode -cpu $qemu_cpu"
	local order=(fio keel qemu) r i peer
	for ((r = 0; r < runs; r++)); do
		for ((i = 0; i < 3; i++)); do
			peer=${order[(r + i) % 3]}
			case $peer in
			fio) run_fio "$img" "$direct" "$fs" "$r" ;;
			keel) run_guest keel "$img" "$fs" "$r" ;;
			qemu) [[ $mode != none ]] && run_guest qemu "$img" "$fs" "$r" "$mode" ;;
			esac
		done
		echo "   round $((r + 1))/$runs done"
	done
	local odk odq
	odk=$(awk -v fs="$fs" '$1 == fs && $2 == "keel" { print $5 }' "$tmp/odirect" 2>/dev/null | sort -u | paste -sd/)
	odq=$(awk -v fs="$fs" '$1 == fs && $2 == "qemu" { print $5 }' "$tmp/odirect" 2>/dev/null | sort -u | paste -sd/)
	echo "$fs fio=io_uring,direct=$direct keel=odirect:${odk:-?} qemu=$mode,odirect:${odq:-?},cpu=$qemu_cpu" >>"$tmp/labels"
	rm -f "$img"
}

fslist=()
if [[ $where == box ]]; then
	for fs in ${KEEL_BENCH_FS:-tmpfs btrfs}; do
		case $fs in
		tmpfs)
			d=$(mktemp -d /var/tmp/keel-disk-bench-tmpfs.XXXXXX)
			dirs+=("$d")
			fslist+=("tmpfs|$d|box /var/tmp ($(stat -f -c %T "$d")): RAM, no O_DIRECT, so fio and QEMU run buffered")
			;;
		btrfs)
			backing=$tmp/btrfs-backing.img
			truncate -s $((mib * 2 + 512))M "$backing"
			loop=$(losetup -f --show "$backing")
			loops+=("$loop")
			mkfs.btrfs -q -f "$loop" >/dev/null
			m=$(mktemp -d /var/tmp/keel-disk-bench-btrfs.XXXXXX)
			dirs+=("$m")
			mount "$loop" "$m"
			mounts+=("$m")
			fslist+=("btrfs|$m|Btrfs on $loop (loop backed by a file on the box's tmpfs, dio=$(cat /sys/block/"${loop#/dev/}"/loop/dio)); image nodatacow; O_DIRECT at Btrfs")
			;;
		*)
			echo "disk_bench: KEEL_BENCH_FS: unknown '$fs' (tmpfs, btrfs)" >&2
			exit 2
			;;
		esac
	done
else
	d=${KEEL_BENCH_DIR:-$build}
	fslist+=("$(stat -f -c %T "$d")|$d|direct on this host: $d ($(stat -f -c %T "$d"))")
fi

echo "disk_bench: where=$where runs=$runs seconds=$secs mib=$mib ($(nproc) CPUs; figures in a box are for ratios only)"
for entry in "${fslist[@]}"; do
	IFS='|' read -r fs dir note <<<"$entry"
	bench_fs "$fs" "$dir" "$note"
done

# Medians and ratios.
median() { # FS PEER TEST
	awk -v fs="$1" -v peer="$2" -v t="$3" '$1 == fs && $2 == peer && $4 == t { print $5 }' "$results" |
		sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
json="{\"bench\":\"disk\",\"where\":\"$where\",\"runs\":$runs,\"seconds\":$secs,\"mib\":$mib,\"results\":["
sep=''
verdicts=()
for entry in "${fslist[@]}"; do
	IFS='|' read -r fs dir note <<<"$entry"
	label=$(awk -v fs="$fs" '$1 == fs { $1 = ""; print substr($0, 2) }' "$tmp/labels")
	echo
	echo "disk_bench results, $fs ($where; $label), medians of $runs:"
	printf '  %-15s %-5s %10s %10s %10s %9s %9s\n' test unit fio keel qemu keel/fio keel/qemu
	for t in "${tests[@]}"; do
		unit=IOPS
		[[ $t == seq* ]] && unit=MiB/s
		f=$(median "$fs" fio "$t") k=$(median "$fs" keel "$t") q=$(median "$fs" qemu "$t")
		ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0 && a == a + 0) printf "%.3f", a / b; else print "nan" }'; }
		rf=$(ratio "$k" "$f") rq=$(ratio "$k" "$q")
		printf '  %-15s %-5s %10s %10s %10s %9s %9s\n' "$t" "$unit" "$f" "$k" "$q" "$rf" "$rq"
		json+="$sep{\"fs\":\"$fs\",\"test\":\"$t\",\"unit\":\"$unit\",\"fio\":$f,\"keel\":$k,\"qemu\":$q,\"keel_fio\":$rf,\"keel_qemu\":$rq}"
		sep=,
		if [[ $t == randread-qd32 ]]; then
			if [[ $where == direct ]]; then
				verdicts+=("$(awk -v r="$rf" -v fs="$fs" 'BEGIN { printf "target (%s, direct): randread-qd32 keel/fio = %s, want >= 0.80: %s", fs, r, (r >= 0.8 ? "met" : "NOT met") }')")
			fi
			verdicts+=("$(awk -v r="$rq" -v fs="$fs" -v w="$where" 'BEGIN { printf "target (%s, %s): randread-qd32 keel/qemu = %s, want >= 1.00: %s", fs, w, r, (r >= 1 ? "met" : "NOT met") }')")
		fi
	done
	echo "  per run ($fs; round order rotates fio, keel, qemu):"
	for t in "${tests[@]}"; do
		printf '  %-15s' "$t"
		for peer in fio keel qemu; do
			printf ' %s %s' "$peer" "$(awk -v fs="$fs" -v p="$peer" -v t="$t" '$1 == fs && $2 == p && $4 == t { print $5 }' "$results" | paste -sd,)"
		done
		echo
	done
done
echo
for v in "${verdicts[@]}"; do echo "$v"; done
echo "$json],\"failures\":$failures}"
((failures == 0))
