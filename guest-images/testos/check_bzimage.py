#!/usr/bin/env python3
"""Checks testos.bzImage's setup header (Documentation/arch/x86/boot.rst)
against testos.elf and testos.bin from the same build.

usage: check_bzimage.py BUILD_DIR/guest-images/testos
"""
import struct
import subprocess
import sys


def main():
    d = sys.argv[1] if len(sys.argv) > 1 else "."
    bz = open(f"{d}/testos.bzImage", "rb").read()
    flat = open(f"{d}/testos.bin", "rb").read()
    syms = {}
    for line in subprocess.run(["nm", f"{d}/testos.elf"], check=True, capture_output=True,
                               text=True).stdout.splitlines():
        parts = line.split()
        if len(parts) == 3:
            syms[parts[2]] = int(parts[0], 16)
    errors = []

    def expect(name, got, want):
        ok = got == want
        print(f"{name:20} {got:#x} {'ok' if ok else f'FAIL (want {want:#x})'}")
        if not ok:
            errors.append(name)

    u8 = lambda o: bz[o]
    u16 = lambda o: struct.unpack_from("<H", bz, o)[0]
    u32 = lambda o: struct.unpack_from("<I", bz, o)[0]
    u64 = lambda o: struct.unpack_from("<Q", bz, o)[0]
    setup_sects = u8(0x1F1)
    expect("setup_sects", setup_sects, 1)
    expect("boot_flag", u16(0x1FE), 0xAA55)
    expect("header", u32(0x202), 0x53726448)  # "HdrS"
    expect("version", u16(0x206), 0x020F)
    expect("loadflags", u8(0x211), 0x01)
    expect("code32_start", u32(0x214), 0x100000)
    expect("kernel_alignment", u32(0x230), 0x100000)
    expect("relocatable_kernel", u8(0x234), 0)
    expect("xloadflags", u16(0x236), 0x0001)
    expect("cmdline_size", u32(0x238), 4095)
    expect("pref_address", u64(0x258), 0x100000)
    expect("init_size", u32(0x260), syms["_end"] - 0x100000)
    expect("syssize", u32(0x1F4), (len(flat) + 15) // 16)
    pm = bz[(setup_sects + 1) * 512:]
    expect("pm image == .bin", int(pm == flat), 1)
    expect("linux32_entry", syms["linux32_entry"], 0x100000)
    expect("linux64_entry", syms["linux64_entry"], 0x100200)
    ki = u32(0x268)
    expect("kernel_info magic", struct.unpack_from("<I", pm, ki)[0], 0x506F544C)  # "LToP"
    if u32(0x260) < len(flat):
        errors.append("init_size smaller than the image")
    print("bzImage OK" if not errors else f"bzImage FAIL {','.join(errors)}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
