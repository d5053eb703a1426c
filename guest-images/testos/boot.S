/*
 * testos entry points, GDT, exception stubs and ring changes.
 *
 * One link, two containers:
 *   0x100000  Linux 32-bit boot protocol entry (flat protected mode, ESI = boot_params)
 *   0x100200  Linux 64-bit boot protocol entry (long mode, RSI = boot_params)
 *   pvh_entry Xen PVH entry (32-bit protected mode, paging off, EBX = hvm_start_info)
 * The .bzhdr section (not loaded, not part of the flat image) holds the
 * 1024-byte real-mode part of testos.bzImage (boot sector + setup header).
 */

#define SEL_KCODE 0x08
#define SEL_KDATA 0x10
#define SEL_UDATA 0x18
#define SEL_UCODE 0x20
#define SEL_KCODE32 0x38

#define BOOT_LINUX64 1
#define BOOT_LINUX32 2
#define BOOT_PVH 3

#define XEN_ELFNOTE_PHYS32_ENTRY 18

/* ------------------------------------------------------------------ */
/* bzImage real-mode part: boot sector + one setup sector (boot.rst).  */
/* ------------------------------------------------------------------ */
	.section .bzhdr, ""
	.code16
bz_start:
	cli
1:	hlt
	jmp 1b
	.org 0x1f1
	.byte 1				/* 0x1f1 setup_sects */
	.word 0				/* 0x1f2 root_flags */
	.long _bz_syssize		/* 0x1f4 syssize (16-byte units) */
	.word 0				/* 0x1f8 ram_size */
	.word 0xffff			/* 0x1fa vid_mode: normal */
	.word 0				/* 0x1fc root_dev */
	.word 0xaa55			/* 0x1fe boot_flag */
	.byte 0xeb, bz_hang - 1f	/* 0x200 jump */
1:	.ascii "HdrS"			/* 0x202 header */
	.word 0x020f			/* 0x206 version 2.15 */
	.long 0				/* 0x208 realmode_swtch */
	.word 0x1000			/* 0x20c start_sys_seg */
	.word 0				/* 0x20e kernel_version */
	.byte 0				/* 0x210 type_of_loader */
	.byte 0x01			/* 0x211 loadflags: LOADED_HIGH */
	.word 0				/* 0x212 setup_move_size */
	.long 0x100000			/* 0x214 code32_start */
	.long 0				/* 0x218 ramdisk_image */
	.long 0				/* 0x21c ramdisk_size */
	.long 0				/* 0x220 bootsect_kludge */
	.word 0				/* 0x224 heap_end_ptr */
	.byte 0				/* 0x226 ext_loader_ver */
	.byte 0				/* 0x227 ext_loader_type */
	.long 0				/* 0x228 cmd_line_ptr */
	.long 0x7fffffff		/* 0x22c initrd_addr_max */
	.long 0x100000			/* 0x230 kernel_alignment */
	.byte 0				/* 0x234 relocatable_kernel */
	.byte 20			/* 0x235 min_alignment (log2) */
	.word 0x0001			/* 0x236 xloadflags: XLF_KERNEL_64 */
	.long 4095			/* 0x238 cmdline_size */
	.long 0				/* 0x23c hardware_subarch */
	.quad 0				/* 0x240 hardware_subarch_data */
	.long 0				/* 0x248 payload_offset */
	.long 0				/* 0x24c payload_length */
	.quad 0				/* 0x250 setup_data */
	.quad 0x100000			/* 0x258 pref_address */
	.long _bz_init_size		/* 0x260 init_size */
	.long 0				/* 0x264 handover_offset */
	.long _bz_kernel_info_offset	/* 0x268 kernel_info_offset */
bz_hang:
	cli
	hlt
	jmp bz_hang
	.org 0x400

/* ------------------------------------------------------------------ */
/* Xen PVH note: XEN_ELFNOTE_PHYS32_ENTRY, 4-byte descriptor.          */
/* QEMU reads 8 bytes there, so the linker script puts 4 zero bytes     */
/* right after this note.                                              */
/* ------------------------------------------------------------------ */
	.section .note.Xen, "a", @note
	.balign 4
	.long 4				/* namesz */
	.long 4				/* descsz */
	.long XEN_ELFNOTE_PHYS32_ENTRY	/* type */
	.asciz "Xen"
	.long pvh_entry

/* kernel_info (boot protocol 2.15) */
	.section .rodata
	.balign 4
	.globl kernel_info
kernel_info:
	.ascii "LToP"			/* header */
	.long 16			/* size */
	.long 16			/* size_total */
	.long 0				/* setup_type_max */

