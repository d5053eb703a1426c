/* keel-net [-w WAIT_S] [-r MBPS] send ADDR:PORT|:PORT MIB [SEED]
 * keel-net [-w WAIT_S] recv ADDR:PORT|:PORT [MIB SEED]
 *
 * One TCP transfer, for the network tests; it runs in the guest and, as the
 * peer, on the host. ADDR:PORT (IPv4) connects, retrying refused or
 * unreachable attempts until WAIT_S seconds have passed; :PORT listens on
 * every address and takes one connection, waiting at most WAIT_S seconds.
 * WAIT_S defaults to 30; 0 waits for ever.
 *
 *   send  writes MIB MiB of the pattern of SEED (default 1), shuts its side
 *         down and waits for the peer to close (so the peer has read it all);
 *         with -r, no faster than MBPS MiB/s (a connection that lasts, e.g.
 *         across a live migration)
 *   recv  reads until the peer shuts its side down, then closes; with MIB and
 *         SEED, the data must be exactly that pattern
 *
 * Pattern: 64-bit little-endian words, word i = splitmix64((SEED << 40) ^ i).
 * sum= is over the whole stream: h = 0xcbf29ce484222325, then for each 64-bit
 * little-endian word w (a last partial word padded with zero bytes)
 * h = (h ^ w) * 0x100000001b3; sender and receiver print the same sum.
 *
 * Lines: "net send OK peer=<a.b.c.d:port> bytes=<n> sum=0x<hex> ms=<n>
 * mbps=<n>", "net recv OK ..." (the same fields), or "net recv BAD
 * peer=<a.b.c.d:port> bytes=<n> want_bytes=<n> first_bad=<byte offset>".
 * ms: from the connection being up to the peer's close (send) or end of data
 * (recv); mbps: MiB per second, rounded down. */
#include "keel-guest.h" /* first: it defines _GNU_SOURCE */

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#define CHUNK (256u * 1024u)

static const char prog[] = "keel-net";

static uint64_t pattern_word(uint64_t seed, uint64_t i)
{
	return kg_mix((seed << 40) ^ i);
}

/* The stream checksum, fed in pieces of any size. */
struct sum {
	uint64_t h;
	uint64_t bytes;
	unsigned char tail[8];
	unsigned tail_len;
};

static uint64_t le64(const unsigned char *b)
{
	uint64_t w = 0;
	for (int i = 7; i >= 0; i--)
		w = (w << 8) | b[i];
	return w;
}

static void sum_word(struct sum *s, uint64_t w)
{
	s->h = (s->h ^ w) * 0x100000001b3ull;
}

static void sum_feed(struct sum *s, const unsigned char *p, size_t n)
{
	s->bytes += n;
	while (n > 0 && s->tail_len > 0) {
		s->tail[s->tail_len++] = *p++;
		n--;
		if (s->tail_len == 8) {
			sum_word(s, le64(s->tail));
			s->tail_len = 0;
		}
	}
	for (; n >= 8; p += 8, n -= 8)
		sum_word(s, le64(p));
	for (; n > 0; n--)
		s->tail[s->tail_len++] = *p++;
}

static uint64_t sum_final(struct sum *s)
{
	if (s->tail_len) {
		memset(s->tail + s->tail_len, 0, 8 - s->tail_len);
		sum_word(s, le64(s->tail));
		s->tail_len = 0;
	}
	return s->h;
}

static void fill(unsigned char *buf, size_t n, uint64_t seed, uint64_t first_word)
{
	for (size_t i = 0; i < n / 8; i++) {
		uint64_t w = pattern_word(seed, first_word + i);
		for (int b = 0; b < 8; b++)
			buf[i * 8 + b] = (unsigned char)(w >> (8 * b));
	}
}

static int set_deadline_ms(uint64_t wait_s, uint64_t start_ns)
{
	if (wait_s == 0)
		return -1;
	uint64_t end = start_ns + wait_s * 1000000000ull, now = kg_now_ns();
	return now >= end ? 0 : (int)((end - now) / 1000000u) + 1;
}

static int open_connected(const struct sockaddr_in *addr, uint64_t wait_s)
{
	const uint64_t start = kg_now_ns();
	for (;;) {
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0)
			kg_fail(prog, "socket: %s", strerror(errno));
		if (connect(fd, (const struct sockaddr *)addr, sizeof(*addr)) == 0)
			return fd;
		int err = errno;
		close(fd);
		bool retry = err == ECONNREFUSED || err == ENETUNREACH || err == EHOSTUNREACH ||
			     err == ETIMEDOUT || err == EINTR;
		if (!retry || set_deadline_ms(wait_s, start) == 0)
			kg_fail(prog, "connect %s:%u: %s", inet_ntoa(addr->sin_addr),
				ntohs(addr->sin_port), strerror(err));
		kg_sleep_until(kg_now_ns() + 100000000ull);
	}
}

