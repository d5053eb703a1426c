#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora (corpus/<target>/): a few valid
inputs in each target's input format (see the comment atop each target), so
fuzzing starts from real queues and requests. Rerun after changing a format."""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
NEXT, WRITE, INDIRECT = 1, 2, 4


class Memory:
    def __init__(self):
        self.b = bytearray()

    def put(self, gpa, data):
        if len(self.b) < gpa + len(data):
            self.b.extend(bytes(gpa + len(data) - len(self.b)))
        self.b[gpa:gpa + len(data)] = data


def desc(mem, table, i, addr, length, flags, nxt=0):
    mem.put(table + 16 * i, struct.pack("<QIHH", addr, length, flags, nxt))


def queue_seed(size, flags, completion, dt, da, dv, chains, indirect_tables=(), used_event=None,
               state=(0, 0)):
    """chains: list of (head, [(addr, len, flags, next)...]) written at
    consecutive descriptor indices from head."""
    mem = Memory()
    heads = []
    for head, descs in chains:
        for k, (addr, length, fl, nxt) in enumerate(descs):
            desc(mem, dt, head + k, addr, length, fl, nxt)
        heads.append(head)
    for table, entries in indirect_tables:
        for k, (addr, length, fl, nxt) in enumerate(entries):
            desc(mem, table, k, addr, length, fl, nxt)
    idx = state[0]
    for h in heads:
        mem.put(da + 4 + 2 * (idx % size), struct.pack("<H", h))
        idx = (idx + 1) & 0xffff
    mem.put(da + 2, struct.pack("<H", idx))
    if used_event is not None:
        mem.put(da + 4 + 2 * size, struct.pack("<H", used_event))
    mem.put(dv + 6 + 8 * size, bytes(2))  # the device area is part of RAM
    header = struct.pack("<HBBIIIHHI", size, flags, completion, dt, da, dv, state[0], state[1], 0)
    return header + bytes(mem.b)


def queue_seeds():
    return {
        "direct": queue_seed(8, 0, 0, 0x0, 0x80, 0x100,
                             [(0, [(0x1000, 16, NEXT, 1), (0x2000, 512, WRITE | NEXT, 2), (0x3000, 1, WRITE, 0)])]),
        "indirect_event_idx": queue_seed(
            8, 3, 0, 0x0, 0x80, 0x100,
            [(0, [(0x800, 48, INDIRECT, 0)]), (1, [(0x1000, 16, NEXT, 2), (0x900, 16, INDIRECT, 0)])],
            indirect_tables=[(0x800, [(0x1000, 16, NEXT, 1), (0x2000, 4096, WRITE | NEXT, 2), (0x3000, 1, WRITE, 0)]),
                             (0x900, [(0x3010, 1, WRITE, 0)])],
            used_event=1),
        "held_completions": queue_seed(
            16, 1, 1, 0x0, 0x100, 0x200,
            [(i, [(0x1000 + 0x100 * i, 0x100, WRITE, 0)]) for i in range(6)], used_event=3),
        "restored_wrapping": queue_seed(
            4, 4 | 8, 0, 0x0, 0x40, 0x80,
            [(0, [(0x21000, 64, 0, 0)]), (1, [(0x22000, 64, WRITE, 0)])], state=(65535, 65535)),
        "second_region": queue_seed(
            256, 2, 0, 0x1000, 0x2000, 0x2400,
            [(10, [(0x20000, 16, NEXT, 11), (0x2f000, 0x1000, WRITE, 0)])]),
    }


BLK_IN, BLK_OUT, BLK_FLUSH, BLK_GET_ID, BLK_DISCARD, BLK_WRITE_ZEROES = 0, 1, 4, 8, 11, 13


def blk_seed(flags, segments, memory_puts, capacity=2048):
    mem = Memory()
    for gpa, data in memory_puts:
        mem.put(gpa, data)
    out = struct.pack("<QBBBBII", capacity, flags, len(segments), 4, 4, 1024, 1024)
    for gpa, length, writable in segments:
        out += struct.pack("<IIB", gpa, length, writable)
    return out + bytes(mem.b)


def hdr(t, sector):
    return struct.pack("<IIQ", t, 0, sector)


def blk_seeds():
    return {
        "read": blk_seed(0, [(0x100, 16, 0), (0x1000, 4096, 1), (0x300, 1, 1)], [(0x100, hdr(BLK_IN, 8))]),
        "write_combined": blk_seed(0, [(0x100, 16 + 1024, 0), (0x300 + 1024, 1, 1)], [(0x100, hdr(BLK_OUT, 2040))]),
        "split_header": blk_seed(0, [(0x100, 8, 0), (0x200, 8 + 512, 0), (0x300, 1, 1)],
                                 [(0x100, hdr(BLK_OUT, 1)[:8]), (0x200, hdr(BLK_OUT, 1)[8:])]),
        "flush": blk_seed(1, [(0x100, 16, 0), (0x300, 1, 1)], [(0x100, hdr(BLK_FLUSH, 0))]),
        "get_id": blk_seed(1, [(0x100, 16, 0), (0x1000, 20, 1), (0x300, 1, 1)], [(0x100, hdr(BLK_GET_ID, 0))]),
        "discard": blk_seed(6, [(0x100, 16, 0), (0x200, 32, 0), (0x300, 1, 1)],
                            [(0x100, hdr(BLK_DISCARD, 0)),
                             (0x200, struct.pack("<QII", 0, 8, 0) + struct.pack("<QII", 64, 16, 0))]),
        "write_zeroes_unmap": blk_seed(6, [(0x100, 16 + 16, 0), (0x300, 1, 1)],
                                       [(0x100, hdr(BLK_WRITE_ZEROES, 0) + struct.pack("<QII", 2000, 48, 1))]),
    }


def varint(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(number, value):
    """A protobuf field: ints as varints, bytes as length-delimited."""
    if isinstance(value, int):
        return varint(number << 3) + varint(value)
    return varint(number << 3 | 2) + varint(len(value)) + value


def frame(kind, payload=b""):
    return struct.pack("<II", kind, len(payload)) + payload


def page_entry(index, zero=False, fill=None):
    word = index | (1 << 63 if zero else 0)
    return struct.pack("<Q", word) + (b"" if zero else bytes([fill or 0x5A]) * 4096)


def migration_seeds():
    """migration/stream/stream_format.h: magic, frames (hello 1, verdict 2,
    pages 3, totals 4, state 5, ..., sync 10)."""
    disk = field(1, b"/var/lib/keel/a.img") + field(3, b"serial-a")
    net = field(1, b"tap0") + field(2, bytes([0x52, 0x54, 0, 1, 2, 3]))
    config = field(4, 1) + field(5, 64 << 20) + field(6, disk) + field(7, net) + field(8, 1)
    hello = field(1, 1) + field(2, 2) + field(3, config) + field(5, 4096) + field(6, 64 << 20)
    magic = b"KEELMIG1"
    pages = frame(3, page_entry(0) + page_entry(1, zero=True) + page_entry(63, fill=0xA5))
    totals = frame(4, field(1, 2) + field(2, 1) + field(3, 1))
    return {
        "hello_only": magic + frame(1, hello),
        "hello_pages_totals": magic + frame(1, hello) + pages + frame(10) + totals + frame(5),
        "pages_only": magic + pages,
        "cancel": magic + frame(1, hello) + frame(9, field(2, b"cancelled")),
    }


def replica_seeds():
    """A replica stream (stream_format.h): the first copy, Sync, then per
    epoch pages, State (5) and Epoch (12: epoch, pages, zero pages)."""
    magic = b"KEELMIG1"
    hello = field(1, 1) + field(2, 2) + field(5, 4096) + field(6, 64 << 20) + field(7, 1)
    first = frame(3, page_entry(0) + page_entry(1, fill=0x11)) + frame(10)
    state = frame(5, field(1, 2))

    def epoch(n, pages, zeros):
        return frame(12, field(1, n) + field(2, pages) + field(3, zeros) + field(4, 30000))

    one = frame(3, page_entry(2, fill=0x22)) + state + epoch(1, 1, 0)
    disk1 = struct.pack("<Q", 1)
    blocks = frame(14, disk1 + page_entry(3, fill=0x44) + page_entry(4, zero=True))
    disk_epoch = frame(3, page_entry(9, fill=0x55)) + blocks + state + frame(
        12, field(1, 2) + field(2, 1) + field(5, 1) + field(6, 1))
    two = frame(3, page_entry(0, zero=True) + page_entry(63, fill=0x33)) + state + epoch(2, 1, 1)
    return {
        "two_epochs": magic + frame(1, hello) + first + one + two,
        "second_cut_short": magic + frame(1, hello) + first + one + frame(3, page_entry(5)),
        "out_of_order": magic + frame(1, hello) + first + one + state + epoch(3, 0, 0),
        "disk_blocks": magic + frame(1, hello) + frame(14, disk1 + page_entry(0)) + first + one +
        disk_epoch,
        "counts_differ": magic + frame(1, hello) + first + one + frame(3, page_entry(4)) + state +
        epoch(2, 2, 0),
    }


def nbd_client_seeds():
    be = lambda v, n: v.to_bytes(n, "big")
    greeting = b"NBDMAGIC" + b"IHAVEOPT" + be(3, 2)  # fixed newstyle, no zeroes
    rep_magic = be(0x0003e889045565a9, 8)

    def opt_reply(option, kind, data=b""):
        return rep_magic + be(option, 4) + be(kind, 4) + be(len(data), 4) + data

    export = opt_reply(7, 3, be(0, 2) + be(64 << 20, 8) + be(1 | 4 | 32 | 64, 2))
    block = opt_reply(7, 3, be(3, 2) + be(1, 4) + be(4096, 4) + be(32 << 20, 4))
    go = greeting + export + block + opt_reply(7, 1)
    # Fallback: GO unsupported, EXPORT_NAME answered with size and flags.
    old = greeting + opt_reply(7, 0x80000001) + be(64 << 20, 8) + be(1 | 4, 2)
    refused = greeting + opt_reply(7, 0x80000006, b"no such export")

    def reply(cookie, error=0, payload=b""):
        return be(0x67446698, 4) + be(error, 4) + be(cookie, 8) + payload

    replies = (reply(3) + reply(2) + reply(1, payload=b"\x11" * 4096) +
               reply(4, payload=b"\x22" * 8192))
    errors = reply(2, error=28) + reply(1, error=5) + reply(9)

    def seed(handshake, rest=b""):
        return len(handshake).to_bytes(2, "little") + handshake + rest

    return {"go_then_replies": seed(go, replies), "export_name_fallback": seed(old, replies),
            "refused": seed(refused), "error_replies": seed(go, errors)}


def write(target, seeds):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    write("split_queue_fuzz", queue_seeds())
    write("blk_request_fuzz", blk_seeds())
    write("migration_stream_fuzz", migration_seeds())
    write("replica_stream_fuzz", replica_seeds())
    write("nbd_client_fuzz", nbd_client_seeds())
