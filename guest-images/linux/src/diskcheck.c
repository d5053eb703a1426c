/* keel-diskcheck [-r MBPS] MODE PATH MIB [SEED [WRITES]]
 *
 * Writes and checks a seeded pattern on a block device or a file, in 4 KiB
 * blocks, over the first MIB MiB (0 = the whole device or file).
 *   write   write every block, fdatasync, drop the cached copy, re-read, check
 *   verify  only re-read and check (a second boot after "write", same SEED)
 *   random  WRITES writes of 1..16 blocks at random places (seeded), each with
 *           its own generation number; fdatasync, drop the cache, re-read the
 *           region and check every block written (the newest generation must
 *           be there, with a good checksum)
 *   random-verify
 *           replay the plan of "random" with the same MIB, SEED and WRITES
 *           without writing, and check every block it wrote (a second boot
 *           after "random"; same sum as that run)
 * -r MBPS paces the writes of write and random to MBPS MiB/s: a write is
 * issued no earlier than start + (bytes written before it) / rate (absolute
 * sleeps, no drift), so a run lasts long enough to be paused or snapshotted
 * in the middle. Without it the writes go as fast as the device takes them.
 * O_DIRECT is used when the path allows it (direct=1), else buffered I/O with
 * posix_fadvise(DONTNEED) (and BLKFLSBUF on a block device) before re-reading.
 *
 * Block layout (64-bit little-endian words): [0] "KEELDISK" magic, [1] block
 * index, [2] seed, [3] generation (0 for write, the write's number for
 * random), [4..510] pattern, [511] FNV-1a 64 of bytes 0..4087. sum= is a hash
 * of the checked blocks' [511] words in block order: write and verify (random
 * and random-verify) with the same arguments print the same sum.
 *
 * Lines: "disk start mode=<m> path=<p> mib=<n> seed=<n> [writes=<n>]
 * rate_mbps=<n>" once the path is open and sized, before any I/O (rate_mbps:
 * -r's value, 0 without it), up to 8 "disk bad block=<n> reason=<magic|
 * checksum|misplaced|seed|stale|data|short>", then "disk OK mode=<m> path=<p>
 * mib=<n> seed=<n> direct=<0|1> checked=<blocks> [writes=<n>] sum=0x<hex>
 * [write_ms=<n>] read_ms=<n>" or "disk BAD mode=<m> path=<p> bad_blocks=<n>
 * first_bad=<n>". */
#include "keel-guest.h" /* first: it defines _GNU_SOURCE */

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#define BLK 4096u
#define WORDS (BLK / sizeof(uint64_t))
#define IO_BLOCKS 256u /* 1 MiB per request in write/verify */
#define MAGIC 0x4b45454c4449534bull
#define MAX_RUN 16u

static const char prog[] = "keel-diskcheck";

struct disk {
	const char *path;
	int fd;
	bool direct;
	bool is_blk;
	int flags; /* without O_DIRECT */
};

static uint64_t fnv(const void *p, size_t n)
{
	const unsigned char *b = p;
	uint64_t h = 0xcbf29ce484222325ull;
	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * 0x100000001b3ull;
	return h;
}

static void fill_block(uint64_t *w, uint64_t blk, uint64_t seed, uint64_t gen)
{
	w[0] = MAGIC;
	w[1] = blk;
	w[2] = seed;
	w[3] = gen;
	const uint64_t base = kg_mix(seed ^ (blk << 20) ^ (gen * 0xd1b54a32d192ed03ull));
	for (unsigned i = 4; i < WORDS - 1; i++)
		w[i] = base + i;
	w[WORDS - 1] = fnv(w, BLK - sizeof(uint64_t));
}

/* NULL if the block is what (blk, seed, gen) writes, else why not. */
static const char *check_block(const uint64_t *w, uint64_t blk, uint64_t seed, uint64_t gen)
{
	static uint64_t want[WORDS];
	if (w[0] != MAGIC)
		return "magic";
	if (w[WORDS - 1] != fnv(w, BLK - sizeof(uint64_t)))
		return "checksum";
	if (w[1] != blk)
		return "misplaced";
	if (w[2] != seed)
		return "seed";
	if (w[3] != gen)
		return "stale";
	fill_block(want, blk, seed, gen);
	if (memcmp(w, want, BLK) != 0)
		return "data";
	return NULL;
}

static void disk_open(struct disk *d, int flags)
{
	d->flags = flags;
	d->direct = true;
	d->fd = open(d->path, flags | O_DIRECT | O_CLOEXEC, 0644);
	if (d->fd < 0 && errno == EINVAL) {
		d->direct = false;
		d->fd = open(d->path, flags | O_CLOEXEC, 0644);
	}
	if (d->fd < 0)
		kg_fail(prog, "open %s: %s", d->path, strerror(errno));
	struct stat st;
	if (fstat(d->fd, &st) != 0)
		kg_fail(prog, "fstat %s: %s", d->path, strerror(errno));
	d->is_blk = S_ISBLK(st.st_mode);
}

