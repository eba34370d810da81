/*
 * P3 benchmark: remote 4 KiB page faults of pooled memory against their
 * floor, and page streaming against raw libfabric bandwidth, all measured
 * in one run between the same two processes over the same provider.
 *
 *   bench-pool [--provider P] [--pages N] [--upgrades N] [--fetches N]
 *              [--stream SIZE] [--threads T] [--rounds N] [--window W]
 *              [--timeout S] [--quick]
 *
 * Two nodes, two processes (fork): node A (index 0, the child) homes the
 * first half of a guest memory and first writes a pattern into the pages
 * used below, so every page B later reads carries data (READ -> DATA, not a
 * zero grant).  Node B (index 1, this process) then touches them from plain
 * threads, the way vCPUs would: no KVM is involved, guest memory is an
 * hk_mem mapping under userfaultfd, and the coherence messages travel
 * through hk_cluster_send (class HK_MSG_COH) over real libfabric.
 *
 *  1. latency: one read per page, each a remote fault, timed with
 *     clock_gettime; write faults on pages B holds shared (upgrade: no
 *     data) and on pages A owns (fetch: data, A's copy dropped);
 *  2. floor: (a) a local userfaultfd fault resolved from memory by a
 *     minimal handler (bench_pool_floor.c), (b) a raw hk_fabric 4 KiB round
 *     trip between the two processes (bench_pool_raw.c); floor = a + b;
 *  3. streaming: B reads a contiguous run of A's pages (1 thread, then
 *     --threads threads), against 4 KiB messages streamed A -> B by raw
 *     hk_fabric with --window sends in flight.
 * Output: human lines, then one JSON line.  Exit status 0 only when every
 * page B read carried the bytes A wrote.  Results: docs/benchmarks.md.
 *
 * The two processes also talk over a socketpair (phase control only: the
 * benchmark's own harness, not node-to-node traffic).  The child dies with
 * its parent (PR_SET_PDEATHSIG); --timeout (default 300 s) ends both.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench_pool.h"
#include "cluster.h"
#include "hyperkernel.h"
#include "node.h"

#define PAGE	     HK_PAGE_SIZE
#define WARM_PAGES   64 /* remote faults and round trips made before timing */
#define JOIN_MS	     20000
#define NODE_A	     0u
#define NODE_B	     1u
#define MAX_THREADS  16
#define PATTERN_MULT 0x9e3779b97f4a7c15ull

struct opts {
	const char *provider;
	unsigned pages, upgrades, fetches, threads, rounds, window, timeout_s;
	uint64_t stream;
	bool quick;
};

static struct opts opt = {
    .provider = HK_FABRIC_PROVIDER_DFLT,
    .pages = 20000,
    .upgrades = 5000,
    .fetches = 5000,
    .threads = 4,
    .rounds = 20000,
    .window = 64,
    .timeout_s = 300,
    .stream = 256ull << 20,
};

/* Frames of A's home used by each phase, in this order from frame 0. */
struct layout {
	uint64_t warm, lat, fetch, stream1, streamt, total;
	uint64_t stream_pages;
	uint64_t home; /* bytes homed on each node */
};

static struct layout lay;

/*
 * Timeline of each timed remote read, stamped by both processes into a
 * MAP_SHARED mapping made before the fork (CLOCK_MONOTONIC is one clock for
 * both).  Only one fault is in flight during that phase, so every stamp
 * taken while cur = k belongs to read k.  A stamp costs ~30 ns here.
 */
enum stage {
	ST_FAULT,      /* B: the reader touches the page */
	ST_REQ_SENT,   /* B: the engine hands READ to hk_cluster_send (fault thread) */
	ST_HOME_RECV,  /* A: the COH callback starts (progress thread) */
	ST_HOME_SENT,  /* A: the engine hands DATA to hk_cluster_send */
	ST_REPLY_RECV, /* B: the COH callback starts (progress thread) */
	ST_INSTALLED,  /* B: hk_mem_pool_deliver returned (UFFDIO_COPY done) */
	ST_RESUMED,    /* B: the reader's load returned */
	ST_N
};

static const char *const stage_what[ST_N - 1] = {
    "B: uffd event -> fault thread -> engine -> hk_cluster_send",
    "B posts READ (fault thread); fabric; A progress thread wakes",
    "A: unpack, engine lock, write-protect + copy page, pack",
    "A progress thread posts DATA; fabric; B progress thread",
    "B: unpack, engine lock, UFFDIO_COPY + wake",
    "B: the reader runs again",
};

struct timeline {
	_Atomic int64_t cur; /* sample being stamped, -1: none */
	uint64_t t[][ST_N];
};

