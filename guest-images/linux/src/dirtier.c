/* keel-dirtier MIB RATE_MBPS LIMIT [LIMIT]
 *
 * Maps MIB MiB of anonymous memory and writes a pattern over it page by page
 * (4 KiB), pass after pass, at RATE_MBPS MiB/s (0 = as fast as it can). LIMIT
 * is "N" (stop after N passes) or "Ns" (stop after N seconds, mid-pass if need
 * be); with both, whichever comes first. Then it reads everything back and
 * checks that each page holds what its last write put there.
 *
 * Lines: "dirtier start mib=<n> rate_mbps=<n> pages=<n>", one
 * "dirtier pass=<k> mib=<MiB written in the pass> ms=<duration>" per pass (the
 * last one may be partial), up to 8 "dirtier bad page=<p> word=<i> got=0x..
 * want=0x..", then "dirtier OK pages=<n>" or "dirtier BAD bad_pages=<n>". */
#include "keel-guest.h" /* first: it defines _GNU_SOURCE */

#include <sys/mman.h>

#define PAGE 4096u
#define WORDS (PAGE / sizeof(uint64_t))
#define CHUNK_PAGES 16u /* pacing and deadline checks every 64 KiB */

static const char prog[] = "keel-dirtier";

/* Word i of page p after pass k (k >= 1); a page never written reads 0. */
static inline uint64_t pattern_base(uint64_t page, uint64_t pass)
{
	return kg_mix((page << 24) ^ pass ^ 0x6b65656c64697274ull);
}

static void fill_page(uint64_t *w, uint64_t page, uint64_t pass)
{
	const uint64_t base = pattern_base(page, pass);
	for (unsigned i = 0; i < WORDS; i++)
		w[i] = base + i;
}

static void parse_limit(const char *s, uint64_t *passes, uint64_t *seconds)
{
	char buf[32];
	size_t n = strlen(s);
	uint64_t v;
	if (n > 1 && n < sizeof(buf) && s[n - 1] == 's') {
		memcpy(buf, s, n - 1);
		buf[n - 1] = '\0';
		if (!kg_parse_u64(buf, &v) || v == 0 || *seconds != 0)
			kg_fail(prog, "bad seconds limit '%s'", s);
		*seconds = v;
		return;
	}
	if (!kg_parse_u64(s, &v) || v == 0 || *passes != 0)
		kg_fail(prog, "bad passes limit '%s'", s);
	*passes = v;
}

int main(int argc, char **argv)
{
	uint64_t mib, rate, passes = 0, seconds = 0;
	if (argc < 4 || argc > 5 || !kg_parse_u64(argv[1], &mib) || !kg_parse_u64(argv[2], &rate) ||
	    mib == 0 || mib > (1ull << 24))
		kg_fail(prog, "usage: keel-dirtier MIB RATE_MBPS(0=fast) PASSES|SECONDSs "
			      "[PASSES|SECONDSs]");
	for (int i = 3; i < argc; i++)
		parse_limit(argv[i], &passes, &seconds);

	const uint64_t pages = mib * (1048576u / PAGE);
	unsigned char *mem = mmap(NULL, (size_t)(pages * PAGE), PROT_READ | PROT_WRITE,
				  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (mem == MAP_FAILED)
		kg_fail(prog, "mmap %llu MiB: %s", (unsigned long long)mib, strerror(errno));

	kg_line("dirtier start mib=%llu rate_mbps=%llu pages=%llu", (unsigned long long)mib,
		(unsigned long long)rate, (unsigned long long)pages);

	const uint64_t start = kg_now_ns();
	const uint64_t deadline = seconds ? start + seconds * 1000000000ull : UINT64_MAX;
	uint64_t written = 0; /* pages written since start, for the pacing */
	uint64_t pass = 0, cut = pages;
	bool stop = false;
	while (!stop && (passes == 0 || pass < passes)) {
		pass++;
		const uint64_t pass_start = kg_now_ns();
		uint64_t p = 0;
		while (p < pages) {
			const uint64_t end = p + CHUNK_PAGES < pages ? p + CHUNK_PAGES : pages;
			written += end - p;
			for (; p < end; p++)
				fill_page((uint64_t *)(void *)(mem + p * PAGE), p, pass);
			uint64_t now = kg_now_ns();
			if (rate != 0) {
				unsigned __int128 due = (unsigned __int128)written * PAGE * 1000000000u /
							((unsigned __int128)rate * 1048576u);
				uint64_t target = start + (uint64_t)due;
				if (target > deadline)
					target = deadline;
				if (now < target) {
					kg_sleep_until(target);
					now = kg_now_ns();
				}
			}
			if (now >= deadline) {
				stop = true;
				break;
			}
		}
		cut = p;
		kg_line("dirtier pass=%llu mib=%llu ms=%llu", (unsigned long long)pass,
			(unsigned long long)(p * PAGE / 1048576u),
			(unsigned long long)((kg_now_ns() - pass_start) / 1000000u));
	}

	/* Verify: pages [0, cut) hold the last pass, the rest the one before. */
	uint64_t bad = 0;
	for (uint64_t p = 0; p < pages; p++) {
		const uint64_t *w = (const uint64_t *)(const void *)(mem + p * PAGE);
		uint64_t k = p < cut ? pass : pass - 1;
		uint64_t base = k ? pattern_base(p, k) : 0;
		for (unsigned i = 0; i < WORDS; i++) {
			uint64_t want = k ? base + i : 0;
			if (w[i] != want) {
				if (bad < 8)
					kg_line("dirtier bad page=%llu word=%u got=0x%llx want=0x%llx",
						(unsigned long long)p, i, (unsigned long long)w[i],
						(unsigned long long)want);
				bad++;
				break;
			}
		}
	}
	if (bad) {
		kg_line("dirtier BAD bad_pages=%llu", (unsigned long long)bad);
		return KG_EXIT_BAD;
	}
	kg_line("dirtier OK pages=%llu", (unsigned long long)pages);
	return KG_EXIT_OK;
}
