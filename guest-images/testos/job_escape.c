// testos job `escape`: plays a guest that found an emulation bug and has the
// VMM run code of its choosing. It writes the magic word to the test door
// (port 0x5e4) that only keel-vmm-testhooks opens: there the vCPU thread
// opens a host file, which a jailed VMM's seccomp filter must stop. Any
// other VMM ignores the write and the job ends normally.
#include "testos.h"

#define TEST_HOOK_PORT 0x5e4
#define OPEN_HOST_FILE 0x6b65656cu  // "keel"

void job_escape(void) {
  kprintf("testos: escape: asking the VMM to open a host file\n");
  outl(TEST_HOOK_PORT, OPEN_HOST_FILE);
  kprintf("testos: escape: still running after the request\n");
  poweroff();
}
