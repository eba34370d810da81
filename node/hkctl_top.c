/*
 * hkctl top: a live per-node view, refreshed every --interval ms.
 *
 * Each refresh asks every node for its status (as hkctl status does) and
 * shows rates from the difference with the previous answer of the same
 * node.  On a terminal the screen is cleared before each block (ANSI
 * "home, erase display"); otherwise blocks follow one another, so a
 * script or a test can read them.  --count bounds the number of blocks;
 * Ctrl-C (SIGINT) or SIGTERM ends it cleanly between two blocks.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "hkctl.h"

#define INTERVAL_MIN_MS	 10
#define INTERVAL_MAX_MS	 3600000
#define INTERVAL_DFLT_MS 1000

static volatile sig_atomic_t top_stop; /* global: set by the signal handler */

static void on_signal(int sig)
{
	(void)sig;
	top_stop = 1;
}

/* Counters of the previous block, per target. */
struct top_prev {
	bool valid;
	uint64_t at_ns, remote_faults, invalidations;
};

static int parse_ms(const char *s, uint64_t *out)
{
	char *end;

	errno = 0;
	*out = strtoull(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-' || *out < INTERVAL_MIN_MS ||
	    *out > INTERVAL_MAX_MS)
		return -1;
	return 0;
}

static int parse_count(const char *s, uint64_t *out)
{
	char *end;

	errno = 0;
	*out = strtoull(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-' || *out > UINT32_MAX)
		return -1;
	return 0;
}

static void rate(char *buf, size_t len, const struct top_prev *p, uint64_t now_ns, uint64_t prev,
		 uint64_t cur)
{
	double dt;

	if (!p->valid || now_ns <= p->at_ns || cur < prev) {
		snprintf(buf, len, "-");
		return;
	}
	dt = (now_ns - p->at_ns) / 1e9;
	snprintf(buf, len, "%.1f", (cur - prev) / dt);
}

#define TOP_FMT "%-10s %-5s %-8s %10s %14s %14s %10s\n"

static void print_block(struct hkctl_node_status *t, struct top_prev *prev, unsigned n,
			unsigned down, uint64_t sample, uint64_t interval_ms, bool tty)
{
	uint64_t res = 0, migr = 0;
	char clock[16], f[4][32];
	time_t now = time(NULL);
	struct tm tm;

	localtime_r(&now, &tm);
	strftime(clock, sizeof(clock), "%H:%M:%S", &tm);
	if (tty)
		fputs("\033[H\033[2J", stdout);
	else if (sample > 1)
		putchar('\n');
	printf("hkctl top: %s, %u/%u nodes up, sample %" PRIu64 ", every %" PRIu64 " ms\n", clock,
	       n - down, n, sample, interval_ms);
	printf(TOP_FMT, "NODE", "STATE", "GUEST", "RESIDENT", "REMOTE-FLT/S", "INVAL/S",
	       "MIGRATIONS");
	for (unsigned i = 0; i < n; i++) {
		const Hk__Ctl__StatusReply *s;

		if (!t[i].rsp) {
			printf("%-10s %-5s %s\n", *t[i].name ? t[i].name : t[i].sock, "down",
			       t[i].err);
			prev[i].valid = false;
			continue;
		}
		s = t[i].rsp->status;
		snprintf(f[0], sizeof(f[0]), "%" PRIu64, s->resident_pages);
		rate(f[1], sizeof(f[1]), &prev[i], t[i].at_ns, prev[i].remote_faults,
		     s->remote_faults);
		rate(f[2], sizeof(f[2]), &prev[i], t[i].at_ns, prev[i].invalidations,
		     s->invalidations);
		snprintf(f[3], sizeof(f[3]), "%" PRIu64, s->vcpu_migrations);
		printf(
		    TOP_FMT, s->node, "up",
		    hkctl_state_name(s->guest ? s->guest->state : HK__CTL__GUEST_STATE__GUEST_NONE),
		    f[0], f[1], f[2], f[3]);
		res += s->resident_pages;
		migr += s->vcpu_migrations;
		prev[i] = (struct top_prev){.valid = true,
					    .at_ns = t[i].at_ns,
					    .remote_faults = s->remote_faults,
					    .invalidations = s->invalidations};
	}
	snprintf(f[0], sizeof(f[0]), "%" PRIu64, res);
	snprintf(f[3], sizeof(f[3]), "%" PRIu64, migr);
	printf(TOP_FMT, "total", "", "", f[0], "", "", f[3]);
	fflush(stdout);
}

/* Sleep ms unless a signal asks us to stop first. */
static void nap(uint64_t ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};

	while (!top_stop && nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

int hkctl_top(struct hkctl *c)
{
	static struct hkctl_node_status t[HK_MAX_NODES];
	static struct top_prev prev[HK_MAX_NODES];
	struct sigaction sa = {.sa_handler = on_signal}; /* no SA_RESTART: wake nanosleep */
	uint64_t interval = INTERVAL_DFLT_MS, count = 0, sample = 0;
	bool tty = isatty(STDOUT_FILENO);
	unsigned n, down = 0;

	if (c->json)
		return hkctl_usage_error("top: --json is not supported (use hkctl status --json)");
	if (c->val[OPT_INTERVAL] && parse_ms(c->val[OPT_INTERVAL], &interval))
		return hkctl_usage_error("--interval: bad value '%s' (milliseconds, %d to %d)",
					 c->val[OPT_INTERVAL], INTERVAL_MIN_MS, INTERVAL_MAX_MS);
	if (c->val[OPT_COUNT] && parse_count(c->val[OPT_COUNT], &count))
		return hkctl_usage_error("--count: bad value '%s' (blocks, 0 = until Ctrl-C)",
					 c->val[OPT_COUNT]);
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	n = hkctl_status_targets(c, t);
	while (!top_stop && (!count || sample < count)) {
		down = hkctl_status_query(t, n, HKCTL_NODE_TIMEOUT_S);
		if (top_stop)
			break; /* interrupted mid-query: do not print a half-made block */
		print_block(t, prev, n, down, ++sample, interval, tty);
		if (!count || sample < count)
			nap(interval);
	}
	hkctl_status_release(t, n);
	/* Like status: the last block had a node that did not answer. */
	if (down && !top_stop)
		return hkctl_die("%u of %u nodes did not answer", down, n);
	return 0;
}
