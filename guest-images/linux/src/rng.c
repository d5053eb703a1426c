/* keel-rng PATH BYTES [TIMEOUT_S]
 *
 * Reads BYTES bytes from PATH (the guest's /dev/hwrng: a hardware RNG such as
 * virtio-rng) and judges them: BAD when fewer came within TIMEOUT_S seconds
 * (default 30; the device blocks while it has nothing) or when they cannot
 * be random: at least 4096 bytes with fewer than 200 distinct byte values
 * (random data misses even one of the 256 with probability about 3e-5), or
 * at least 16 bytes all equal.
 *
 * Lines: "rng OK path=<p> bytes=<n> distinct=<n> ms=<n>" or
 * "rng BAD path=<p> bytes=<n> want_bytes=<n> distinct=<n> reason=<timeout|
 * eof|constant|few_values>". */
#include "keel-guest.h" /* first: it defines _GNU_SOURCE */

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

static const char prog[] = "keel-rng";

static void on_alarm(int sig)
{
	(void)sig; /* only there to interrupt read() */
}

int main(int argc, char **argv)
{
	uint64_t want, timeout_s = 30;
	if (argc < 3 || argc > 4 || !kg_parse_u64(argv[2], &want) || want == 0 ||
	    want > (1ull << 30) || (argc == 4 && (!kg_parse_u64(argv[3], &timeout_s) || timeout_s == 0)))
		kg_fail(prog, "usage: keel-rng PATH BYTES(1..2^30) [TIMEOUT_S]");
	const char *path = argv[1];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		kg_fail(prog, "open %s: %s", path, strerror(errno));

	/* No SA_RESTART: the alarm ends a read that blocks for good. */
	struct sigaction sa = {.sa_handler = on_alarm};
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGALRM, &sa, NULL) != 0)
		kg_fail(prog, "sigaction: %s", strerror(errno));
	alarm((unsigned)timeout_s);

	static unsigned char buf[65536];
	uint64_t got = 0, counts[256] = {0}, t0 = kg_now_ns();
	const char *reason = NULL;
	while (got < want) {
		size_t n = want - got < sizeof(buf) ? (size_t)(want - got) : sizeof(buf);
		ssize_t r = read(fd, buf, n);
		if (r < 0 && errno == EINTR) {
			reason = "timeout";
			break;
		}
		if (r < 0)
			kg_fail(prog, "read %s: %s", path, strerror(errno));
		if (r == 0) {
			reason = "eof";
			break;
		}
		for (ssize_t i = 0; i < r; i++)
			counts[buf[i]]++;
		got += (uint64_t)r;
	}
	alarm(0);
	uint64_t ms = (kg_now_ns() - t0) / 1000000u;
	close(fd);

	unsigned distinct = 0;
	for (int v = 0; v < 256; v++)
		distinct += counts[v] != 0;
	if (!reason && got >= 4096 && distinct < 200)
		reason = "few_values";
	if (!reason && got >= 16 && distinct == 1)
		reason = "constant";
	if (reason) {
		kg_line("rng BAD path=%s bytes=%llu want_bytes=%llu distinct=%u reason=%s", path,
			(unsigned long long)got, (unsigned long long)want, distinct, reason);
		return KG_EXIT_BAD;
	}
	kg_line("rng OK path=%s bytes=%llu distinct=%u ms=%llu", path, (unsigned long long)got,
		distinct, (unsigned long long)ms);
	return KG_EXIT_OK;
}