static struct timeline *tl;
static size_t tl_size;
static struct hk_config cfg;
static char raw_addr[2][2][128]; /* [node][0 = node, 1 = service] */
static pid_t child_pid = -1;
static int ctl_fd = -1;

/* ---- process hygiene --------------------------------------------------- */

static void shm_cleanup(void)
{
	char path[700];

	if (strncmp(opt.provider, "shm", 3))
		return;
	/* Names a killed process may leave in /dev/shm (cluster.h). */
	for (unsigned i = 0; i < 2; i++) {
		snprintf(path, sizeof(path), "/dev/shm/hk-%s-%s", cfg.cluster_name,
			 cfg.nodes[i].name);
		unlink(path);
		snprintf(path, sizeof(path), "/dev/shm/%s", raw_addr[i][0]);
		unlink(path);
	}
}

static void kill_child(void)
{
	if (child_pid > 0) {
		kill(child_pid, SIGKILL);
		waitpid(child_pid, NULL, 0);
		child_pid = -1;
	}
}

__attribute__((noreturn)) static void fail(const char *what, const char *err)
{
	fflush(stdout);
	fprintf(stderr, "bench-pool: %s: %s\n", what, err);
	kill_child();
	shm_cleanup();
	_exit(1);
}

static void on_signal(int sig)
{
	static const char msg[] = "bench-pool: timed out or interrupted; stopping both nodes\n";

	if (write(STDERR_FILENO, msg, sizeof(msg) - 1) < 0) {
		/* nothing more to say */
	}
	if (child_pid > 0)
		kill(child_pid, SIGKILL); /* waitpid is not async-signal-safe enough here */
	_exit(sig == SIGALRM ? 3 : 130);
}

/* ---- phase control over the socketpair ---------------------------------- */

enum ctl_op { CTL_RAW_OPEN = 1, CTL_READY, CTL_RTT, CTL_STREAM, CTL_ACK, CTL_QUIT };

struct ctl {
	uint32_t op, flags;
	uint64_t arg;
	int64_t status;
	uint64_t ns;
};

static void ctl_send(uint32_t op, uint32_t flags, uint64_t arg, int64_t status, uint64_t ns)
{
	struct ctl m = {.op = op, .flags = flags, .arg = arg, .status = status, .ns = ns};

	if (send(ctl_fd, &m, sizeof(m), MSG_NOSIGNAL) != sizeof(m))
		fail("control", "the other node is gone");
}

static struct ctl ctl_recv(uint32_t want)
{
	struct ctl m;
	ssize_t n;

	do
		n = recv(ctl_fd, &m, sizeof(m), 0);
	while (n < 0 && errno == EINTR);
	if (n != sizeof(m))
		fail("control", "the other node is gone (see its messages above)");
	if (want && m.op != want) {
		char e[64];

		snprintf(e, sizeof(e), "got op %u, want %u", m.op, want);
		fail("control", e);
	}
	return m;
}

/* ---- one node: pooled hk_mem + cluster + raw endpoint ------------------- */

struct node {
	unsigned self;
	struct hk_mem *mem;
	struct hk_cluster *c;
	struct raw_ep raw;
	atomic_bool leaving, peer_lost;
};

static struct node me;

static void stamp(enum stage s)
{
	int64_t i = atomic_load_explicit(&tl->cur, memory_order_relaxed);

	if (i >= 0 && !tl->t[i][s])
		tl->t[i][s] = hk_now_ns();
}

static int coh_send(void *ctx, unsigned node, const void *msg, size_t len)
{
	struct node *n = ctx;

	stamp(n->self == NODE_B ? ST_REQ_SENT : ST_HOME_SENT);
	return hk_cluster_send(n->c, node, HK_MSG_COH, msg, len);
}

static const struct hk_pool_transport coh_transport = {
    .size = sizeof(struct hk_pool_transport),
    .send = coh_send,
};

static void coh_recv(void *ctx, unsigned from, const void *buf, size_t len)
{
	struct node *n = ctx;

	stamp(n->self == NODE_B ? ST_REPLY_RECV : ST_HOME_RECV);
	hk_mem_pool_deliver(n->mem, from, buf, len);
	if (n->self == NODE_B)
		stamp(ST_INSTALLED);
}

static void on_peer(void *ctx, unsigned node, bool up, const char *why)
{
	struct node *n = ctx;

	if (up || atomic_load(&n->leaving))
		return;
	atomic_store(&n->peer_lost, true);
	/* Mid-run the other node is gone: no figure would mean anything, and a
	 * thread may be blocked on its page or spinning on its echo.  End the
	 * run from here (fail() leaves with _exit; the child dies with us). */
	hk_mem_pool_abort(n->mem, "peer down");
	fail(n->self == NODE_B ? "node A lost" : "node B lost", why);
}

