#!/usr/bin/env bash
# testos's virtio drivers and jobs (disk, diskbench, rng, net, malformed)
# under QEMU with TCG, which needs no KVM: QEMU's virtio devices are the
# reference the same jobs are later run against on keel-vmm. The network part
# uses a tap in a network namespace made here (root needed).
# usage: qemu_testos_virtio_test.sh TESTOS_ELF
set -euo pipefail
elf=${1:?testos.elf}
accel=${KEEL_QEMU_ACCEL:-tcg} # kvm where /dev/kvm works (e.g. inside tools/kvm-box)
[[ $(id -u) == 0 ]] || {
	echo "FAIL: needs root (network namespace, tap)" >&2
	exit 1
}

tmp=$(mktemp -d /var/tmp/keel-testos-virtio.XXXXXX)
ns=keel-tosv-$$
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	# nsqemu's QEMU is not a child of the pids above once they are gone.
	if [[ -s $tmp/nsqemu.pid ]]; then kill "$(cat "$tmp/nsqemu.pid")" 2>/dev/null || true; fi
	ip netns del "$ns" 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT

fail() {
	echo "FAIL: $*" >&2
	exit 1
}

# $1: command line, rest: QEMU device options. Console to stdout.
qemu() {
	local app=$1
	shift
	timeout 300 qemu-system-x86_64 -accel "$accel" -machine q35 -m 256 -nodefaults -no-user-config \
		-display none -serial stdio -no-reboot -kernel "$elf" -append "$app" "$@" 2>>"$tmp/qemu.err"
}
# $1: image, $2: index, $3: extra drive options: the disk's QEMU options in disk_args.
disk() { disk_args=(-drive "file=$1,if=none,format=raw,id=d$2${3:-}" -device "virtio-blk-pci,drive=d$2,disable-legacy=on"); }
rng=(-device "virtio-rng-pci,disable-legacy=on")
expect() { # $1: console, $2: regex
	grep -Eq "$2" <<<"$1" || {
		echo "$1"
		fail "no line matching '$2'"
	}
}
field() { grep -oE "$2=[^ ]+" <<<"$1" | sed -n 1p | cut -d= -f2; }

img=$tmp/disk.img
truncate -s 64M "$img"

# disk: write, verify in a second boot, the host sees the documented pattern.
disk "$img" 0
out=$(qemu "job=disk mode=write mib=16 seed=7" "${disk_args[@]}")
expect "$out" '^testos: disk OK mode=write mib=16 sectors=32768 seed=7 '
sum=$(field "$(grep 'disk OK' <<<"$out")" sum)
disk "$img" 0
out=$(qemu "job=disk mode=verify mib=16 seed=7" "${disk_args[@]}")
expect "$out" "^testos: disk OK mode=verify mib=16 sectors=32768 seed=7 sum=$sum "
python3 - "$img" <<'PY' || fail "the disk image does not hold the documented pattern"
import struct, sys
M = (1 << 64) - 1
def mix(x):
    x ^= x >> 30; x = x * 0xbf58476d1ce4e5b9 & M
    x ^= x >> 27; x = x * 0x94d049bb133111eb & M
    return x ^ (x >> 31)
seed = 7
with open(sys.argv[1], "rb") as f:
    for s in (0, 1, 12345, 32767):
        f.seek(s * 512)
        words = struct.unpack("<64Q", f.read(512))
        want = [mix(((s << 6) | i) ^ (seed * 0xd6e8feb86659fd93 & M)) for i in range(64)]
        assert list(words) == want, s
    f.seek(32768 * 512)
    assert f.read(512) == bytes(512)  # nothing past mib
PY
disk "$img" 0
out=$(qemu "job=disk mode=verify mib=1 seed=8" "${disk_args[@]}")
expect "$out" '^testos: disk FAIL mode=verify bad_sectors=2048 first_bad=0'
disk "$img" 0
out=$(qemu "job=disk mode=random mib=16 ops=300 seed=3" "${disk_args[@]}")
expect "$out" '^testos: disk OK mode=random mib=16 seed=3 ops=300 rechecked=[1-9]'
truncate -s 8M "$tmp/ro.img"
disk "$tmp/ro.img" 0 ,readonly=on
out=$(qemu "job=disk mode=write mib=1" "${disk_args[@]}")
expect "$out" '^testos: disk device .* ro=1'
expect "$out" '^testos: disk FAIL mode=write io=status status=1 '
echo "disk: OK"

disk "$img" 0
out=$(qemu "job=diskbench ops=64 mib=8" "${disk_args[@]}")
for t in 'randread bs=4096 qd=1' 'randread bs=4096 qd=32' 'randwrite bs=4096 qd=1' 'randwrite bs=4096 qd=32' \
	'seqread bs=1048576 qd=4' 'seqwrite bs=1048576 qd=4'; do
	expect "$out" "^testos: diskbench test=$t ops=64 us=[0-9]+ iops=[0-9]+ mib_s=[0-9]+\.[0-9][0-9]\$"
done
expect "$out" '^testos: diskbench OK tests=6 mib=8'
echo "diskbench: OK"

out=$(qemu "job=rng bytes=65536" "${rng[@]}")
expect "$out" '^testos: rng OK bytes=65536 '
echo "rng: OK"