/* ------------------------------------------------------------------ */
/* Entries. .text.head is the very start of the image (0x100000).      */
/* ------------------------------------------------------------------ */
	.section .text.head, "ax"
	.code32
	.globl linux32_entry
linux32_entry:				/* 0x100000 */
	cli
	movl %esi, %ebx
	rdtsc
	movl %eax, tsc_boot
	movl %edx, tsc_boot + 4
	movl $BOOT_LINUX32, %ebp
	jmp common32

	.org 0x200
	.code64
	.globl linux64_entry
linux64_entry:				/* 0x100200 */
	cli
	movq %rsi, %r12
	rdtsc
	movl %eax, tsc_boot(%rip)
	movl %edx, tsc_boot + 4(%rip)
	movl $BOOT_LINUX64, %r13d
	jmp common64

	.code32
	.globl pvh_entry
pvh_entry:
	cli
	rdtsc
	movl %eax, tsc_boot
	movl %edx, tsc_boot + 4
	movl $BOOT_PVH, %ebp
	/* fall through: EBX = hvm_start_info */

/* 32-bit protected mode, paging off: EBX = boot data, EBP = kind. */
common32:
	lgdt gdt_desc
	ljmp $SEL_KCODE32, $1f
1:	movl $SEL_KDATA, %eax
	movl %eax, %ds
	movl %eax, %es
	movl %eax, %ss
	movl %eax, %fs
	movl %eax, %gs
	movl $boot_stack_top, %esp

	/* Boot page tables: PML4, PDPT, 4 PDs mapping 0..4 GiB with 2 MiB pages. */
	movl $boot_pgt, %edi
	movl $(6 * 4096 / 4), %ecx
	xorl %eax, %eax
	cld
	rep stosl
	movl $(boot_pgt + 0x1000 + 7), boot_pgt
	movl $(boot_pgt + 0x2000 + 7), boot_pgt + 0x1000
	movl $(boot_pgt + 0x3000 + 7), boot_pgt + 0x1008
	movl $(boot_pgt + 0x4000 + 7), boot_pgt + 0x1010
	movl $(boot_pgt + 0x5000 + 7), boot_pgt + 0x1018
	movl $(boot_pgt + 0x2000), %edi
	movl $0x87, %eax		/* P | RW | US | PS */
	movl $2048, %ecx
2:	movl %eax, (%edi)
	addl $0x200000, %eax
	addl $8, %edi
	decl %ecx
	jnz 2b

	movl %cr4, %eax
	orl $0x20, %eax			/* PAE */
	movl %eax, %cr4
	movl $boot_pgt, %eax
	movl %eax, %cr3
	movl $0xc0000080, %ecx		/* EFER */
	rdmsr
	orl $0x100, %eax		/* LME */
	wrmsr
	movl %cr0, %eax
	orl $0x80000001, %eax		/* PG | PE */
	movl %eax, %cr0
	ljmp $SEL_KCODE, $3f
	.code64
3:	movl %ebx, %r12d
	movl %ebp, %r13d

/* Long mode, identity mapped: R12 = boot data, R13 = kind. */
common64:
	lgdt gdt_desc(%rip)
	leaq boot_stack_top(%rip), %rsp
	pushq $SEL_KCODE
	leaq 4f(%rip), %rax
	pushq %rax
	lretq
4:	movl $SEL_KDATA, %eax
	movl %eax, %ds
	movl %eax, %es
	movl %eax, %ss
	xorl %eax, %eax
	movl %eax, %fs
	movl %eax, %gs

	/* Clear .bss (the boot stack holds nothing live yet). */
	leaq __bss_start(%rip), %rdi
	leaq __bss_end(%rip), %rcx
	subq %rdi, %rcx
	shrq $3, %rcx
	xorl %eax, %eax
	cld
	rep stosq

	movl %r13d, %edi
	movq %r12, %rsi
	xorl %ebp, %ebp
	call kernel_start
5:	hlt
	jmp 5b

/* ------------------------------------------------------------------ */
	.text
	.code64

/* Triple-fault on purpose: with an IDT of limit 0, the #UD of ud2 cannot
 * be delivered: #GP, then #DF, then shutdown. Ring 0 only. (ud2 rather
 * than int3: KVM's instruction emulator, which runs all of ring 0 on PVM
 * hosts, cannot emulate INT n in protected mode.) */
	.globl triple_fault
triple_fault:
	lidt null_idt_desc(%rip)
	ud2
1:	hlt
	jmp 1b