static void node_up(struct node *n, unsigned self)
{
	struct hk_pool_config pc = {
	    .self = self,
	    .n_nodes = 2,
	    .transport = &coh_transport,
	    .ctx = n,
	    .guest = 1,
	    .node_memory = {lay.home, lay.home},
	};
	char err[512];
	unsigned peer = 1 - self;

	n->self = self;
	if (hk_mem_create(2 * lay.home, 0, &n->mem, err, sizeof(err)) ||
	    hk_mem_pool(n->mem, &pc, err, sizeof(err)))
		fail("guest memory", err);
	if (hk_cluster_create(&cfg, self, &n->c, err, sizeof(err)))
		fail("cluster", err);
	hk_cluster_on(n->c, HK_MSG_COH, coh_recv, n);
	hk_cluster_on_peer(n->c, on_peer, n);
	if (hk_cluster_join(n->c, JOIN_MS, err, sizeof(err)))
		fail("cluster join", err);
	if (raw_open(&n->raw, opt.provider, raw_addr[self][0],
		     raw_addr[self][1][0] ? raw_addr[self][1] : NULL, err, sizeof(err)))
		fail("raw fabric", err);
	/* shm names exist only once opened: connect after both said so. */
	ctl_send(CTL_RAW_OPEN, 0, 0, 0, 0);
	ctl_recv(CTL_RAW_OPEN);
	if (raw_connect(&n->raw, raw_addr[peer][0], raw_addr[peer][1][0] ? raw_addr[peer][1] : NULL,
			err, sizeof(err)))
		fail("raw fabric", err);
}

static void node_down(struct node *n)
{
	atomic_store(&n->leaving, true);
	hk_cluster_destroy(n->c); /* no callback after this: the memory can go */
	hk_mem_destroy(n->mem);
	raw_close(&n->raw);
}

/* ---- the pattern A writes and B checks ---------------------------------- */

static uint64_t pattern(uint64_t frame, unsigned word)
{
	return (frame + 1) * PATTERN_MULT ^ ((uint64_t)word << 40 | word);
}

static uint8_t *frame_ptr(uint64_t frame)
{
	/* Guests here stay below the 3 GiB hole: frame * 4 KiB is the GPA. */
	return hk_mem_gpa(me.mem, frame * PAGE, PAGE);
}

/* Pages [first, first+count) whose content differs from the pattern; word 0
 * is expected flipped when B wrote it. */
static uint64_t verify(uint64_t first, uint64_t count, bool word0_written)
{
	uint64_t bad = 0;

	for (uint64_t f = first; f < first + count; f++) {
		const uint64_t *w = (const uint64_t *)frame_ptr(f);

		for (unsigned i = 0; i < PAGE / 8; i++) {
			uint64_t want = pattern(f, i) ^ (word0_written && !i ? 1 : 0);

			if (w[i] != want) {
				bad++;
				break;
			}
		}
	}
	return bad;
}

/* ---- node A: the home ------------------------------------------------------ */

__attribute__((noreturn)) static void node_a_main(pid_t parent)
{
	uint64_t t0;
	char err[256];
	int status = 0;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(1);
	child_pid = -1;
	signal(SIGALRM, SIG_DFL);
	alarm(opt.timeout_s);
	node_up(&me, NODE_A);

	t0 = hk_now_ns();
	for (uint64_t f = 0; f < lay.total; f++) {
		uint64_t *w = (uint64_t *)frame_ptr(f);

		for (unsigned i = 0; i < PAGE / 8; i++)
			w[i] = pattern(f, i);
	}
	ctl_send(CTL_READY, 0, lay.total, 0, hk_now_ns() - t0);

	for (;;) {
		struct ctl m = ctl_recv(0);
		int ret = 0;

		if (m.op == CTL_QUIT)
			break;
		if (m.op == CTL_RTT)
			ret = raw_echo(&me.raw, (unsigned)m.arg, m.flags, err, sizeof(err));
		else if (m.op == CTL_STREAM)
			ret = raw_stream_send(&me.raw, m.arg, m.flags, err, sizeof(err));
		else {
			snprintf(err, sizeof(err), "unknown op %u", m.op);
			ret = -EINVAL;
		}
		if (ret) {
			fprintf(stderr, "bench-pool: node A: %s\n", err);
			status = 1;
		}
		ctl_send(CTL_ACK, 0, 0, ret, 0);
	}
	node_down(&me);
	_exit(status);
}