/* Some filesystems accept O_DIRECT at open and refuse it at the first I/O. */
static void disk_drop_direct(struct disk *d)
{
	close(d->fd);
	d->direct = false;
	d->fd = open(d->path, d->flags | O_CLOEXEC, 0644);
	if (d->fd < 0)
		kg_fail(prog, "reopen %s: %s", d->path, strerror(errno));
}

static void pwrite_all(struct disk *d, const void *buf, size_t n, uint64_t off)
{
	size_t done = 0;
	while (done < n) {
		ssize_t r = pwrite(d->fd, (const char *)buf + done, n - done, (off_t)(off + done));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && errno == EINVAL && d->direct) {
			disk_drop_direct(d);
			continue;
		}
		if (r <= 0)
			kg_fail(prog, "write %s offset=%llu: %s", d->path,
				(unsigned long long)(off + done), r < 0 ? strerror(errno) : "short");
		done += (size_t)r;
	}
}

/* Returns the bytes read (less than n only at end of file). */
static size_t pread_all(struct disk *d, void *buf, size_t n, uint64_t off)
{
	size_t done = 0;
	while (done < n) {
		ssize_t r = pread(d->fd, (char *)buf + done, n - done, (off_t)(off + done));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && errno == EINVAL && d->direct) {
			disk_drop_direct(d);
			continue;
		}
		if (r < 0)
			kg_fail(prog, "read %s offset=%llu: %s", d->path,
				(unsigned long long)(off + done), strerror(errno));
		if (r == 0)
			break;
		done += (size_t)r;
	}
	return done;
}

/* After fdatasync: make sure the re-read comes from the device. */
static void disk_sync_and_reopen(struct disk *d)
{
	if (fdatasync(d->fd) != 0)
		kg_fail(prog, "fdatasync %s: %s", d->path, strerror(errno));
	if (!d->direct) {
		(void)posix_fadvise(d->fd, 0, 0, POSIX_FADV_DONTNEED);
		if (d->is_blk)
			(void)ioctl(d->fd, BLKFLSBUF, 0);
	}
	bool was_direct = d->direct;
	close(d->fd);
	disk_open(d, O_RDONLY);
	if (!was_direct && d->direct) /* keep one mode per run */
		disk_drop_direct(d);
}

static uint64_t region_bytes(struct disk *d, uint64_t mib, bool creating)
{
	uint64_t size = 0;
	if (d->is_blk) {
		if (ioctl(d->fd, BLKGETSIZE64, &size) != 0)
			kg_fail(prog, "BLKGETSIZE64 %s: %s", d->path, strerror(errno));
	} else {
		struct stat st;
		if (fstat(d->fd, &st) != 0)
			kg_fail(prog, "fstat %s: %s", d->path, strerror(errno));
		size = (uint64_t)st.st_size;
	}
	uint64_t want = mib ? mib * 1048576u : size / BLK * BLK;
	if (want == 0)
		kg_fail(prog, "%s is empty and no MIB was given", d->path);
	if (want > size && (d->is_blk || !creating))
		kg_fail(prog, "%s has %llu bytes, fewer than %llu MiB", d->path,
			(unsigned long long)size, (unsigned long long)mib);
	/* A file that random mode only partly writes still gets its full size,
	 * so that a later random-verify finds the region. */
	if (want > size && ftruncate(d->fd, (off_t)want) != 0)
		kg_fail(prog, "ftruncate %s: %s", d->path, strerror(errno));
	return want;
}

struct result {
	uint64_t checked, bad, first_bad, sum;
};

static void note_block(struct result *res, const uint64_t *w, uint64_t blk, const char *why)
{
	res->checked++;
	res->sum = kg_mix(res->sum ^ w[WORDS - 1]);
	if (why) {
		if (res->bad < 8)
			kg_line("disk bad block=%llu reason=%s", (unsigned long long)blk, why);
		if (res->bad++ == 0)
			res->first_bad = blk;
	}
}

/* Read the region back; gens == NULL: every block has generation 0; else
 * only blocks with gens[b] != 0 are checked. */
static void read_back(struct disk *d, uint64_t *buf, uint64_t blocks, uint64_t seed,
		      const uint32_t *gens, struct result *res)
{
	for (uint64_t b = 0; b < blocks; b += IO_BLOCKS) {
		uint64_t n = blocks - b < IO_BLOCKS ? blocks - b : IO_BLOCKS;
		size_t got = pread_all(d, buf, (size_t)(n * BLK), b * BLK) / BLK;
		for (uint64_t i = 0; i < n; i++) {
			uint64_t blk = b + i;
			if (gens && gens[blk] == 0)
				continue;
			const uint64_t *w = buf + i * WORDS;
			const char *why = i < got ? check_block(w, blk, seed, gens ? gens[blk] : 0) : "short";
			note_block(res, w, blk, why);
		}
	}
}