static int open_accepted(const struct sockaddr_in *addr, uint64_t wait_s, struct sockaddr_in *peer)
{
	int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (ls < 0)
		kg_fail(prog, "socket: %s", strerror(errno));
	int one = 1;
	(void)setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(ls, (const struct sockaddr *)addr, sizeof(*addr)) != 0)
		kg_fail(prog, "bind :%u: %s", ntohs(addr->sin_port), strerror(errno));
	if (listen(ls, 1) != 0)
		kg_fail(prog, "listen: %s", strerror(errno));
	const uint64_t start = kg_now_ns();
	struct pollfd pfd = {.fd = ls, .events = POLLIN};
	for (;;) {
		int r = poll(&pfd, 1, set_deadline_ms(wait_s, start));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			kg_fail(prog, "poll: %s", strerror(errno));
		if (r == 0)
			kg_fail(prog, "no connection on :%u within %llu s", ntohs(addr->sin_port),
				(unsigned long long)wait_s);
		break;
	}
	socklen_t len = sizeof(*peer);
	int fd = accept4(ls, (struct sockaddr *)peer, &len, SOCK_CLOEXEC);
	if (fd < 0)
		kg_fail(prog, "accept: %s", strerror(errno));
	close(ls);
	return fd;
}

static void parse_endpoint(const char *s, struct sockaddr_in *addr, bool *listening)
{
	const char *colon = strrchr(s, ':');
	uint64_t port;
	if (!colon || !kg_parse_u64(colon + 1, &port) || port == 0 || port > 65535)
		kg_fail(prog, "bad endpoint '%s' (ADDR:PORT or :PORT)", s);
	memset(addr, 0, sizeof(*addr));
	addr->sin_family = AF_INET;
	addr->sin_port = htons((uint16_t)port);
	*listening = colon == s;
	if (*listening) {
		addr->sin_addr.s_addr = htonl(INADDR_ANY);
		return;
	}
	char host[64];
	size_t n = (size_t)(colon - s);
	if (n >= sizeof(host))
		kg_fail(prog, "bad address in '%s'", s);
	memcpy(host, s, n);
	host[n] = '\0';
	if (inet_pton(AF_INET, host, &addr->sin_addr) != 1)
		kg_fail(prog, "bad IPv4 address '%s'", host);
}

static void report(const char *dir, const struct sockaddr_in *peer, struct sum *s, uint64_t ns)
{
	uint64_t ms = ns / 1000000u;
	uint64_t mbps = ns ? (uint64_t)((double)s->bytes * 1e9 / (double)ns / 1048576.0) : 0;
	uint64_t bytes = s->bytes;
	kg_line("net %s OK peer=%s:%u bytes=%llu sum=0x%llx ms=%llu mbps=%llu", dir,
		inet_ntoa(peer->sin_addr), ntohs(peer->sin_port), (unsigned long long)bytes,
		(unsigned long long)sum_final(s), (unsigned long long)ms, (unsigned long long)mbps);
}