/* ---- node B: the measurements --------------------------------------------- */

static void rtt(bool block, unsigned rounds, uint64_t *ns, struct lat *out)
{
	char err[256];
	int ret;

	ctl_send(CTL_RTT, block, WARM_PAGES + rounds, 0, 0);
	ret = raw_ping(&me.raw, WARM_PAGES, block, ns, err, sizeof(err));
	if (!ret)
		ret = raw_ping(&me.raw, rounds, block, ns, err, sizeof(err));
	if (ret)
		fail("raw round trip", err);
	if (ctl_recv(CTL_ACK).status)
		fail("raw round trip", "node A's echo failed");
	lat_summarize(ns, rounds, out);
}

/* One access per page of [first, first+count), timed; write: flip word 0. */
static void touch_timed(uint64_t first, uint64_t count, bool write, uint64_t *ns)
{
	for (uint64_t k = 0; k < count; k++) {
		volatile uint64_t *w = (volatile uint64_t *)frame_ptr(first + k);
		uint64_t t0 = hk_now_ns();

		if (write)
			*w = pattern(first + k, 0) ^ 1;
		else
			(void)*w;
		if (ns)
			ns[k] = hk_now_ns() - t0;
	}
}

/* The timed reads of phase 1, with the timeline on. */
static void read_traced(uint64_t first, uint64_t count, uint64_t *ns)
{
	memset(tl->t, 0, count * sizeof(tl->t[0]));
	for (uint64_t k = 0; k < count; k++) {
		volatile uint64_t *w = (volatile uint64_t *)frame_ptr(first + k);

		atomic_store(&tl->cur, (int64_t)k);
		tl->t[k][ST_FAULT] = hk_now_ns();
		(void)*w;
		tl->t[k][ST_RESUMED] = hk_now_ns();
		ns[k] = tl->t[k][ST_RESUMED] - tl->t[k][ST_FAULT];
	}
	atomic_store(&tl->cur, -1);
}

/* Median of each step of the timeline over the reads that have both stamps. */
static void breakdown(uint64_t count, uint64_t *scratch, struct lat out[ST_N - 1])
{
	for (unsigned s = 0; s + 1 < ST_N; s++) {
		size_t n = 0;

		for (uint64_t k = 0; k < count; k++)
			if (tl->t[k][s] && tl->t[k][s + 1] >= tl->t[k][s])
				scratch[n++] = tl->t[k][s + 1] - tl->t[k][s];
		lat_summarize(scratch, n, &out[s]);
	}
}

struct streamer {
	pthread_barrier_t *start;
	uint64_t first, count;
};

static void *streamer_main(void *arg)
{
	struct streamer *s = arg;

	pthread_barrier_wait(s->start);
	touch_timed(s->first, s->count, false, NULL);
	return NULL;
}

/* Read count pages from first with nthreads threads (contiguous slices). */
static double stream_read(uint64_t first, uint64_t count, unsigned nthreads)
{
	struct streamer s[MAX_THREADS];
	pthread_t t[MAX_THREADS];
	pthread_barrier_t start;
	uint64_t t0;

	pthread_barrier_init(&start, NULL, nthreads + 1);
	for (unsigned i = 0; i < nthreads; i++) {
		s[i] = (struct streamer){
		    .start = &start,
		    .first = first + count * i / nthreads,
		    .count = count * (i + 1) / nthreads - count * i / nthreads,
		};
		if (pthread_create(&t[i], NULL, streamer_main, &s[i]))
			fail("streaming", "cannot start a thread");
	}
	pthread_barrier_wait(&start);
	t0 = hk_now_ns();
	for (unsigned i = 0; i < nthreads; i++)
		pthread_join(t[i], NULL);
	pthread_barrier_destroy(&start);
	return (hk_now_ns() - t0) / 1e9;
}

static void stream_go(void *ctx)
{
	uint64_t *t0 = ctx;

	ctl_send(CTL_STREAM, opt.window, lay.stream_pages, 0, 0);
	*t0 = hk_now_ns();
}

static double raw_stream(void)
{
	char err[256];
	uint64_t t0 = 0;
	double s;

	if (raw_stream_recv(&me.raw, lay.stream_pages, opt.window, stream_go, &t0, err,
			    sizeof(err)))
		fail("raw stream", err);
	s = (hk_now_ns() - t0) / 1e9;
	if (ctl_recv(CTL_ACK).status)
		fail("raw stream", "node A's sends failed");
	return s;
}

