#include "vmm/boot/x86_boot.h"

#include <gtest/gtest.h>

#include "common/error.h"
#include "tests/support/boot_images.h"
#include "vmm/boot/e820.h"
#include "vmm/boot/memory_layout.h"
#include "vmm/boot/page_tables.h"

namespace keel {
namespace {

TEST(E820, SmallGuestIsRamBelowTheHole) {
  auto map = build_e820(layout::guest_ram_regions(256ull << 20));
  ASSERT_EQ(map.size(), 5u);
  EXPECT_EQ(map[4].address, layout::kKvmIdentityMap);
  EXPECT_EQ(map[4].type, kE820Reserved);
  EXPECT_EQ(map[0].address, 0u);
  EXPECT_EQ(map[0].size, layout::kEbdaStart);
  EXPECT_EQ(map[0].type, kE820Ram);
  EXPECT_EQ(map[1].type, kE820Reserved);
  EXPECT_EQ(map[2].address, layout::kAcpiTables);
  EXPECT_EQ(map[2].type, kE820Reserved);
  EXPECT_EQ(map[3].address, 0x100000u);
  EXPECT_EQ(map[3].address + map[3].size, 256ull << 20);
}

TEST(E820, LargeGuestSplitsAroundThePciHole) {
  const uint64_t size = 4ull << 30;
  auto map = build_e820(layout::guest_ram_regions(size));
  ASSERT_EQ(map.size(), 6u);
  EXPECT_EQ(map[3].address + map[3].size, layout::kPciHoleStart);
  EXPECT_EQ(map[4].address, layout::kKvmIdentityMap);
  EXPECT_EQ(map[4].address + map[4].size, 0xff000000u);
  EXPECT_EQ(map[5].address, layout::kHighMemStart);
  EXPECT_EQ(map[5].size, size - layout::kPciHoleStart);
  uint64_t ram = 0;
  for (auto& e : map) {
    if (e.type == kE820Ram) ram += e.size;
  }
  EXPECT_EQ(ram, size - (0x100000 - layout::kEbdaStart));
  for (size_t i = 1; i < map.size(); ++i) {
    EXPECT_LE(map[i - 1].address + map[i - 1].size, map[i].address) << "entries overlap";
  }
}

TEST(GuestMemory, RefusesRegionsThatAreNotPacked) {
  EXPECT_THROW(GuestMemory({{0, 4096, 0}, {1ull << 32, 4096, 8192}}), std::invalid_argument);
  EXPECT_THROW(GuestMemory({{0, 0, 0}}), std::invalid_argument);
}

TEST(GuestMemory, TranslatesEachRegionToItsFileOffset) {
  GuestMemory memory({{0, 8192, 0}, {1ull << 32, 4096, 8192}});
  EXPECT_EQ(memory.size(), 12288u);
  EXPECT_EQ(memory.host_range(1ull << 32, 4096), memory.host_base() + 8192);
  EXPECT_FALSE(memory.contains(8192, 1)) << "the gap between regions is not RAM";
  EXPECT_FALSE(memory.contains(8190, 4)) << "a range may not straddle a region's end";
}

TEST(GuestMemory, BoundsChecksEveryRange) {
  GuestMemory memory(layout::guest_ram_regions(64ull << 20));
  EXPECT_TRUE(memory.contains(0, 64ull << 20));
  EXPECT_FALSE(memory.contains(0, (64ull << 20) + 1));
  EXPECT_FALSE(memory.contains(~0ull - 4, 16));  // would wrap
  EXPECT_THROW(memory.host_range(64ull << 20, 1), std::out_of_range);
  memory.write_obj<uint32_t>(0x1000, 0xdeadbeef);
  EXPECT_EQ(memory.read_obj<uint32_t>(0x1000), 0xdeadbeefu);
}

TEST(PageTables, IdentityMapsFourGiB) {
  GuestMemory memory(layout::guest_ram_regions(16ull << 20));
  uint64_t cr3 = write_identity_page_tables(memory, layout::kPageTables);
  EXPECT_EQ(cr3, layout::kPageTables);
  auto pml4e = memory.read_obj<uint64_t>(cr3);
  EXPECT_EQ(pml4e & 0x3, 0x3u);
  uint64_t pdpt = pml4e & ~0xfffull;
  EXPECT_EQ(memory.read_obj<uint64_t>(cr3 + 8), 0u) << "only the first 512 GiB slot is used";
  // Walk a few addresses through the tables.
  for (uint64_t addr : {0x0ull, 0x100000ull, 0x3fe00000ull, 0xc0000000ull, 0xffe00000ull}) {
    uint64_t pdpte = memory.read_obj<uint64_t>(pdpt + ((addr >> 30) & 511) * 8);
    ASSERT_EQ(pdpte & 1, 1u);
    uint64_t pde = memory.read_obj<uint64_t>((pdpte & ~0xfffull) + ((addr >> 21) & 511) * 8);
    EXPECT_EQ(pde & 0x83, 0x83u) << "present, writable, 2 MiB";
    EXPECT_EQ(pde & ~0xfffull, addr & ~0x1fffffull);
  }
  EXPECT_EQ(memory.read_obj<uint64_t>(pdpt + 4 * 8), 0u) << "nothing above 4 GiB";
}

TEST(ZeroPage, CarriesHeaderCmdlineInitrdE820AndRsdp) {
  auto image = parse_kernel_image(testing::make_bzimage(), "k");
  auto e820 = build_e820(layout::guest_ram_regions(256ull << 20));
  auto zp = build_zero_page(image, 0x20000, 0x5000000, 0x123456, e820, 0xe0000);
  EXPECT_EQ(zp.hdr.header, 0x53726448u);
  EXPECT_EQ(zp.hdr.version, 0x020f);
  EXPECT_EQ(zp.hdr.type_of_loader, 0xff);
  EXPECT_EQ(zp.hdr.cmd_line_ptr, 0x20000u);
  EXPECT_EQ(zp.hdr.ramdisk_image, 0x5000000u);
  EXPECT_EQ(zp.hdr.ramdisk_size, 0x123456u);
  EXPECT_EQ(zp.acpi_rsdp_addr, 0xe0000u);
  ASSERT_EQ(zp.e820_entries, e820.size());
  for (size_t i = 0; i < e820.size(); ++i) {
    EXPECT_EQ(zp.e820_table[i].addr, e820[i].address);
    EXPECT_EQ(zp.e820_table[i].size, e820[i].size);
    EXPECT_EQ(zp.e820_table[i].type, e820[i].type);
  }
}

TEST(LoadGuestKernel, BzImageEntersAt0x100200WithZeroPage) {
  GuestMemory memory(layout::guest_ram_regions(64ull << 20));
  auto file = testing::make_bzimage(4096);
  auto image = parse_kernel_image(file, "k");
  BootSetup setup{"job=platform", std::vector<uint8_t>(10000, 0xab), 0xe0000};
  auto entry = load_guest_kernel(memory, image, setup);
  EXPECT_TRUE(entry.long_mode);
  EXPECT_EQ(entry.rip, 0x100200u);
  EXPECT_EQ(entry.rsi, layout::kZeroPage);
  EXPECT_EQ(memory.read_obj<uint8_t>(0x100000 + 5), file[1024 + 5]);
  auto zp = memory.read_obj<boot_params>(layout::kZeroPage);
  char cmdline[13] = {};
  memory.read(zp.hdr.cmd_line_ptr, {reinterpret_cast<uint8_t*>(cmdline), 13});
  EXPECT_STREQ(cmdline, "job=platform");
  EXPECT_EQ(zp.hdr.ramdisk_size, 10000u);
  EXPECT_EQ(zp.hdr.ramdisk_image % 4096, 0u);
  EXPECT_GE(zp.hdr.ramdisk_image, 0x100000u + image.init_size);
  EXPECT_LE(zp.hdr.ramdisk_image + 10000u, 64u << 20);
  EXPECT_EQ(memory.read_obj<uint8_t>(zp.hdr.ramdisk_image + 9999), 0xab);
}

TEST(LoadGuestKernel, KernelFootprintCountsFromItsRuntimeStart) {
  // init_size 64 KiB from 16 MiB: a 16 MiB guest cannot hold it, 32 MiB can,
  // and the initrd goes above it.
  auto image =
      parse_kernel_image(testing::make_bzimage(4096, 0x020f, XLF_KERNEL_64, 0x1000000, true), "k");
  GuestMemory small(layout::guest_ram_regions(16ull << 20));
  EXPECT_THROW(load_guest_kernel(small, image, BootSetup{}), InputError);
  GuestMemory enough(layout::guest_ram_regions(32ull << 20));
  BootSetup setup{"", std::vector<uint8_t>(4096, 1), 0};
  load_guest_kernel(enough, image, setup);
  auto zp = enough.read_obj<boot_params>(layout::kZeroPage);
  EXPECT_GE(zp.hdr.ramdisk_image, 0x1000000u + 0x10000u);
}

TEST(LoadGuestKernel, RefusesTooLongCmdline) {
  GuestMemory memory(layout::guest_ram_regions(64ull << 20));
  auto image = parse_kernel_image(testing::make_bzimage(), "k");
  BootSetup setup{std::string(300, 'x'), {}, 0};
  EXPECT_THROW(load_guest_kernel(memory, image, setup), InputError);
}

TEST(LoadGuestKernel, RefusesInitrdThatDoesNotFit) {
  GuestMemory memory(layout::guest_ram_regions(16ull << 20));
  auto image = parse_kernel_image(testing::make_bzimage(), "k");
  BootSetup setup{"", std::vector<uint8_t>(16u << 20, 1), 0};
  EXPECT_THROW(load_guest_kernel(memory, image, setup), InputError);
}

TEST(LoadGuestKernel, PvhElfGetsStartInfoWithMemoryMap) {
  GuestMemory memory(layout::guest_ram_regions(64ull << 20));
  auto image = parse_kernel_image(testing::make_pvh_elf(0x100000, 0x100040), "k");
  BootSetup setup{"job=heartbeat", {}, 0xe0000};
  auto entry = load_guest_kernel(memory, image, setup);
  EXPECT_FALSE(entry.long_mode);
  EXPECT_EQ(entry.rip, 0x100040u);
  EXPECT_EQ(entry.rbx, layout::kPvhStartInfo);
  EXPECT_EQ(memory.read_obj<uint32_t>(entry.rbx), 0x336ec578u);    // magic
  EXPECT_EQ(memory.read_obj<uint64_t>(entry.rbx + 24), 0x20000u);  // cmdline_paddr
  EXPECT_EQ(memory.read_obj<uint64_t>(entry.rbx + 32), 0xe0000u);  // rsdp_paddr
  uint64_t memmap = memory.read_obj<uint64_t>(entry.rbx + 40);
  uint32_t entries = memory.read_obj<uint32_t>(entry.rbx + 48);
  EXPECT_EQ(entries, 5u);
  EXPECT_EQ(memory.read_obj<uint64_t>(memmap + 3 * 24), 0x100000u);
  EXPECT_EQ(memory.read_obj<uint8_t>(0x100000), 0x90);
  EXPECT_EQ(memory.read_obj<uint8_t>(0x100000 + 0x100), 0) << "bss is zeroed";
}

TEST(LoadGuestKernel, RefusesPvhSegmentOutsideRam) {
  GuestMemory memory(layout::guest_ram_regions(16ull << 20));
  auto image = parse_kernel_image(testing::make_pvh_elf(0xd0000000, 0xd0000000), "k");
  EXPECT_THROW(load_guest_kernel(memory, image, BootSetup{}), InputError);
}

}  // namespace
}  // namespace keel