static void write_all(int fd, const unsigned char *p, size_t n)
{
	while (n > 0) {
		ssize_t r = write(fd, p, n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			kg_fail(prog, "send: %s", r < 0 ? strerror(errno) : "short write");
		p += r;
		n -= (size_t)r;
	}
}

static int do_send(int fd, const struct sockaddr_in *peer, uint64_t mib, uint64_t seed,
		   uint64_t rate_mbps, unsigned char *buf)
{
	struct sum s = {.h = 0xcbf29ce484222325ull};
	const uint64_t total = mib * 1048576u, t0 = kg_now_ns();
	struct kg_pace pace = {.rate_mbps = rate_mbps, .start_ns = t0};
	for (uint64_t off = 0; off < total; off += CHUNK) {
		size_t n = total - off < CHUNK ? (size_t)(total - off) : CHUNK;
		kg_pace_write(&pace, n);
		fill(buf, n, seed, off / 8);
		sum_feed(&s, buf, n);
		write_all(fd, buf, n);
	}
	if (shutdown(fd, SHUT_WR) != 0)
		kg_fail(prog, "shutdown: %s", strerror(errno));
	/* The peer closes once it has read everything. */
	for (;;) {
		ssize_t r = read(fd, buf, CHUNK);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			kg_fail(prog, "waiting for the peer's close: %s", strerror(errno));
		if (r == 0)
			break;
		kg_fail(prog, "the peer sent data to a sender");
	}
	report("send", peer, &s, kg_now_ns() - t0);
	return KG_EXIT_OK;
}

static int do_recv(int fd, const struct sockaddr_in *peer, bool check, uint64_t mib, uint64_t seed,
		   unsigned char *buf, unsigned char *want)
{
	struct sum s = {.h = 0xcbf29ce484222325ull};
	const uint64_t want_bytes = mib * 1048576u, t0 = kg_now_ns();
	uint64_t first_bad = UINT64_MAX;
	for (;;) {
		ssize_t r = read(fd, buf, CHUNK);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			kg_fail(prog, "recv: %s", strerror(errno));
		if (r == 0)
			break;
		if (check && first_bad == UINT64_MAX) {
			/* Compare against the pattern, which is word-aligned. */
			uint64_t off = s.bytes, w0 = off / 8;
			size_t skip = (size_t)(off % 8), span = skip + (size_t)r;
			fill(want, (span + 7) / 8 * 8, seed, w0);
			for (size_t i = 0; i < (size_t)r; i++) {
				if (off + i >= want_bytes || buf[i] != want[skip + i]) {
					first_bad = off + i;
					break;
				}
			}
		}
		sum_feed(&s, buf, (size_t)r);
	}
	uint64_t ns = kg_now_ns() - t0;
	close(fd);
	if (check && (first_bad != UINT64_MAX || s.bytes != want_bytes)) {
		if (first_bad == UINT64_MAX)
			first_bad = s.bytes;
		kg_line("net recv BAD peer=%s:%u bytes=%llu want_bytes=%llu first_bad=%llu",
			inet_ntoa(peer->sin_addr), ntohs(peer->sin_port), (unsigned long long)s.bytes,
			(unsigned long long)want_bytes, (unsigned long long)first_bad);
		return KG_EXIT_BAD;
	}
	report("recv", peer, &s, ns);
	return KG_EXIT_OK;
}

static void usage(void)
{
	kg_fail(prog, "usage: keel-net [-w WAIT_S] [-r MBPS] send ADDR:PORT|:PORT MIB [SEED] | "
		      "recv ADDR:PORT|:PORT [MIB SEED]");
}

int main(int argc, char **argv)
{
	uint64_t wait_s = 30, mib = 0, seed = 1, rate_mbps = 0;
	int a = 1;
	while (argc - a > 2 && (strcmp(argv[a], "-w") == 0 || strcmp(argv[a], "-r") == 0)) {
		const bool rate = argv[a][1] == 'r';
		if (!kg_parse_u64(argv[a + 1], rate ? &rate_mbps : &wait_s) ||
		    (rate && (rate_mbps == 0 || rate_mbps > (1ull << 30))))
			usage();
		a += 2;
	}
	if (argc - a < 2)
		usage();
	const char *mode = argv[a];
	bool sending = strcmp(mode, "send") == 0;
	if (!sending && strcmp(mode, "recv") != 0)
		usage();
	int rest = argc - a - 2;
	char **args = argv + a + 2;
	bool check = false;
	if (sending) {
		if (rest < 1 || rest > 2 || !kg_parse_u64(args[0], &mib) ||
		    (rest == 2 && !kg_parse_u64(args[1], &seed)))
			usage();
	} else {
		if ((rest != 0 && rest != 2) ||
		    (rest == 2 && (!kg_parse_u64(args[0], &mib) || !kg_parse_u64(args[1], &seed))))
			usage();
		check = rest == 2;
	}
	if (mib > (1ull << 20) || seed >= (1ull << 24))
		kg_fail(prog, "MIB at most 1048576, SEED below 16777216");
	signal(SIGPIPE, SIG_IGN);

	struct sockaddr_in addr, peer;
	bool listening;
	parse_endpoint(argv[a + 1], &addr, &listening);
	int fd;
	if (listening) {
		fd = open_accepted(&addr, wait_s, &peer);
	} else {
		fd = open_connected(&addr, wait_s);
		peer = addr;
	}
	static unsigned char buf[CHUNK], want[CHUNK + 16];
	return sending ? do_send(fd, &peer, mib, seed, rate_mbps, buf)
		       : do_recv(fd, &peer, check, mib, seed, buf, want);
}
