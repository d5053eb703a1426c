#!/bin/bash
# Seeds for vm_state_fuzz: the state files of real snapshots of the test
# guest. Needs KVM, so run it through tools/kvm-run, as root:
#   tools/kvm-run --need kvm --build build -- tests/fuzz/make_vm_state_seeds.sh build OUT
# then copy OUT/* into tests/fuzz/corpus/vm_state_fuzz/.
set -euo pipefail
build=$(cd "${1:?usage: make_vm_state_seeds.sh BUILD OUT}" && pwd) out=${2:?}
mkdir -p "$out"
out=$(cd "$out" && pwd)
vmm=$build/keel-vmm/keel-vmm keelctl=$build/tools/keelctl/keelctl
testos=$build/guest-images/testos/testos.bzImage
work=$(mktemp -d /var/tmp/keel-seeds-XXXXXX)
tap=kseed$$
cleanup() {
	if [[ -n ${pid:-} ]]; then kill -9 "$pid" 2>/dev/null || true; fi
	ip link del "$tap" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

# seed NAME READY-LINE KEEL-VMM-ARGS...: runs the guest until READY-LINE,
# pauses, snapshots, kills, keeps DIR/state as OUT/NAME.
seed() {
	local name=$1 ready=$2
	shift 2
	local sock=$work/$name.sock log=$work/$name.log
	"$vmm" "$@" --api-socket "$sock" --snapshot-root "$work" >"$log" 2>&1 &
	pid=$!
	for _ in $(seq 600); do
		grep -q "^$ready" "$log" && break
		sleep 0.1
	done
	grep -q "^$ready" "$log" || {
		echo "no '$ready' from $name:"
		cat "$log"
		exit 1
	} >&2
	"$keelctl" --socket "$sock" pause >/dev/null
	"$keelctl" --socket "$sock" snapshot "$work/$name" >/dev/null
	"$keelctl" --socket "$sock" kill >/dev/null
	wait "$pid" || true
	pid=
	cp "$work/$name/state" "$out/$name"
	echo "$name: $(stat -c %s "$out/$name") bytes"
}

truncate -s 16M "$work/disk.img"
seed heartbeat_2cpu_blk_rng "testos: beat seq=3 " --kernel "$testos" --cpus 2 --memory 64M \
	--disk "path=$work/disk.img" --rng --cmdline "job=heartbeat interval_ms=50 mib=4"
seed disk_write_midway "testos: disk device " --kernel "$testos" --memory 64M \
	--disk "path=$work/disk.img" --cmdline "job=disk mode=write mib=16 rate_mbps=4"
seed rng_1cpu "testos: ready " --kernel "$testos" --memory 32M --rng \
	--cmdline "job=rng bytes=100000000"
ip tuntap add dev "$tap" mode tap
ip link set "$tap" up
seed net_echo "testos: net ready " --kernel "$testos" --memory 48M \
	--net "tap=$tap" --cmdline "job=net ip=10.0.2.15"
