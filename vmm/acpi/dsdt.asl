/*
 * Keel's DSDT (ACPI 6.3 §5.2.11.1): the AML part of the platform description.
 *
 * Compiled by iasl at build time and embedded into keel_acpi (see CMakeLists.txt).
 * The table is static except for the PCI host bridge windows: the named integers
 * in \_SB.PCI0 marked "patched" hold placeholder QWord constants that
 * build_acpi_tables() (dsdt.cpp) rewrites in the AML before checksumming, so the
 * windows follow AcpiPlatform::pci without a second ASL source. Keep their names
 * and placeholder values in step with dsdt.cpp.
 *
 * Revision 2 makes AML integers 64 bits wide (ACPI 6.3 §5.2.11.1), which the
 * 64-bit MMIO window needs.
 */
DefinitionBlock ("dsdt.aml", "DSDT", 2, "KEEL  ", "KEELVMM ", 0x00000001)
{
    /*
     * Soft-off (ACPI 6.3 §7.4.2.5). Package: SLP_TYP for PM1a_CNT, SLP_TYP for
     * PM1b_CNT, two reserved. The VMM powers the guest off when it sees SLP_EN
     * written to PM1a_CNT with SLP_TYP 5 (keel::acpi::kS5SleepType).
     */
    Name (\_S5, Package (0x04)
    {
        0x05,
        0x05,
        Zero,
        Zero
    })

    Scope (\_SB)
    {
        /*
         * PCI host bridge (ACPI 6.3 §6.1.5 _HID, §6.5.5 _BBN, §6.5.6 _SEG):
         * PCI Express root (PNP0A08) that legacy OSes may treat as PCI (PNP0A03).
         * Configuration space is reached through ports 0xCF8/0xCFC.
         */
        Device (PCI0)
        {
            Name (_HID, EisaId ("PNP0A08"))
            Name (_CID, EisaId ("PNP0A03"))
            Name (_SEG, Zero)
            Name (_BBN, Zero)
            Name (_UID, Zero)

            /*
             * PCI interrupt routing (ACPI 6.3 §6.2.13): INTA# of slot n (1-24, the
             * virtio functions) on I/O APIC input 16 + (n - 1) % 8, level, as the
             * VMM raises it. Functions use INTA# only.
             */
            Name (_PRT, Package ()
            {
                Package () { 0x0001FFFF, 0, 0, 16 },
                Package () { 0x0002FFFF, 0, 0, 17 },
                Package () { 0x0003FFFF, 0, 0, 18 },
                Package () { 0x0004FFFF, 0, 0, 19 },
                Package () { 0x0005FFFF, 0, 0, 20 },
                Package () { 0x0006FFFF, 0, 0, 21 },
                Package () { 0x0007FFFF, 0, 0, 22 },
                Package () { 0x0008FFFF, 0, 0, 23 },
                Package () { 0x0009FFFF, 0, 0, 16 },
                Package () { 0x000AFFFF, 0, 0, 17 },
                Package () { 0x000BFFFF, 0, 0, 18 },
                Package () { 0x000CFFFF, 0, 0, 19 },
                Package () { 0x000DFFFF, 0, 0, 20 },
                Package () { 0x000EFFFF, 0, 0, 21 },
                Package () { 0x000FFFFF, 0, 0, 22 },
                Package () { 0x0010FFFF, 0, 0, 23 },
                Package () { 0x0011FFFF, 0, 0, 16 },
                Package () { 0x0012FFFF, 0, 0, 17 },
                Package () { 0x0013FFFF, 0, 0, 18 },
                Package () { 0x0014FFFF, 0, 0, 19 },
                Package () { 0x0015FFFF, 0, 0, 20 },
                Package () { 0x0016FFFF, 0, 0, 21 },
                Package () { 0x0017FFFF, 0, 0, 22 },
                Package () { 0x0018FFFF, 0, 0, 23 }
            })

            /* Patched by the VMM: window base and length; length 0 = no window. */
            Name (IOWB, 0x4B45454C50000001)
            Name (IOWL, 0x4B45454C50000002)
            Name (M32B, 0x4B45454C50000003)
            Name (M32L, 0x4B45454C50000004)
            Name (M64B, 0x4B45454C50000005)
            Name (M64L, 0x4B45454C50000006)

            /* Always present: every bus number, the configuration ports, legacy I/O. */
            Name (CRSF, ResourceTemplate ()
            {
                WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode,
                    0x0000,             // Granularity
                    0x0000,             // Range Minimum
                    0x00FF,             // Range Maximum
                    0x0000,             // Translation Offset
                    0x0100,             // Length
                    ,, )
                IO (Decode16,
                    0x0CF8,             // Range Minimum
                    0x0CF8,             // Range Maximum
                    0x01,               // Alignment
                    0x08,               // Length
                    )
                WordIO (ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange,
                    0x0000,             // Granularity
                    0x0000,             // Range Minimum
                    0x0CF7,             // Range Maximum
                    0x0000,             // Translation Offset
                    0x0CF8,             // Length
                    ,, , TypeStatic, DenseTranslation)
            })

            /* PCI I/O window above the configuration ports. */
            Name (CRIO, ResourceTemplate ()
            {
                WordIO (ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange,
                    0x0000,             // Granularity
                    0x0D00,             // Range Minimum
                    0xFFFF,             // Range Maximum
                    0x0000,             // Translation Offset
                    0xF300,             // Length
                    ,, WIO, TypeStatic, DenseTranslation)
            })

            /* 32-bit MMIO window (the PCI hole below 4 GiB). */
            Name (CR32, ResourceTemplate ()
            {
                DWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite,
                    0x00000000,         // Granularity
                    0xC0000000,         // Range Minimum
                    0xFBFFFFFF,         // Range Maximum
                    0x00000000,         // Translation Offset
                    0x3C000000,         // Length
                    ,, W32, AddressRangeMemory, TypeStatic)
            })

            /* 64-bit MMIO window above guest RAM. */
            Name (CR64, ResourceTemplate ()
            {
                QWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite,
                    0x0000000000000000, // Granularity
                    0x0000008000000000, // Range Minimum
                    0x000000FFFFFFFFFF, // Range Maximum
                    0x0000000000000000, // Translation Offset
                    0x0000008000000000, // Length
                    ,, W64, AddressRangeMemory, TypeStatic)
            })

            /* Current resources (ACPI 6.3 §6.2.2): the fixed part plus each window that exists. */
            Method (_CRS, 0, Serialized)
            {
                Local0 = CRSF
                If (IOWL)
                {
                    CreateWordField (CRIO, \_SB.PCI0.WIO._MIN, IMIN)
                    CreateWordField (CRIO, \_SB.PCI0.WIO._MAX, IMAX)
                    CreateWordField (CRIO, \_SB.PCI0.WIO._LEN, ILEN)
                    IMIN = IOWB
                    IMAX = (IOWB + IOWL) - One
                    ILEN = IOWL
                    ConcatenateResTemplate (Local0, CRIO, Local0)
                }
                If (M32L)
                {
                    CreateDWordField (CR32, \_SB.PCI0.W32._MIN, DMIN)
                    CreateDWordField (CR32, \_SB.PCI0.W32._MAX, DMAX)
                    CreateDWordField (CR32, \_SB.PCI0.W32._LEN, DLEN)
                    DMIN = M32B
                    DMAX = (M32B + M32L) - One
                    DLEN = M32L
                    ConcatenateResTemplate (Local0, CR32, Local0)
                }
                If (M64L)
                {
                    CreateQWordField (CR64, \_SB.PCI0.W64._MIN, QMIN)
                    CreateQWordField (CR64, \_SB.PCI0.W64._MAX, QMAX)
                    CreateQWordField (CR64, \_SB.PCI0.W64._LEN, QLEN)
                    QMIN = M64B
                    QMAX = (M64B + M64L) - One
                    QLEN = M64L
                    ConcatenateResTemplate (Local0, CR64, Local0)
                }
                Return (Local0)
            }
        }

        /* First serial port, 8250-compatible (PNP0501), for the guest's console. */
        Device (COM1)
        {
            Name (_HID, EisaId ("PNP0501"))
            Name (_UID, One)
            Method (_STA, 0, NotSerialized)
            {
                Return (0x0F)
            }
            Name (_CRS, ResourceTemplate ()
            {
                IO (Decode16,
                    0x03F8,             // Range Minimum
                    0x03F8,             // Range Maximum
                    0x01,               // Alignment
                    0x08,               // Length
                    )
                IRQNoFlags ()
                    {4}
            })
        }
            /* CMOS real-time clock (PNP0B00) at ports 0x70-0x71, IRQ 8. */
        Device (RTC)
        {
            Name (_HID, EisaId ("PNP0B00"))
            Name (_CRS, ResourceTemplate ()
            {
                IO (Decode16, 0x0070, 0x0070, 0x01, 0x02, )
                IRQNoFlags () {8}
            })
        }

        /*
         * PS/2 keyboard controller (PNP0303): data 0x60, command 0x64. Declared so
         * that Linux's i8042 driver finds it through PnP instead of probing.
         */
        Device (KBD)
        {
            Name (_HID, EisaId ("PNP0303"))
            Name (_CRS, ResourceTemplate ()
            {
                IO (Decode16, 0x0060, 0x0060, 0x01, 0x01, )
                IO (Decode16, 0x0064, 0x0064, 0x01, 0x01, )
                IRQNoFlags () {1}
            })
        }

        /*
         * pvpanic (QEMU0001) at port 0x505: a crashing guest writes 1 there and
         * keel-vmm ends with its crash code instead of running a dead guest.
         */
        Device (PEVT)
        {
            Name (_HID, "QEMU0001")
            Name (_CRS, ResourceTemplate ()
            {
                IO (Decode16, 0x0505, 0x0505, 0x01, 0x01, )
            })
            Method (_STA, 0, NotSerialized)
            {
                Return (0x0F)
            }
        }
    }
}
