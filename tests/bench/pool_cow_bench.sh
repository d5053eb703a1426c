#!/usr/bin/env bash
# Benchmark (by hand, not a test): a VM disk file in a Btrfs pool with
# Btrfs's default copy-on-write against nodatacow (chattr +C), which the
# storage issue asks to measure before choosing. fio (io_uring, O_DIRECT)
# writes each file in place on a Btrfs volume on a loop device (backed by a
# file in KEEL_BENCH_DIR, default /var/tmp): a file of MIB MiB written
# sequentially first, then 4 KiB random writes at queue depth 1 and 32 for
# SECONDS each, then a read-only snapshot of the subvolume (what keelctl vm
# snapshot does) and the same random writes again. Per phase: IOPS, and the
# file's extent count afterwards (filefrag: fragmentation). RUNS rounds,
# fresh files each; medians, then nocow/cow ratios, then one JSON line.
#
# usage: tests/bench/pool_cow_bench.sh [RUNS]
# env:   KEEL_BENCH_SECONDS  seconds per random-write test (default 20)
#        KEEL_BENCH_MIB      file size, MiB (default 1024)
#        KEEL_BENCH_DIR      where the volume's backing file goes (/var/tmp)
# Root (loop device, mount). Exit 0 when every figure was measured.
set -euo pipefail
runs=${1:-3}
secs=${KEEL_BENCH_SECONDS:-20}
mib=${KEEL_BENCH_MIB:-1024}
dir=${KEEL_BENCH_DIR:-/var/tmp}
for tool in fio filefrag mkfs.btrfs losetup; do
	command -v $tool >/dev/null || {
		echo "pool_cow_bench: $tool not installed" >&2
		exit 1
	}
done

top=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tools/lib/scratch_btrfs.sh
. "$top/tools/lib/scratch_btrfs.sh"
trap scratch_btrfs_remove EXIT
# Room for a file, its snapshot's old extents and Btrfs's metadata for
# a quarter of a million extents (doubled: DUP).
scratch_btrfs_make "$dir" keel-cow-bench $((mib * 6 + 2048))
work=$scratch_dir

# fio's write IOPS, as an integer.
randwrite() { # FILE DEPTH
	fio --name=w --filename="$1" --rw=randwrite --bs=4k --iodepth="$2" --ioengine=io_uring \
		--direct=1 --time_based --runtime="$secs" --size="${mib}M" --randrepeat=0 \
		--output-format=json 2>/dev/null | python3 -c 'import json,sys; print(int(json.load(sys.stdin)["jobs"][0]["write"]["iops"]))'
}
extents() { filefrag "$1" | sed -n 's/.*: \([0-9]*\) extents\? found/\1/p'; }

declare -A fig
phases=(fresh-qd1 fresh-qd32 fresh-extents snap-qd1 snap-qd32 snap-extents)
for ((r = 1; r <= runs; r++)); do
	for mode in cow nocow; do
		sub=$work/mnt/vm-$mode-$r
		btrfs -q subvolume create "$sub"
		touch "$sub/disk.raw"
		[[ $mode == nocow ]] && chattr +C "$sub/disk.raw"
		# Written whole before fio sees it: fio would lay a shorter file out
		# anew, dropping the attribute.
		dd if=/dev/zero of="$sub/disk.raw" bs=1M count="$mib" oflag=direct conv=notrunc status=none
		sync
		[[ $mode == cow ]] || [[ $(lsattr "$sub/disk.raw") =~ ^[^\ ]*C ]] || {
			echo "pool_cow_bench: $sub/disk.raw lost its nodatacow attribute" >&2
			exit 1
		}
		fig["$mode,fresh-qd1,$r"]=$(randwrite "$sub/disk.raw" 1)
		fig["$mode,fresh-qd32,$r"]=$(randwrite "$sub/disk.raw" 32)
		sync
		fig["$mode,fresh-extents,$r"]=$(extents "$sub/disk.raw")
		btrfs -q subvolume snapshot -r "$sub" "$work/mnt/snap-$mode-$r"
		fig["$mode,snap-qd1,$r"]=$(randwrite "$sub/disk.raw" 1)
		fig["$mode,snap-qd32,$r"]=$(randwrite "$sub/disk.raw" 32)
		sync
		fig["$mode,snap-extents,$r"]=$(extents "$sub/disk.raw")
		[[ $mode == cow ]] || [[ $(lsattr "$sub/disk.raw") =~ ^[^\ ]*C ]] || {
			echo "pool_cow_bench: fio dropped the nodatacow attribute of $sub/disk.raw" >&2
			exit 1
		}
		echo "round $r $mode: $(for p in "${phases[@]}"; do printf '%s=%s ' "$p" "${fig["$mode,$p,$r"]}"; done)" >&2
		# Committed at once: the cleaner frees a deleted subvolume only after a
		# commit, which Btrfs would otherwise make up to 30 s later.
		btrfs -q subvolume delete --commit-after "$work/mnt/snap-$mode-$r" "$sub"
		btrfs -q subvolume sync "$work/mnt" # the space back before the next file
	done
done

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2))}'; }
echo "pool_cow_bench: ${mib} MiB file, ${secs} s per test, $runs rounds, medians (Btrfs on a loop device in $dir)"
printf '%-14s %12s %12s %8s\n' phase cow nocow nocow/cow
json="{\"mib\":$mib,\"seconds\":$secs,\"runs\":$runs"
for p in "${phases[@]}"; do
	cs=() ns=()
	for ((r = 1; r <= runs; r++)); do
		cs+=("${fig["cow,$p,$r"]}")
		ns+=("${fig["nocow,$p,$r"]}")
	done
	c=$(median "${cs[@]}")
	n=$(median "${ns[@]}")
	ratio=$(awk -v a="$n" -v b="$c" 'BEGIN { printf (b > 0 ? "%.2f" : "-"), a / b }')
	printf '%-14s %12s %12s %8s\n' "$p" "$c" "$n" "$ratio"
	json+=",\"cow_$p\":$c,\"nocow_$p\":$n"
done
echo "$json}"
