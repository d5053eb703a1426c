/* keel-ledger PORT DISK
 *
 * The workload of the HA trials: a TCP service whose every answer promises
 * that something is on the disk. It listens on every address at PORT and
 * serves one connection at a time (a closed one is followed by the next).
 * Each request is a line "rec N" (N decimal); the program writes record N
 * to DISK with O_DIRECT, flushes the device (fdatasync: a virtio-blk FLUSH),
 * and only then answers "ack N boot=<16 hex digits>". boot= is drawn once
 * per run of the program, so a client sees a guest that rebooted.
 *
 * Record N takes 512-byte sector N mod (the disk's sectors), little-endian:
 *   0   "KEELLEDG"
 *   8   N
 *   16  boot
 *   24  60 words: word i = splitmix64((N << 8) ^ i)
 *   504 FNV-1a 64 over the 63 words before it (h = 0xcbf29ce484222325,
 *       h = (h ^ w) * 0x100000001b3 per word)
 * so a host reading the disk afterwards can tell, for every acknowledged N,
 * whether its record (or a later lap's over it) is there whole.
 *
 * Lines: "ledger listening port=P disk=D records=R boot=B", "ledger client
 * a.b.c.d:p", "ledger client gone acked=<count this connection>"; a bad
 * request ends its connection with "ledger bad request ..." (the client is
 * the test: it never sends one). */
#include "keel-guest.h" /* first: it defines _GNU_SOURCE */

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define SECTOR 512u
#define LINE_MAX_BYTES 64u

static const char prog[] = "keel-ledger";

static uint64_t fnv_words(const unsigned char* p, size_t words) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < words; i++) {
    uint64_t w;
    memcpy(&w, p + 8 * i, 8); /* x86: little-endian */
    h = (h ^ w) * 0x100000001b3ull;
  }
  return h;
}

static void fill_record(unsigned char* rec, uint64_t seq, uint64_t boot) {
  memcpy(rec, "KEELLEDG", 8);
  memcpy(rec + 8, &seq, 8);
  memcpy(rec + 16, &boot, 8);
  for (uint64_t i = 0; i < 60; i++) {
    uint64_t w = kg_mix((seq << 8) ^ i);
    memcpy(rec + 24 + 8 * i, &w, 8);
  }
  uint64_t sum = fnv_words(rec, 63);
  memcpy(rec + 504, &sum, 8);
}

static uint64_t draw_boot_id(void) {
  struct timespec real, mono;
  clock_gettime(CLOCK_REALTIME, &real);
  clock_gettime(CLOCK_MONOTONIC, &mono);
  uint64_t id = kg_mix(kg_ts_ns(&real) ^ (kg_ts_ns(&mono) << 17) ^ (uint64_t)getpid());
  int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    uint64_t r = 0;
    if (read(fd, &r, sizeof r) == (ssize_t)sizeof r) id ^= r;
    close(fd);
  }
  return id;
}

static int listen_on(uint16_t port) {
  int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (ls < 0) kg_fail(prog, "socket: %s", strerror(errno));
  int one = 1;
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
  if (bind(ls, (const struct sockaddr*)&addr, sizeof addr) != 0)
    kg_fail(prog, "bind :%u: %s", port, strerror(errno));
  if (listen(ls, 4) != 0) kg_fail(prog, "listen: %s", strerror(errno));
  return ls;
}

static bool send_all(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= (size_t)w;
  }
  return true;
}

struct ledger {
  int disk;
  uint64_t records;
  uint64_t boot;
  unsigned char* rec; /* one sector, aligned for O_DIRECT */
};

static void write_record(struct ledger* l, uint64_t seq) {
  fill_record(l->rec, seq, l->boot);
  off_t at = (off_t)((seq % l->records) * SECTOR);
  ssize_t w;
  do {
    w = pwrite(l->disk, l->rec, SECTOR, at);
  } while (w < 0 && errno == EINTR);
  if (w != (ssize_t)SECTOR)
    kg_fail(prog, "write of record %llu: %s", (unsigned long long)seq,
            w < 0 ? strerror(errno) : "short write");
  if (fdatasync(l->disk) != 0)
    kg_fail(prog, "flush after record %llu: %s", (unsigned long long)seq, strerror(errno));
}

/* One connection: requests until the peer closes or sends something bad. */
static void serve(struct ledger* l, int fd) {
  char line[LINE_MAX_BYTES];
  size_t have = 0;
  uint64_t acked = 0;
  for (;;) {
    char* nl = memchr(line, '\n', have);
    if (nl == NULL) {
      if (have == sizeof line) {
        kg_line("ledger bad request: no newline in %u bytes", LINE_MAX_BYTES);
        break;
      }
      ssize_t r = recv(fd, line + have, sizeof line - have, 0);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) break;
      have += (size_t)r;
      continue;
    }
    *nl = '\0';
    uint64_t seq;
    if (strncmp(line, "rec ", 4) != 0 || !kg_parse_u64(line + 4, &seq)) {
      kg_line("ledger bad request: '%.40s'", line);
      break;
    }
    write_record(l, seq);
    char answer[64];
    int n = snprintf(answer, sizeof answer, "ack %llu boot=%016llx\n", (unsigned long long)seq,
                     (unsigned long long)l->boot);
    if (!send_all(fd, answer, (size_t)n)) break;
    acked++;
    size_t used = (size_t)(nl + 1 - line);
    memmove(line, nl + 1, have - used);
    have -= used;
  }
  kg_line("ledger client gone acked=%llu", (unsigned long long)acked);
}

int main(int argc, char** argv) {
  uint64_t port;
  if (argc != 3 || !kg_parse_u64(argv[1], &port) || port == 0 || port > 65535)
    kg_fail(prog, "usage: keel-ledger PORT DISK");
  struct ledger l = {.boot = draw_boot_id()};
  l.disk = open(argv[2], O_RDWR | O_DIRECT | O_CLOEXEC);
  if (l.disk < 0) kg_fail(prog, "open %s: %s", argv[2], strerror(errno));
  uint64_t bytes = 0;
  struct stat st;
  if (fstat(l.disk, &st) != 0) kg_fail(prog, "stat %s: %s", argv[2], strerror(errno));
  if (S_ISBLK(st.st_mode)) {
    if (ioctl(l.disk, BLKGETSIZE64, &bytes) != 0)
      kg_fail(prog, "size of %s: %s", argv[2], strerror(errno));
  } else {
    bytes = (uint64_t)st.st_size;
  }
  l.records = bytes / SECTOR;
  if (l.records == 0) kg_fail(prog, "%s holds no whole sector", argv[2]);
  if (posix_memalign((void**)&l.rec, 4096, SECTOR) != 0) kg_fail(prog, "out of memory");
  int ls = listen_on((uint16_t)port);
  kg_line("ledger listening port=%llu disk=%s records=%llu boot=%016llx",
          (unsigned long long)port, argv[2], (unsigned long long)l.records,
          (unsigned long long)l.boot);
  for (;;) {
    struct sockaddr_in peer;
    socklen_t len = sizeof peer;
    int fd = accept4(ls, (struct sockaddr*)&peer, &len, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      kg_fail(prog, "accept: %s", strerror(errno));
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char ip[INET_ADDRSTRLEN] = "?";
    inet_ntop(AF_INET, &peer.sin_addr, ip, sizeof ip);
    kg_line("ledger client %s:%u", ip, ntohs(peer.sin_port));
    serve(&l, fd);
    close(fd);
  }
}
