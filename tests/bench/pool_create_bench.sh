#!/usr/bin/env bash
# Benchmark (by hand, not a test): how long `keelctl vm create` takes, from
# an image with a 2 GiB disk full of data and from one with a 20 GiB sparse
# disk (the storage issue's figures), in a pool on a Btrfs volume on a loop
# device (backed by a file in KEEL_BENCH_DIR, default /var/tmp). A create is
# a subvolume snapshot, a sparse resize, the seed disk and the record: its
# time should not depend on the image's size. RUNS creates from each image;
# prints each image's median and max in ms, then one JSON line.
#
# usage: tests/bench/pool_create_bench.sh [BUILD_DIR] [RUNS]
# env:   KEEL_BENCH_DATA_MIB  data in the first image's disk (default 2048)
#        KEEL_BENCH_DIR       where the volume's backing file goes
set -euo pipefail
build=$(cd "${1:-build}" && pwd)
runs=${2:-10}
data_mib=${KEEL_BENCH_DATA_MIB:-2048}
dir=${KEEL_BENCH_DIR:-/var/tmp}
keelctl=$build/tools/keelctl/keelctl
kernel=$build/guest-images/testos/testos.bzImage
[[ -x $keelctl && -f $kernel ]] || {
	echo "pool_create_bench: build keelctl and testos first ($build)" >&2
	exit 1
}
top=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tools/lib/scratch_btrfs.sh
. "$top/tools/lib/scratch_btrfs.sh"
trap scratch_btrfs_remove EXIT
scratch_btrfs_make "$dir" keel-create-bench $((data_mib * 2 + 4096))
work=$scratch_dir
export KEEL_POOL=$work/mnt/pool
"$keelctl" pool init "$KEEL_POOL" >/dev/null
# The images' disks live on the same volume, so the imports copy within it.
head -c $((data_mib << 20)) /dev/urandom >"$work/mnt/full.raw"
truncate -s 20G "$work/mnt/sparse.raw"
"$keelctl" image import full --disk "$work/mnt/full.raw" --kernel "$kernel" >/dev/null
"$keelctl" image import sparse --disk "$work/mnt/sparse.raw" --kernel "$kernel" >/dev/null
rm "$work/mnt/full.raw" "$work/mnt/sparse.raw"
sync

us_now() { echo $(($(date +%s%N) / 1000)); }
json="{\"runs\":$runs,\"data_mib\":$data_mib"
echo "pool_create_bench: keelctl vm create, $runs runs each (Btrfs on a loop device in $dir)"
for image in full sparse; do
	times=()
	for ((r = 1; r <= runs; r++)); do
		t0=$(us_now)
		"$keelctl" vm create "$image-$r" --image "$image" >/dev/null
		t1=$(us_now)
		times+=($((t1 - t0)))
	done
	sorted=$(printf '%s\n' "${times[@]}" | sort -n)
	median=$(echo "$sorted" | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}')
	max=$(echo "$sorted" | tail -1)
	size=$("$keelctl" image show "$image" | sed -n 's/^  disk *//p')
	printf '  %-6s (%s): median %.1f ms, max %.1f ms\n' "$image" "$size" \
		"$(awk -v v="$median" 'BEGIN { print v / 1000 }')" "$(awk -v v="$max" 'BEGIN { print v / 1000 }')"
	json+=",\"${image}_median_us\":$median,\"${image}_max_us\":$max"
done
echo "$json}"
