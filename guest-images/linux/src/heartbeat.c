/* keel-heartbeat INTERVAL_MS COUNT
 *
 * Prints "keel-guest: beat seq=<n> t_us=<CLOCK_MONOTONIC us>" on a fixed grid
 * of INTERVAL_MS (absolute clock_nanosleep, so no drift). seq counts from 1;
 * beat 1 is printed at once. A pause of the guest shows as a gap in t_us; a
 * beat that comes more than one interval late restarts the grid from now (no
 * burst of catch-up beats). COUNT 0 = forever. */
#include "keel-guest.h"

int main(int argc, char **argv)
{
	static const char prog[] = "keel-heartbeat";
	uint64_t interval_ms, count;
	if (argc != 3 || !kg_parse_u64(argv[1], &interval_ms) || !kg_parse_u64(argv[2], &count) ||
	    interval_ms == 0 || interval_ms > 86400000ull)
		kg_fail(prog, "usage: keel-heartbeat INTERVAL_MS(1..86400000) COUNT(0=forever)");

	const uint64_t interval_ns = interval_ms * 1000000ull;
	uint64_t next = kg_now_ns();
	for (uint64_t seq = 1; count == 0 || seq <= count; seq++) {
		if (seq > 1) {
			next += interval_ns;
			kg_sleep_until(next);
		}
		uint64_t now = kg_now_ns();
		kg_line("beat seq=%llu t_us=%llu", (unsigned long long)seq,
			(unsigned long long)(now / 1000));
		if (now > next + interval_ns)
			next = now; /* late by more than one interval: new grid from now */
	}
	return KG_EXIT_OK;
}
