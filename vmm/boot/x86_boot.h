// Puts a kernel, its command line, initrd and boot information into guest
// memory and sets the boot vCPU up for its entry: the Linux 64-bit boot
// protocol for a bzImage, the PVH ABI (32-bit protected mode) for an ELF.
#pragma once

#include <asm/bootparam.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common/guest_memory.h"
#include "vmm/boot/e820.h"
#include "vmm/boot/kernel_image.h"
#include "vmm/kvm/kvm_vcpu.h"

namespace keel {

struct BootSetup {
  std::string cmdline;
  std::vector<uint8_t> initrd;
  uint64_t acpi_rsdp = 0;
};

struct BootEntry {
  bool long_mode;
  uint64_t rip;
  uint64_t rsi;  // boot_params (Linux)
  uint64_t rbx;  // hvm_start_info (PVH)
  uint64_t cr3;
};

// The Linux zero page for `image`: its setup header plus what the loader
// fills in. Pure, so that it can be checked without a VM.
boot_params build_zero_page(const KernelImage& image, uint64_t cmdline_addr, uint64_t initrd_addr,
                            uint64_t initrd_size, const std::vector<E820Entry>& e820,
                            uint64_t acpi_rsdp);

// Throws InputError when the kernel, command line or initrd do not fit.
BootEntry load_guest_kernel(GuestMemory& memory, const KernelImage& image, const BootSetup& setup);

// MSRs every vCPU starts with, as firmware leaves them: TSC 0 on all vCPUs
// at once (so KVM keeps their TSCs synchronised), fast strings on, MTRRs
// enabled with write-back as the default type (Linux sets PAT up only then).
std::vector<kvm_msr_entry> boot_msrs();

// Registers and segments for the entry; the GDT it refers to is written by
// load_guest_kernel.
void set_boot_vcpu_state(kvm::Vcpu& vcpu, const BootEntry& entry);

}  // namespace keel
