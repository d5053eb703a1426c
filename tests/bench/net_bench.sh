#!/usr/bin/env bash
# Benchmark (by hand, not a test): virtio-net, guest to host, keel-vmm beside
# QEMU (KVM, q35, virtio-net-pci on a tap, vhost=off: QEMU's own userspace
# device, like keel-vmm's) in the same place, on the same tap in a network
# namespace made here (removed on exit).
#
#  - TCP: the stock Linux guest image (keel.job=net keel.net_mode=send, one
#    TCP stream of MIB MiB) into keel-net recv on the host side, which checks
#    the data; MiB/s from the guest's own line (connection up to the host's
#    close).
#  - UDP: the test guest (testos job=net mode=send, 1472-byte datagrams as
#    fast as the transmit queue takes them) to a port nobody listens on;
#    MiB/s from the guest's line, and the frames the tap delivered to the host
#    (its rx_packets) to show that they arrived.
#
# RUNS rounds, the VMM order alternating; medians and keel/qemu ratios, then
# one JSON line. Stock kernels need VMX/SVM: tools/kvm-run --need linux runs
# it directly where that works, else in the KVM test host ("box": QEMU TCG
# with nested KVM, 5-20x slower; only the ratios mean anything there). Needs
# root (namespace, tap).
#
# usage: tests/bench/net_bench.sh [BUILD_DIR] [RUNS]
# env:   KEEL_BENCH_NET_MIB   TCP MiB per transfer (default 64)
#        KEEL_BENCH_UDP_MIB   UDP MiB per transfer (default 64; 0 = skip UDP)
#        KEEL_BENCH_FLAVOUR   Linux image flavour, cloud (default) or generic
# Exit status 0 when every transfer of every run completed and checked.
set -euo pipefail
build=$(cd "${1:-build}" && pwd)
runs=${2:-5}
top=$(cd "$(dirname "$0")/../.." && pwd)
tcp_mib=${KEEL_BENCH_NET_MIB:-64}
udp_mib=${KEEL_BENCH_UDP_MIB:-64}
flavour=${KEEL_BENCH_FLAVOUR:-cloud}

if [[ -z ${KEEL_KVM_WHERE:-} ]]; then
	# Each round: two Linux boots (up to a minute each in the box), two testos boots.
	exec "$top/tools/kvm-run" --need linux --build "$build" \
		--timeout $((120 + runs * 300)) -- "$0" "$build" "$runs"
fi
where=$KEEL_KVM_WHERE
[[ $(id -u) == 0 ]] || {
	echo "net_bench: needs root (network namespace, tap)" >&2
	exit 1
}

vmm=$build/keel-vmm/keel-vmm
images=$build/guest-images/linux
kernel=$images/vmlinuz-$flavour
initrd=$images/initramfs-$flavour.cpio.gz
keelnet=$images/bin/keel-net
testos=$build/guest-images/testos
for f in "$vmm" "$kernel" "$initrd" "$keelnet" "$testos/testos.bzImage" "$testos/testos.elf"; do
	[[ -e $f ]] || {
		echo "net_bench: $f missing (build keel-vmm, testos, guest-images/linux/build-image)" >&2
		exit 1
	}
done

ns=keel-netbench-$$
tap=ktap0
mac=52:54:00:12:34:56
failures=0
pids=()
tmp=$(mktemp -d "${TMPDIR:-/var/tmp}/keel-net-bench.XXXXXX")
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	ip netns del "$ns" 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT
results=$tmp/results # lines: KIND PEER RUN VALUE

ip netns add "$ns"
ip netns exec "$ns" ip link set lo up
ip netns exec "$ns" ip tuntap add dev "$tap" mode tap
ip netns exec "$ns" ip addr add 10.0.2.1/24 dev "$tap"
ip netns exec "$ns" ip link set "$tap" up
in_ns() { ip netns exec "$ns" "$@"; }
tap_stat() { in_ns cat "/sys/class/net/$tap/statistics/$1"; }

# $1 peer (keel|qemu), $2 kind (linux|testos), $3 kernel command line: the
# VMM's argv for that guest on the tap.
vmm_cmd() {
	local peer=$1 kind=$2 app=$3
	if [[ $peer == keel ]]; then
		if [[ $kind == linux ]]; then
			cmd=("$vmm" --cpus 1 --memory 512M --kernel "$kernel" --initrd "$initrd")
		else
			cmd=("$vmm" --memory 256M --kernel "$testos/testos.bzImage")
		fi
		cmd+=(--net "tap=$tap,mac=$mac" --cmdline "$app")
	else
		cmd=(qemu-system-x86_64 -accel kvm -cpu "$qemu_cpu" -machine q35 -smp 1 -nodefaults -no-user-config
			-display none -serial stdio -no-reboot
			-netdev "tap,id=n0,ifname=$tap,script=no,downscript=no,vhost=off"
			-device "virtio-net-pci,netdev=n0,disable-legacy=on,mac=$mac" -append "$app")
		if [[ $kind == linux ]]; then
			cmd+=(-m 512 -kernel "$kernel" -initrd "$initrd")
		else
			cmd+=(-m 256 -kernel "$testos/testos.elf")
		fi
	fi
}