static double mbps(uint64_t pages, double s)
{
	return s > 0 ? pages * PAGE / s / 1e6 : 0;
}

static void print_lat(const char *name, const struct lat *l)
{
	printf("  %-58s median %7.1f us  p99 %7.1f us  mean %7.1f us  (n=%llu)\n", name, l->med_us,
	       l->p99_us, l->mean_us, (unsigned long long)l->n);
}

static void json_lat(const char *key, const struct lat *l, bool comma)
{
	printf("\"%s\":{\"median_us\":%.2f,\"p99_us\":%.2f,\"mean_us\":%.2f,\"n\":%llu}%s", key,
	       l->med_us, l->p99_us, l->mean_us, (unsigned long long)l->n, comma ? "," : "");
}

static int node_b_main(void)
{
	struct lat uffd, uffd_hk, rtt_block, rtt_busy, rd, up = {0}, fe = {0}, steps[ST_N - 1];
	uint64_t n_ns = WARM_PAGES;
	uint64_t *ns;
	uint64_t bad = 0, bad_stream = 0;
	double write_s, s1, st = 0, sraw, floor_block, floor_busy;
	struct hk_pool_stats ps;
	struct ctl ready;
	char err[256], when[32], gbuf[32];
	time_t now = time(NULL);
	int status = -1; /* not clean unless waitpid says so */

	/* One buffer of samples for every phase. */
	if (opt.pages > n_ns)
		n_ns = opt.pages;
	if (opt.rounds > n_ns)
		n_ns = opt.rounds;
	if (opt.fetches > n_ns)
		n_ns = opt.fetches;
	ns = calloc(n_ns, sizeof(*ns));
	if (!ns)
		fail("memory", "out of memory for samples");
	node_up(&me, NODE_B);
	ready = ctl_recv(CTL_READY);
	write_s = ready.ns / 1e9;

	/* 2a. floor: a local uffd fault resolved from memory */
	if (floor_uffd_minimal(opt.pages, ns, err, sizeof(err)))
		fail("floor", err);
	lat_summarize(ns, opt.pages, &uffd);
	if (floor_uffd_hk_mem(opt.pages, ns, err, sizeof(err)))
		fail("floor", err);
	lat_summarize(ns, opt.pages, &uffd_hk);
	/* 2b. floor: raw 4 KiB round trips between the same two processes */
	rtt(true, opt.rounds, ns, &rtt_block);
	rtt(false, opt.rounds, ns, &rtt_busy);

	/* 1. remote faults */
	touch_timed(lay.warm, WARM_PAGES, false, NULL);
	read_traced(lay.lat, opt.pages, ns);
	lat_summarize(ns, opt.pages, &rd);
	breakdown(opt.pages, ns, steps);
	bad += verify(lay.lat + opt.upgrades, opt.pages - opt.upgrades, false);
	if (opt.upgrades) {
		touch_timed(lay.lat, opt.upgrades, true, ns);
		lat_summarize(ns, opt.upgrades, &up);
		bad += verify(lay.lat, opt.upgrades, true);
	}
	if (opt.fetches) {
		touch_timed(lay.fetch, opt.fetches, true, ns);
		lat_summarize(ns, opt.fetches, &fe);
		bad += verify(lay.fetch, opt.fetches, true);
	}

	/* 3. streaming */
	s1 = stream_read(lay.stream1, lay.stream_pages, 1);
	bad_stream += verify(lay.stream1, lay.stream_pages, false);
	if (opt.threads) {
		st = stream_read(lay.streamt, lay.stream_pages, opt.threads);
		bad_stream += verify(lay.streamt, lay.stream_pages, false);
	}
	sraw = raw_stream();
	hk_mem_pool_stats(me.mem, &ps);

	floor_block = uffd.med_us + rtt_block.med_us;
	floor_busy = uffd.med_us + rtt_busy.med_us;
	strftime(when, sizeof(when), "%Y-%m-%d %H:%M", localtime(&now));
	printf("bench-pool %s: provider %s, 2 nodes = 2 processes on this host (%ld CPUs), "
	       "guest %s, 4 KiB pages\n",
	       when, opt.provider, sysconf(_SC_NPROCESSORS_ONLN),
	       hk_format_size(2 * lay.home, gbuf, sizeof(gbuf)));
	printf("node A wrote its pattern into %llu pages in %.2f s\n",
	       (unsigned long long)lay.total, write_s);
	printf("floor:\n");
	print_lat("(a) local uffd fault, minimal handler, UFFDIO_COPY", &uffd);
	print_lat("    cross-check: hk_mem 4 KiB window (hk fault thread)", &uffd_hk);
	print_lat("(b) raw hk_fabric 4 KiB round trip, blocking wait", &rtt_block);
	print_lat("    raw hk_fabric 4 KiB round trip, busy polling", &rtt_busy);
	printf("  floor = (a) + (b): median %.1f us (blocking wait), %.1f us (busy polling)\n",
	       floor_block, floor_busy);
	printf("remote faults (node B on pages homed and written by node A):\n");
	print_lat("read, READ -> DATA", &rd);
	if (opt.upgrades)
		print_lat("write to a shared copy, WRITE -> UPGRADE (no data)", &up);
	if (opt.fetches)
		print_lat("write to a page A owns, WRITE -> DATA (A's copy dropped)", &fe);
	printf(
	    "  where a read's time goes (median of each step, from stamps in both processes):\n");
	for (unsigned s = 0; s + 1 < ST_N; s++)
		printf("    %-64s %7.1f us  p99 %7.1f us\n", stage_what[s], steps[s].med_us,
		       steps[s].p99_us);
	printf("  read median / floor median: %.2fx (blocking-wait floor), %.2fx (busy-polling "
	       "floor); target 1.3x: %s\n",
	       rd.med_us / floor_block, rd.med_us / floor_busy,
	       rd.med_us <= 1.3 * floor_block ? "met" : "NOT met");
	printf("streaming %s of A's pages into B:\n",
	       hk_format_size(lay.stream_pages * PAGE, gbuf, sizeof(gbuf)));
	printf("  remote faults, 1 thread:   %8.1f MB/s  (%.2f s, %.1f us/page)\n",
	       mbps(lay.stream_pages, s1), s1, s1 * 1e6 / lay.stream_pages);
	if (opt.threads)
		printf("  remote faults, %u threads: %8.1f MB/s  (%.2f s)\n", opt.threads,
		       mbps(lay.stream_pages, st), st);
	printf("  raw hk_fabric 4 KiB messages, %u in flight: %8.1f MB/s  (%.2f s)\n", opt.window,
	       mbps(lay.stream_pages, sraw), sraw);
	printf("  ratio to raw: 1 thread %.3f",
	       mbps(lay.stream_pages, s1) / mbps(lay.stream_pages, sraw));
	if (opt.threads)
		printf(", %u threads %.3f", opt.threads,
		       mbps(lay.stream_pages, st) / mbps(lay.stream_pages, sraw));
	printf("\n");
	printf("node B pool stats: remote_faults %llu, pages_recv %llu, zero_pages %llu, "
	       "upgrades %llu, bad_msgs %llu; pages with wrong data: %llu\n",
	       (unsigned long long)ps.remote_faults, (unsigned long long)ps.pages_recv,
	       (unsigned long long)ps.zero_pages, (unsigned long long)ps.upgrades,
	       (unsigned long long)ps.bad_msgs, (unsigned long long)(bad + bad_stream));

	printf("{\"bench\":\"pool\",\"date\":\"%s\",\"provider\":\"%s\",\"cpus\":%ld,", when,
	       opt.provider, sysconf(_SC_NPROCESSORS_ONLN));
	json_lat("uffd_local", &uffd, true);
	json_lat("uffd_hk_mem_4k", &uffd_hk, true);
	json_lat("raw_rtt_blocking", &rtt_block, true);
	json_lat("raw_rtt_busy", &rtt_busy, true);
	json_lat("remote_read", &rd, true);
	json_lat("remote_upgrade", &up, true);
	json_lat("remote_fetch", &fe, true);
	printf("\"read_steps_median_us\":[");
	for (unsigned s = 0; s + 1 < ST_N; s++)
		printf("%.2f%s", steps[s].med_us, s + 2 < ST_N ? "," : "],");
	printf("\"floor_median_us\":%.2f,\"floor_busy_median_us\":%.2f,\"ratio\":%.3f,"
	       "\"ratio_busy_floor\":%.3f,\"target_met\":%s,",
	       floor_block, floor_busy, rd.med_us / floor_block, rd.med_us / floor_busy,
	       rd.med_us <= 1.3 * floor_block ? "true" : "false");
	printf("\"stream_bytes\":%llu,\"stream_mb_s\":%.1f,\"stream_threads\":%u,"
	       "\"stream_mt_mb_s\":%.1f,\"raw_stream_mb_s\":%.1f,\"raw_window\":%u,"
	       "\"stream_ratio\":%.4f,\"stream_mt_ratio\":%.4f,",
	       (unsigned long long)(lay.stream_pages * PAGE), mbps(lay.stream_pages, s1),
	       opt.threads, opt.threads ? mbps(lay.stream_pages, st) : 0.0,
	       mbps(lay.stream_pages, sraw), opt.window,
	       mbps(lay.stream_pages, s1) / mbps(lay.stream_pages, sraw),
	       opt.threads ? mbps(lay.stream_pages, st) / mbps(lay.stream_pages, sraw) : 0.0);
	printf("\"remote_faults\":%llu,\"zero_pages\":%llu,\"bad_pages\":%llu}\n",
	       (unsigned long long)ps.remote_faults, (unsigned long long)ps.zero_pages,
	       (unsigned long long)(bad + bad_stream));
	fflush(stdout);

	atomic_store(&me.leaving, true); /* A's goodbye is no loss */
	ctl_send(CTL_QUIT, 0, 0, 0, 0);
	if (waitpid(child_pid, &status, 0) == child_pid)
		child_pid = -1;
	node_down(&me);
	free(ns);

	if (bad + bad_stream || ps.zero_pages || atomic_load(&me.peer_lost)) {
		fprintf(stderr,
			"bench-pool: FAILED: %llu pages with wrong data, %llu zero grants%s\n",
			(unsigned long long)(bad + bad_stream), (unsigned long long)ps.zero_pages,
			atomic_load(&me.peer_lost) ? ", node A lost" : "");
		return 1;
	}
	if (!WIFEXITED(status) || WEXITSTATUS(status)) {
		fprintf(stderr, "bench-pool: node A did not end cleanly (status 0x%x)\n", status);
		return 1;
	}
	return 0;
}