int main(int argc, char **argv)
{
	uint64_t mib, seed = 1, writes = 0, rate_mbps = 0;
	if (argc > 1 && strcmp(argv[1], "-r") == 0) {
		if (argc < 3 || !kg_parse_u64(argv[2], &rate_mbps) || rate_mbps == 0 ||
		    rate_mbps > (1ull << 30))
			kg_fail(prog, "-r needs a rate in MiB/s (1..%llu)",
				(unsigned long long)(1ull << 30));
		argc -= 2;
		argv += 2;
	}
	if (argc < 4 || argc > 6 || !kg_parse_u64(argv[3], &mib) || mib > (1ull << 30) ||
	    (argc > 4 && !kg_parse_u64(argv[4], &seed)) ||
	    (argc > 5 && !kg_parse_u64(argv[5], &writes)))
		kg_fail(prog, "usage: keel-diskcheck [-r MBPS] write|verify|random|random-verify PATH "
			      "MIB(0=all) [SEED [WRITES]]");
	const char *mode = argv[1];
	bool m_write = strcmp(mode, "write") == 0, m_verify = strcmp(mode, "verify") == 0,
	     m_random = strcmp(mode, "random") == 0,
	     m_random_verify = strcmp(mode, "random-verify") == 0;
	if (!m_write && !m_verify && !m_random && !m_random_verify)
		kg_fail(prog, "unknown mode '%s' (write, verify, random, random-verify)", mode);
	if (argc > 5 && !m_random && !m_random_verify)
		kg_fail(prog, "WRITES is for modes random and random-verify only");
	const bool writing = m_write || m_random;

	struct disk d = {.path = argv[2]};
	disk_open(&d, writing ? O_RDWR | O_CREAT : O_RDONLY);
	const uint64_t bytes = region_bytes(&d, mib, writing);
	const uint64_t blocks = bytes / BLK;
	uint64_t *buf = NULL;
	if (posix_memalign((void **)&buf, BLK, (size_t)IO_BLOCKS * BLK) != 0)
		kg_fail(prog, "out of memory");

	char extra[64] = "";
	if (m_random || m_random_verify) {
		if (writes == 0)
			writes = blocks / 8 ? blocks / 8 : 1;
		if (writes > UINT32_MAX)
			kg_fail(prog, "too many writes");
		snprintf(extra, sizeof(extra), " writes=%llu", (unsigned long long)writes);
	}
	kg_line("disk start mode=%s path=%s mib=%llu seed=%llu%s rate_mbps=%llu", mode, d.path,
		(unsigned long long)(bytes / 1048576u), (unsigned long long)seed, extra,
		(unsigned long long)rate_mbps);

	struct result res = {0};
	uint64_t write_ms = 0, t0 = kg_now_ns();
	struct kg_pace pace = {.rate_mbps = rate_mbps, .start_ns = t0};
	uint32_t *gens = NULL;
	if (m_write) {
		for (uint64_t b = 0; b < blocks; b += IO_BLOCKS) {
			uint64_t n = blocks - b < IO_BLOCKS ? blocks - b : IO_BLOCKS;
			for (uint64_t i = 0; i < n; i++)
				fill_block(buf + i * WORDS, b + i, seed, 0);
			kg_pace_write(&pace, n * BLK);
			pwrite_all(&d, buf, (size_t)(n * BLK), b * BLK);
		}
	} else if (m_random || m_random_verify) {
		gens = calloc((size_t)blocks, sizeof(*gens));
		if (!gens)
			kg_fail(prog, "out of memory");
		/* The plan depends only on (blocks, seed, writes): random-verify
		 * replays it to know which generation each block must hold. */
		uint64_t rng = seed;
		for (uint64_t w = 1; w <= writes; w++) {
			rng = kg_mix(rng);
			uint64_t blk = rng % blocks;
			uint64_t n = 1 + (rng >> 40) % MAX_RUN;
			if (n > blocks - blk)
				n = blocks - blk;
			for (uint64_t i = 0; i < n; i++) {
				gens[blk + i] = (uint32_t)w;
				if (m_random)
					fill_block(buf + i * WORDS, blk + i, seed, w);
			}
			if (m_random) {
				kg_pace_write(&pace, n * BLK);
				pwrite_all(&d, buf, (size_t)(n * BLK), blk * BLK);
			}
		}
	}
	if (writing) {
		disk_sync_and_reopen(&d);
		write_ms = (kg_now_ns() - t0) / 1000000u;
	}

	t0 = kg_now_ns();
	read_back(&d, buf, blocks, seed, gens, &res);
	uint64_t read_ms = (kg_now_ns() - t0) / 1000000u;
	close(d.fd);

	if (res.bad) {
		kg_line("disk BAD mode=%s path=%s bad_blocks=%llu first_bad=%llu", mode, d.path,
			(unsigned long long)res.bad, (unsigned long long)res.first_bad);
		return KG_EXIT_BAD;
	}
	char wms[48] = "";
	if (writing)
		snprintf(wms, sizeof(wms), " write_ms=%llu", (unsigned long long)write_ms);
	kg_line("disk OK mode=%s path=%s mib=%llu seed=%llu direct=%d checked=%llu%s sum=0x%llx%s "
		"read_ms=%llu",
		mode, d.path, (unsigned long long)(bytes / 1048576u), (unsigned long long)seed,
		d.direct ? 1 : 0, (unsigned long long)res.checked, extra, (unsigned long long)res.sum,
		wms, (unsigned long long)read_ms);
	return KG_EXIT_OK;
}