fail() { # $1 what, rest: files to show
	echo "net_bench: $1" >&2
	shift
	(($#)) && tail -n 20 "$@" >&2
	failures=$((failures + 1))
}

# TCP, Linux guest -> keel-net recv. $1 peer, $2 run.
run_tcp() {
	local peer=$1 run=$2 out=$tmp/$1.tcp.console host=$tmp/$1.tcp.host rc=0 hp
	in_ns "$keelnet" -w 300 recv :5201 "$tcp_mib" 1 >"$host" 2>&1 &
	hp=$!
	pids+=("$hp")
	vmm_cmd "$peer" linux "console=ttyS0 quiet panic=-1 keel.job=net keel.ip=10.0.2.15/24 keel.peer=10.0.2.1 keel.net_mode=send keel.net_mib=$tcp_mib keel.ping_count=0"
	in_ns timeout --kill-after=10 300 "${cmd[@]}" >"$out" 2>"$out.err" </dev/null || rc=$?
	local hrc=0
	wait "$hp" || hrc=$?
	local gline hline
	gline=$(tr -d '\r' <"$out" | grep -o 'keel-guest: net send OK .*' || true)
	hline=$(grep -o 'net recv OK .*' "$host" || true)
	if ((rc != 0 || hrc != 0)) || [[ -z $gline || -z $hline ]]; then
		fail "tcp $peer run $run: vmm exit $rc, keel-net exit $hrc" "$out" "$out.err" "$host"
		return
	fi
	local gsum hsum
	gsum=$(grep -oE 'sum=0x[0-9a-f]+' <<<"$gline") hsum=$(grep -oE 'sum=0x[0-9a-f]+' <<<"$hline")
	[[ $gsum == "$hsum" ]] || {
		fail "tcp $peer run $run: guest $gsum, host $hsum"
		return
	}
	awk -v peer="$peer" -v run="$run" '{
      for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
      printf "tcp %s %s %.2f\n", peer, run, f["bytes"] / 1048576 / (f["ms"] / 1000) }' <<<"$gline" >>"$results"
	echo "   tcp $peer run $run: $gline"
}

# UDP, testos -> the host's stack. $1 peer, $2 run.
run_udp() {
	local peer=$1 run=$2 out=$tmp/$1.udp.console rc=0 rx0 rx1 drop0 drop1
	rx0=$(tap_stat rx_packets) drop0=$(tap_stat rx_dropped)
	vmm_cmd "$peer" testos "job=net ip=10.0.2.15 mode=send dst=10.0.2.1:9000 mib=$udp_mib"
	in_ns timeout --kill-after=10 300 "${cmd[@]}" >"$out" 2>"$out.err" </dev/null || rc=$?
	rx1=$(tap_stat rx_packets) drop1=$(tap_stat rx_dropped)
	local line
	line=$(tr -d '\r' <"$out" | grep -o 'testos: net send OK .*' || true)
	if ((rc != 0)) || [[ -z $line ]]; then
		fail "udp $peer run $run: vmm exit $rc" "$out" "$out.err"
		return
	fi
	local dgrams
	dgrams=$(grep -oE 'datagrams=[0-9]+' <<<"$line" | cut -d= -f2)
	# The tap also carried the guest's ARP traffic: at least every datagram.
	if ((rx1 - rx0 < dgrams)); then
		fail "udp $peer run $run: the tap delivered $((rx1 - rx0)) frames for $dgrams datagrams"
	fi
	grep -oE 'mib_s=[0-9.]+' <<<"$line" | awk -v peer="$peer" -v run="$run" -F= '{ printf "udp %s %s %s\n", peer, run, $2 }' >>"$results"
	echo "   udp $peer run $run: $line; tap rx_packets +$((rx1 - rx0)) rx_dropped +$((drop1 - drop0))"
}

echo "net_bench: where=$where runs=$runs tcp_mib=$tcp_mib udp_mib=$udp_mib flavour=$flavour ($(nproc) CPUs; figures in a box are for ratios only)"
qemu_cpu=$("$top/tools/qemu-kvm-cpu") # host, or what this /dev/kvm takes
echo "   keel-vmm --net tap; qemu -cpu $qemu_cpu -netdev tap,vhost=off -device virtio-net-pci,disable-legacy=on; 1 vCPU each"
order=(keel qemu)
for ((r = 0; r < runs; r++)); do
	for ((i = 0; i < 2; i++)); do
		peer=${order[(r + i) % 2]}
		run_tcp "$peer" "$r"
		((udp_mib > 0)) && run_udp "$peer" "$r"
	done
done

median() { # KIND PEER
	awk -v k="$1" -v p="$2" '$1 == k && $2 == p { print $4 }' "$results" 2>/dev/null | sort -g |
		awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
json="{\"bench\":\"net\",\"where\":\"$where\",\"runs\":$runs,\"tcp_mib\":$tcp_mib,\"udp_mib\":$udp_mib,\"flavour\":\"$flavour\",\"results\":["
sep=''
echo
echo "net_bench results ($where), MiB/s guest -> host, medians of $runs:"
printf '  %-34s %10s %10s %9s\n' test keel qemu keel/qemu
kinds=(tcp)
((udp_mib > 0)) && kinds+=(udp)
for kind in "${kinds[@]}"; do
	k=$(median "$kind" keel) q=$(median "$kind" qemu)
	ratio=$(awk -v a="$k" -v b="$q" 'BEGIN { if (b > 0 && a == a + 0) printf "%.3f", a / b; else print "nan" }')
	name="tcp (Linux $flavour, keel-net recv)"
	[[ $kind == udp ]] && name="udp (testos send, 1472 B datagrams)"
	printf '  %-34s %10s %10s %9s   per run: keel %s qemu %s\n' "$name" "$k" "$q" "$ratio" \
		"$(awk -v k="$kind" '$1 == k && $2 == "keel" { print $4 }' "$results" | paste -sd,)" \
		"$(awk -v k="$kind" '$1 == k && $2 == "qemu" { print $4 }' "$results" | paste -sd,)"
	json+="$sep{\"test\":\"$kind\",\"unit\":\"MiB/s\",\"keel\":$k,\"qemu\":$q,\"keel_qemu\":$ratio}"
	sep=,
done
echo "$json],\"failures\":$failures}"
((failures == 0))