/* ---- set-up ------------------------------------------------------------------ */

/* A TCP port nobody listens on now (the kernel picks it). */
static unsigned free_port(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	unsigned port = 0;

	if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&a, &len) == 0)
		port = ntohs(a.sin_port);
	if (fd >= 0)
		close(fd);
	if (!port)
		fail("set-up", "no free TCP port on 127.0.0.1");
	return port;
}

static void make_setup(void)
{
	bool shm = !strncmp(opt.provider, "shm", 3);
	uint64_t need;

	lay.stream_pages = opt.stream / PAGE;
	lay.warm = 0;
	lay.lat = lay.warm + WARM_PAGES;
	lay.fetch = lay.lat + opt.pages;
	lay.stream1 = lay.fetch + opt.fetches;
	lay.streamt = lay.stream1 + lay.stream_pages;
	lay.total = lay.streamt + (opt.threads ? lay.stream_pages : 0);
	/* A homes the first half; one spare 2 MiB chunk. */
	need = (lay.total * PAGE + HK_MEM_ALIGN - 1) / HK_MEM_ALIGN * HK_MEM_ALIGN + HK_MEM_ALIGN;
	lay.home = need < HK_MEM_MIN / 2 ? HK_MEM_MIN / 2 : need;
	if (2 * lay.home > HK_GPA_MMIO_HOLE)
		fail("options", "--pages/--fetches/--stream need more than 3 GiB of guest memory; "
				"use less");

	snprintf(cfg.path, sizeof(cfg.path), "bench-pool");
	snprintf(cfg.cluster_name, sizeof(cfg.cluster_name), "bp%d", (int)getpid());
	snprintf(cfg.provider, sizeof(cfg.provider), "%s", opt.provider);
	cfg.vcpus = 1;
	cfg.n_nodes = 2;
	for (unsigned i = 0; i < 2; i++) {
		snprintf(cfg.nodes[i].name, sizeof(cfg.nodes[i].name), "n%u", i + 1);
		snprintf(cfg.nodes[i].address, sizeof(cfg.nodes[i].address), "127.0.0.1:%u",
			 free_port());
		cfg.nodes[i].memory = lay.home;
		if (shm) {
			snprintf(raw_addr[i][0], sizeof(raw_addr[i][0]), "hk-%s-raw%u",
				 cfg.cluster_name, i);
			raw_addr[i][1][0] = '\0';
		} else {
			snprintf(raw_addr[i][0], sizeof(raw_addr[i][0]), "127.0.0.1");
			snprintf(raw_addr[i][1], sizeof(raw_addr[i][1]), "%u", free_port());
		}
	}
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: bench-pool [--provider P] [--pages N] [--upgrades N] [--fetches N]\n"
		"                  [--stream SIZE] [--threads T] [--rounds N] [--window W]\n"
		"                  [--timeout S] [--quick]\n"
		"  --provider  libfabric provider (default %s)\n"
		"  --pages     remote read faults timed (default 20000)\n"
		"  --upgrades  write faults on shared copies, out of --pages (default 5000)\n"
		"  --fetches   write faults on pages node A owns (default 5000)\n"
		"  --stream    bytes streamed by remote faults and by raw fabric (default 256M)\n"
		"  --threads   threads of the second streaming run, 0 = none (default 4)\n"
		"  --rounds    raw round trips timed per wait mode (default 20000)\n"
		"  --window    raw stream: 4 KiB sends in flight, 1..%d (default 64)\n"
		"  --timeout   seconds before both nodes are stopped (default 300)\n"
		"  --quick     a smoke run of a few seconds (small counts)\n",
		HK_FABRIC_PROVIDER_DFLT, RAW_WINDOW_MAX);
}

