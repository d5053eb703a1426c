#!/usr/bin/env bash
# Benchmark (by hand, not a test): Debian's stock kernel with the Linux guest
# image, from process start to the guest's ready line, keel-vmm beside QEMU
# with KVM booting the same kernel and initramfs in the same place (-M q35 and
# -M microvm), medians and ratios. Stock kernels need VMX/SVM, so on PVM
# machines this runs inside the KVM test host: figures there are for ratios.
# With `viewer`: the console's cost instead, keel-vmm alone with the kernel's
# boot messages on (no `quiet`: some 20 KiB through the UART), runs
# alternating without and with a read-only console client attached from the
# VMM's first moments (boot_bench --viewer), and the medians of each. Runs
# that fail are counted and left out (--keep-going): in the box a stock
# kernel's early boot now and then loops in page faults or triple-faults
# when anything else runs in the box at the time (a console viewer, keelctl
# status asked in a loop, or processes that have nothing to do with keel-vmm
# alike; see tools/README-box.md), so such failures are the box's.
#
# usage: tests/bench/linux_boot_bench.sh [BUILD_DIR] [RUNS] [viewer]
set -euo pipefail
build=$(cd "${1:-build}" && pwd)
runs=${2:-5}
mode=${3:-}
top=$(cd "$(dirname "$0")/../.." && pwd)
[[ -z $mode || $mode == viewer ]] || {
	echo "usage: $0 [BUILD_DIR] [RUNS] [viewer]" >&2
	exit 2
}

if [[ -z ${KEEL_KVM_WHERE:-} ]]; then
	exec "$top/tools/kvm-run" --need linux --build "$build" -- "$0" "$build" "$runs" ${mode:+"$mode"}
fi

images=$build/guest-images/linux
kernel=$images/vmlinuz-generic
initrd=$images/initramfs-generic.cpio.gz
append="console=ttyS0 quiet keel.job=ready"
bench=$build/tests/bench/boot_bench
[[ -f $kernel && -f $initrd ]] || {
	echo "no Linux guest image in $images (guest-images/linux/build-image)" >&2
	exit 1
}

if [[ $mode == viewer ]]; then
	socket=$(mktemp -u /tmp/keel-boot-bench.XXXXXX.sock)
	exec "$bench" --runs "$runs" --keep-going --run-timeout 120 --ready "keel-guest: ready " \
		--label keel-vmm-console \
		--viewer "$socket" -- "$build/keel-vmm/keel-vmm" --cpus 1 --memory 256M \
		--kernel "$kernel" --initrd "$initrd" --cmdline "console=ttyS0 keel.job=ready" \
		--api-socket "$socket"
fi

qemu_cpu=$("$top/tools/qemu-kvm-cpu") # host, or what this /dev/kvm takes
qemu=(qemu-system-x86_64 -accel kvm -cpu "$qemu_cpu" -smp 1 -m 256M -nodefaults -no-user-config
	-display none -serial stdio -no-reboot -kernel "$kernel" -initrd "$initrd" -append "$append")

out=$(mktemp)
trap 'rm -f "$out"' EXIT
"$bench" --runs "$runs" --ready "keel-guest: ready " --label keel-vmm -- \
	"$build/keel-vmm/keel-vmm" --cpus 1 --memory 256M --kernel "$kernel" --initrd "$initrd" \
	--cmdline "$append" | tee -a "$out"
"$bench" --runs "$runs" --ready "keel-guest: ready " --label qemu-q35 -- \
	"${qemu[@]}" -machine q35 | tee -a "$out"
"$bench" --runs "$runs" --ready "keel-guest: ready " --label qemu-microvm -- \
	"${qemu[@]}" -machine microvm,x-option-roms=off,isa-serial=on,rtc=on | tee -a "$out"

median() { grep "\"label\":\"$1\"" "$out" | sed 's/.*"ready_ms_median":\([0-9.]*\).*/\1/'; }
keel=$(median keel-vmm)
for peer in qemu-q35 qemu-microvm; do
	p=$(median "$peer")
	awk -v k="$keel" -v p="$p" -v n="$peer" -v w="$KEEL_KVM_WHERE" \
		'BEGIN { printf "ratio keel-vmm / %s (%s): %.2f (%.0f ms / %.0f ms)\n", n, w, k / p, k, p }'
done