# Network: the guest's tap in a namespace as 10.0.2.1/24.
ip netns add "$ns"
ip netns exec "$ns" ip link set lo up
ip netns exec "$ns" ip tuntap add dev tap0 mode tap
ip netns exec "$ns" ip addr add 10.0.2.1/24 dev tap0
ip netns exec "$ns" ip link set tap0 up
net=(-netdev "tap,id=n0,ifname=tap0,script=no,downscript=no" -device "virtio-net-pci,netdev=n0,disable-legacy=on")
nsqemu() { # like qemu, inside the namespace, console to $tmp/console, its PID in $tmp/nsqemu.pid
	local app=$1
	shift
	rm -f "$tmp/nsqemu.pid"
	ip netns exec "$ns" timeout 300 qemu-system-x86_64 -accel "$accel" -machine q35 -m 256 -nodefaults -no-user-config \
		-display none -serial stdio -no-reboot -pidfile "$tmp/nsqemu.pid" -kernel "$elf" -append "$app" "$@" \
		>"$tmp/console" 2>>"$tmp/qemu.err"
}

disk "$img" 0
out=$(ip netns exec "$ns" qemu-system-x86_64 -accel "$accel" -machine q35 -m 256 -nodefaults -no-user-config \
	-display none -serial stdio -no-reboot -kernel "$elf" -append "job=malformed lenient=1" \
	"${disk_args[@]}" "${rng[@]}" "${net[@]}" 2>>"$tmp/qemu.err")
expect "$out" '^testos: malformed OK cases=27 devices=3'
for d in blk net rng; do
	for c in loop next_out_of_range addr_outside_memory huge_length; do
		expect "$out" "^testos: malformed dev=$d case=$c outcome=(needs_reset|failed) recovered=1 ok"
	done
done
echo "malformed: OK"

cat >"$tmp/peer.py" <<'PY'
# The host side of job=net: ping and UDP echo (echo), a UDP sink (sink).
import os, socket, struct, sys, time
guest = "10.0.2.15"
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
if sys.argv[1] == "echo":
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(0.5)
    deadline = time.time() + 120
    while True:  # until the guest is up
        try:
            u.sendto(b"hello", (guest, 7))
            if u.recvfrom(2048)[0] == b"hello": break
        except OSError:
            if time.time() > deadline: sys.exit("the guest never echoed")
    r = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); r.settimeout(5)
    for seq in range(5):
        data = os.urandom(56)
        r.sendto(struct.pack("!BBHHH", 8, 0, csum(struct.pack("!BBHHH", 8, 0, 0, 0x4b4c, seq) + data), 0x4b4c, seq) + data, (guest, 0))
        while True:
            d = r.recvfrom(2048)[0]
            icmp = d[(d[0] & 15) * 4:]
            if icmp[0] == 0 and struct.unpack("!HH", icmp[4:8]) == (0x4b4c, seq):
                assert icmp[8:] == data and csum(icmp) == 0, "bad echo reply"
                break
    u.settimeout(30)  # TCG under load can take seconds to answer
    for i in range(98):
        m = os.urandom(1 + i * 15 % 1472)
        u.sendto(m, (guest, 7))
        assert u.recvfrom(2048)[0] == m, "UDP echo differs"
    print("peer: ping 5, udp 99 echoed")
else:
    want = int(sys.argv[2])
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.setsockopt(socket.SOL_SOCKET, 33, 16 << 20)  # SO_RCVBUFFORCE: above rmem_max
    u.bind(("10.0.2.1", 9000)); u.settimeout(60)
    print("bound", flush=True)
    got = n = 0; last = -1
    pattern = bytes((i * 7 + 1) & 255 for i in range(1472))
    while True:
        d = u.recvfrom(4096)[0]
        seq = struct.unpack("<Q", d[:8])[0]
        assert seq > last and d[8:] == pattern[8:len(d)], "bad datagram"
        last = seq; got += len(d); n += 1
        u.settimeout(30)  # a gap this long means the sender stopped (TCG under load pauses for seconds)
        if seq == want - 1: break
    print("peer: sink got %d datagrams, %d bytes" % (n, got))
PY

nsqemu "job=net ip=10.0.2.15 count=99" "${net[@]}" &
pids+=($!)
ip netns exec "$ns" python3 "$tmp/peer.py" echo || {
	cat "$tmp/console"
	fail "echo peer"
}
wait "${pids[-1]}"
out=$(cat "$tmp/console")
expect "$out" '^testos: net ready ip=10.0.2.15 mac=52:54:00:12:34:56 port=7 '
expect "$out" '^testos: net echo OK udp=99 udp_dropped=0 icmp=5 arp=[1-9]'

# send: 4 MiB in 2850 datagrams of 1472 bytes (the last one 576).
ip netns exec "$ns" python3 "$tmp/peer.py" sink 2850 >"$tmp/sink" &
pids+=($!)
for _ in $(seq 100); do
	grep -q bound "$tmp/sink" && break
	sleep 0.1
done
sink=${pids[-1]}
nsqemu "job=net ip=10.0.2.15 mode=send dst=10.0.2.1:9000 mib=4" "${net[@]}" &
pids+=($!)
# A sink that gave up (its timeouts are far shorter than QEMU's) ends the
# guest too: a stuck send shows its console now, not after 300 s.
wait "$sink" || {
	[[ -s $tmp/nsqemu.pid ]] && kill "$(cat "$tmp/nsqemu.pid")" 2>/dev/null
	wait "${pids[-1]}" || true
	cat "$tmp/sink" "$tmp/console"
	fail "sink"
}
wait "${pids[-1]}" || {
	cat "$tmp/console"
	fail "the sending guest's QEMU failed"
}
out=$(cat "$tmp/console")
expect "$out" '^testos: net arp 10.0.2.1 is '
expect "$out" '^testos: net send OK bytes=4194304 datagrams=2850 size=1472 us=[0-9]+ mib_s='
cat "$tmp/sink"
echo "net: OK"
echo "PASS: testos virtio jobs under QEMU"