static unsigned parse_count(const char *name, const char *s, unsigned max)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *end || !*s || v > max) {
		fprintf(stderr, "bench-pool: %s '%s': want a number from 0 to %u\n", name, s, max);
		exit(2);
	}
	return (unsigned)v;
}

static void parse_args(int argc, char **argv)
{
	static const struct option lo[] = {
	    {"provider", required_argument, NULL, 'P'}, {"pages", required_argument, NULL, 'n'},
	    {"upgrades", required_argument, NULL, 'u'}, {"fetches", required_argument, NULL, 'f'},
	    {"stream", required_argument, NULL, 's'},	{"threads", required_argument, NULL, 't'},
	    {"rounds", required_argument, NULL, 'r'},	{"window", required_argument, NULL, 'w'},
	    {"timeout", required_argument, NULL, 'T'},	{"quick", no_argument, NULL, 'q'},
	    {"help", no_argument, NULL, 'h'},		{NULL, 0, NULL, 0},
	};
	bool set_u = false;
	int c;

	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (c) {
		case 'P':
			opt.provider = optarg;
			break;
		case 'n':
			opt.pages = parse_count("--pages", optarg, 1u << 20);
			break;
		case 'u':
			opt.upgrades = parse_count("--upgrades", optarg, 1u << 20);
			set_u = true;
			break;
		case 'f':
			opt.fetches = parse_count("--fetches", optarg, 1u << 20);
			break;
		case 's':
			if (hk_parse_size(optarg, &opt.stream) || opt.stream < PAGE ||
			    opt.stream % PAGE) {
				fprintf(stderr,
					"bench-pool: --stream '%s': want a size that is a "
					"multiple of 4 KiB\n",
					optarg);
				exit(2);
			}
			break;
		case 't':
			opt.threads = parse_count("--threads", optarg, MAX_THREADS);
			break;
		case 'r':
			opt.rounds = parse_count("--rounds", optarg, 1u << 22);
			break;
		case 'w':
			opt.window = parse_count("--window", optarg, RAW_WINDOW_MAX);
			if (!opt.window)
				opt.window = 1;
			break;
		case 'T':
			opt.timeout_s = parse_count("--timeout", optarg, 86400);
			break;
		case 'q':
			opt.quick = true;
			opt.pages = opt.rounds = 300;
			opt.fetches = 100;
			opt.stream = 4ull << 20;
			opt.threads = 2;
			if (!set_u)
				opt.upgrades = 100;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			exit(2);
		}
	}
	if (optind < argc) {
		fprintf(stderr, "bench-pool: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		exit(2);
	}
	if (!opt.pages || !opt.rounds) {
		fprintf(stderr, "bench-pool: --pages and --rounds must be at least 1\n");
		exit(2);
	}
	if (opt.upgrades > opt.pages)
		opt.upgrades = opt.pages; /* upgrades reuse pages B read */
}

int main(int argc, char **argv)
{
	int sv[2], ret;
	pid_t parent = getpid();

	parse_args(argc, argv);
	setvbuf(stdout, NULL, _IOLBF, 0);
	make_setup();
	/* Shared with the child: the timeline of phase 1. */
	tl_size = sizeof(*tl) + (size_t)opt.pages * sizeof(tl->t[0]);
	tl = mmap(NULL, tl_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (tl == MAP_FAILED)
		fail("set-up", strerror(errno));
	atomic_store(&tl->cur, -1);
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		fail("set-up", strerror(errno));
	child_pid = fork();
	if (child_pid < 0)
		fail("set-up", strerror(errno));
	if (child_pid == 0) {
		close(sv[0]);
		ctl_fd = sv[1];
		node_a_main(parent);
	}
	close(sv[1]);
	ctl_fd = sv[0];
	signal(SIGALRM, on_signal);
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	alarm(opt.timeout_s);
	ret = node_b_main();
	alarm(0);
	kill_child();
	shm_cleanup();
	return ret;
}