/* enter_user(fn, rsp, arg): iretq to ring 3 with IOPL=3 and IF=0. */
	.globl enter_user
enter_user:
	movl $(SEL_UDATA | 3), %eax
	movl %eax, %ds
	movl %eax, %es
	pushq $(SEL_UDATA | 3)		/* SS */
	pushq %rsi			/* RSP */
	pushq $0x3002			/* RFLAGS: IOPL=3, IF=0 */
	pushq $(SEL_UCODE | 3)		/* CS */
	pushq %rdi			/* RIP */
	movq %rdx, %rdi
	xorl %esi, %esi
	xorl %edx, %edx
	iretq

/* Ring 3 dies through here: exception_handler() recognises the #UD at
 * user_die and triple-faults without printing. (PVM hosts turn INT n from
 * ring 3 into #UD, so no software-interrupt gate is used.) */
	.globl user_die
user_die:
	ud2
	jmp user_die

/* Exception stubs: push a dummy error code where the CPU pushes none,
 * then the vector; exc_common hands the frame to exception_handler(). */
.macro ISR vec, haserr
isr\vec:
	.if \haserr == 0
	pushq $0
	.endif
	pushq $\vec
	jmp exc_common
.endm

	ISR 0, 0
	ISR 1, 0
	ISR 2, 0
	ISR 3, 0
	ISR 4, 0
	ISR 5, 0
	ISR 6, 0
	ISR 7, 0
	ISR 8, 1
	ISR 9, 0
	ISR 10, 1
	ISR 11, 1
	ISR 12, 1
	ISR 13, 1
	ISR 14, 1
	ISR 15, 0
	ISR 16, 0
	ISR 17, 1
	ISR 18, 0
	ISR 19, 0
	ISR 20, 0
	ISR 21, 1
	ISR 22, 0
	ISR 23, 0
	ISR 24, 0
	ISR 25, 0
	ISR 26, 0
	ISR 27, 0
	ISR 28, 0
	ISR 29, 1
	ISR 30, 1
	ISR 31, 0

/* Saves every GPR so that exception_handler() may emulate the faulting
 * instruction (port I/O from ring 3 where IOPL is not honoured, as on PVM
 * hosts) and return; otherwise it prints the exception and dies. */
exc_common:
	pushq %rax
	pushq %rcx
	pushq %rdx
	pushq %rbx
	pushq %rbp
	pushq %rsi
	pushq %rdi
	pushq %r8
	pushq %r9
	pushq %r10
	pushq %r11
	pushq %r12
	pushq %r13
	pushq %r14
	pushq %r15
	cld
	movq %rsp, %rdi
	movq %rsp, %rbx
	andq $-16, %rsp
	call exception_handler
	movq %rbx, %rsp
	popq %r15
	popq %r14
	popq %r13
	popq %r12
	popq %r11
	popq %r10
	popq %r9
	popq %r8
	popq %rdi
	popq %rsi
	popq %rbp
	popq %rbx
	popq %rdx
	popq %rcx
	popq %rax
	addq $16, %rsp
	iretq

	.section .rodata
	.balign 8
	.globl isr_table
isr_table:
	.irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
	.quad isr\v
	.endr

/* ------------------------------------------------------------------ */
	.data
	.balign 8
	.globl tsc_boot
tsc_boot:
	.quad 0

	.balign 16
	.globl gdt
gdt:
	.quad 0				/* 0x00 null */
	.quad 0x00af9a000000ffff	/* 0x08 kernel code, 64-bit */
	.quad 0x00cf92000000ffff	/* 0x10 kernel data */
	.quad 0x00cff2000000ffff	/* 0x18 user data, DPL 3 */
	.quad 0x00affa000000ffff	/* 0x20 user code, 64-bit, DPL 3 */
	.quad 0, 0			/* 0x28 64-bit TSS (filled by kernel.c) */
	.quad 0x00cf9a000000ffff	/* 0x38 kernel code, 32-bit (PVH path) */
gdt_end:

	.balign 8
	.word 0, 0, 0
gdt_desc:				/* 6 bytes in 32-bit mode, 10 in 64-bit */
	.word gdt_end - gdt - 1
	.quad gdt

	.balign 8
	.word 0, 0, 0
null_idt_desc:
	.word 0
	.quad 0

/* ------------------------------------------------------------------ */
	.bss
	.balign 16
boot_stack:
	.skip 16384
	.globl boot_stack_top
boot_stack_top:

/* Page tables live in .bss.pgt (not cleared: every entry used is written). */
	.section .bss.pgt, "aw", @nobits
	.balign 4096
boot_pgt:
	.skip 6 * 4096
