#!/usr/bin/env bash
# The test guest's ELF, the very file keel-vmm boots through PVH, boots under
# QEMU with KVM inside the KVM test host: platform checks pass on QEMU's own
# ACPI tables, the heartbeat runs, and poweroff ends QEMU with 0.
# usage: qemu_testos_test.sh BUILD_DIR TESTOS_ELF
set -euo pipefail
build=${1:?build dir}
elf=${2:?testos.elf}
top=$(cd "$(dirname "$0")/../.." && pwd)

if [[ ${KEEL_KVM_WHERE:-} != box ]]; then
	# Re-run this script inside the box, where QEMU gets a full KVM.
	KEEL_KVM_MODE=box exec "$top/tools/kvm-run" --need kvm --build "$build" -- "$0" "$build" "$elf"
fi

fail() {
	echo "FAIL: $*" >&2
	exit 1
}

run_qemu() { # $1: guest command line; prints the console
	timeout 300 qemu-system-x86_64 -accel kvm -machine q35 -cpu host -smp 2 -m 512 \
		-nodefaults -no-user-config -display none -serial stdio -no-reboot \
		-kernel "$elf" -append "$1"
}

out=$(run_qemu "job=platform") || fail "QEMU exited $? on job=platform; console: $out"
echo "$out"
grep -q '^testos: ready .*cpus=2 .*boot=pvh' <<<"$out" || fail "no ready line with cpus=2 boot=pvh"
grep -q '^testos: platform OK' <<<"$out" || fail "platform checks did not pass under QEMU"

out=$(run_qemu "job=heartbeat interval_ms=50 count=5") || fail "QEMU exited $? on heartbeat"
echo "$out"
beats=$(grep -c '^testos: beat seq=' <<<"$out" || true)
[[ $beats -eq 5 ]] || fail "expected 5 beats, saw $beats"
echo "PASS: testos.elf boots under QEMU with KVM in the box"
