/*
 * Pooled memory without KVM: three "nodes" in one process, each its own
 * guest-memory mapping with its own userfaultfd and coherence engine, and
 * threads that play vCPUs by touching those mappings.  Every access really
 * faults into the kernel and is resolved by the engine; messages between
 * engines go through per-node delivery threads (asynchronous, FIFO per
 * pair, like the fabric).  The libfabric path itself is covered by the
 * cluster tests; here the subject is the protocol: data moves, copies are
 * invalidated, ownership is exclusive, eviction gives pages back.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "coh.pb-c.h"
#include "mem_internal.h" /* hk_mem_pin: a device's view of pooled pages */

#define NODES	 3
#define GUEST	 (64ull << 20)
#define NODE_MEM (32ull << 20)

struct qmsg {
	struct qmsg *next;
	unsigned from;
	size_t len;
	uint8_t buf[];
};

struct node {
	struct hk_mem *mem;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct qmsg *head, *tail;
	bool stop;
	unsigned self;
};

static struct node nodes[NODES];
static _Atomic uint64_t sent, sent_by[NODES];

/* Knob: node fail_from's sends of message type fail_type fail (-ENOBUFS,
 * a full queue); -1: every send goes. */
static _Atomic int fail_type = -1, fail_from = -1;

/* What the transport's fail hook was told, per node. */
static pthread_mutex_t fail_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t fail_cv = PTHREAD_COND_INITIALIZER;
static unsigned fail_calls[NODES];
static char fail_why[NODES][256];

static bool send_fails(unsigned from, const void *msg, size_t len)
{
	Hk__Coh__CohMsg *m;
	bool hit;

	if (atomic_load(&fail_type) < 0 || (int)from != atomic_load(&fail_from))
		return false;
	m = hk__coh__coh_msg__unpack(NULL, len, msg);
	hit = m && (int)m->type == atomic_load(&fail_type);
	if (m)
		hk__coh__coh_msg__free_unpacked(m, NULL);
	return hit;
}

static int q_send(void *ctx, unsigned to, const void *msg, size_t len)
{
	struct node *from = ctx, *n = &nodes[to];
	struct qmsg *m;

	if (send_fails(from->self, msg, len))
		return -ENOBUFS;
	m = malloc(sizeof(*m) + len);
	if (!m)
		return -ENOMEM;
	m->next = NULL;
	m->from = from->self;
	m->len = len;
	memcpy(m->buf, msg, len);
	pthread_mutex_lock(&n->lock);
	if (n->tail)
		n->tail->next = m;
	else
		n->head = m;
	n->tail = m;
	pthread_cond_signal(&n->cond);
	pthread_mutex_unlock(&n->lock);
	atomic_fetch_add(&sent, 1);
	atomic_fetch_add(&sent_by[from->self], 1);
	return 0;
}

/* The daemon ends the guest here; the test records the reason. */
static void q_fail(void *ctx, struct hk_mem *mem, const char *why)
{
	struct node *n = ctx;

	(void)mem;
	pthread_mutex_lock(&fail_lock);
	if (!fail_calls[n->self]++)
		snprintf(fail_why[n->self], sizeof(fail_why[n->self]), "%s", why);
	pthread_cond_broadcast(&fail_cv);
	pthread_mutex_unlock(&fail_lock);
}

static const struct hk_pool_transport q_transport = {
	.size = sizeof(struct hk_pool_transport),
	.send = q_send,
	.fail = q_fail,
};

static void *deliver_thread(void *arg)
{
	struct node *n = arg;

	pthread_mutex_lock(&n->lock);
	for (;;) {
		struct qmsg *m;

		while (!n->head && !n->stop)
			pthread_cond_wait(&n->cond, &n->lock);
		if (!n->head)
			break;
		m = n->head;
		n->head = m->next;
		if (!n->head)
			n->tail = NULL;
		pthread_mutex_unlock(&n->lock);
		hk_mem_pool_deliver(n->mem, m->from, m->buf, m->len);
		free(m);
		pthread_mutex_lock(&n->lock);
	}
	pthread_mutex_unlock(&n->lock);
	return NULL;
}

static void pool_setup(uint64_t node_mem)
{
	char err[256];

	for (unsigned i = 0; i < NODES; i++) {
		struct hk_pool_config cfg = {
			.self = i,
			.n_nodes = NODES,
			.transport = &q_transport,
			.ctx = &nodes[i],
			.guest = 7,
		};
		int ret;

		for (unsigned j = 0; j < NODES; j++)
			cfg.node_memory[j] = node_mem;
		nodes[i] = (struct node){.self = i};
		pthread_mutex_init(&nodes[i].lock, NULL);
		pthread_cond_init(&nodes[i].cond, NULL);
		ret = hk_mem_create(GUEST, 64 << 10, &nodes[i].mem, err, sizeof(err));
		cr_assert_eq(ret, 0, "hk_mem_create: %s", err);
		if (!hk_mem_can_protect(nodes[i].mem)) {
			for (unsigned j = 0; j <= i; j++)
				hk_mem_destroy(nodes[j].mem);
			cr_skip_test("userfaultfd write-protect not available here");
		}
		ret = hk_mem_pool(nodes[i].mem, &cfg, err, sizeof(err));
		cr_assert_eq(ret, 0, "hk_mem_pool: %s", err);
	}
	for (unsigned i = 0; i < NODES; i++)
		pthread_create(&nodes[i].thread, NULL, deliver_thread, &nodes[i]);
}

static void setup(void)
{
	pool_setup(NODE_MEM);
}

static void teardown(void)
{
	/* Delivery stops first, then the fault threads and the engines. */
	for (unsigned i = 0; i < NODES; i++) {
		pthread_mutex_lock(&nodes[i].lock);
		nodes[i].stop = true;
		pthread_cond_signal(&nodes[i].cond);
		pthread_mutex_unlock(&nodes[i].lock);
		pthread_join(nodes[i].thread, NULL);
	}
	for (unsigned i = 0; i < NODES; i++) {
		while (nodes[i].head) {
			struct qmsg *m = nodes[i].head;

			nodes[i].head = m->next;
			free(m);
		}
		hk_mem_destroy(nodes[i].mem);
	}
}

/* Host pointer to guest-physical gpa as node n sees it. */
static volatile uint64_t *at(unsigned n, uint64_t gpa)
{
	return hk_mem_gpa(nodes[n].mem, gpa, 8);
}

static uint64_t pattern(uint64_t gpa, uint64_t round)
{
	return (gpa * 0x9e3779b97f4a7c15ull) ^ (round << 56) ^ 0x5a5a;
}

static uint64_t now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec;
}

TestSuite(pool, .init = setup, .fini = teardown);

Test(pool, homes_are_contiguous_and_cover_all_memory)
{
	int last = 0;

	for (uint64_t gpa = 0; gpa < GUEST; gpa += 2ull << 20) {
		int h = hk_mem_pool_home(nodes[0].mem, gpa);

		cr_assert(h >= last && h < NODES, "gpa 0x%llx home %d", (unsigned long long)gpa, h);
		cr_assert_eq(h, hk_mem_pool_home(nodes[2].mem, gpa), "nodes disagree on a home");
		last = h;
	}
	cr_assert_eq(last, NODES - 1);
	cr_assert_eq(hk_mem_pool_home(nodes[0].mem, GUEST), -1);
}

/* One node writes every page (more than its budget), the others read it all. */
Test(pool, writes_on_one_node_are_read_on_every_other)
{
	struct hk_pool_stats st;

	for (uint64_t gpa = 0; gpa < GUEST; gpa += 512)
		*at(1, gpa) = pattern(gpa, 1);
	for (unsigned n = 0; n < NODES; n += 2)
		for (uint64_t gpa = 0; gpa < GUEST; gpa += 512)
			cr_assert_eq(*at(n, gpa), pattern(gpa, 1), "node %u gpa 0x%llx", n,
				     (unsigned long long)gpa);
	/* And node 1 still sees its own writes after the pages moved. */
	for (uint64_t gpa = 0; gpa < GUEST; gpa += 4096)
		cr_assert_eq(*at(1, gpa), pattern(gpa, 1));

	hk_mem_pool_stats(nodes[1].mem, &st);
	cr_assert_gt(st.remote_faults, 0);
	cr_assert_gt(st.evictions, 0, "64 MiB written on a node with 32 MiB must evict");
	cr_assert_leq(st.resident_pages, st.budget_pages + 64);
	cr_assert_eq(st.bad_msgs, 0);
	hk_mem_pool_stats(nodes[0].mem, &st);
	cr_assert_eq(st.bad_msgs, 0);
}

/* A write after reads on every node: every copy is invalidated. */
Test(pool, a_write_invalidates_every_shared_copy)
{
	const uint64_t gpa = 40ull << 20; /* homed on node 1 or 2 */
	struct hk_pool_stats st;
	uint64_t inv = 0;

	*at(0, gpa) = 1;
	for (unsigned n = 0; n < NODES; n++)
		cr_assert_eq(*at(n, gpa), 1);
	for (uint64_t round = 2; round < 50; round++) {
		unsigned w = round % NODES;

		*at(w, gpa) = round;
		for (unsigned n = 0; n < NODES; n++)
			cr_assert_eq(*at(n, gpa), round, "round %llu node %u",
				     (unsigned long long)round, n);
	}
	for (unsigned n = 0; n < NODES; n++) {
		hk_mem_pool_stats(nodes[n].mem, &st);
		inv += st.invalidations;
		cr_assert_eq(st.bad_msgs, 0);
	}
	cr_assert_gt(inv, 40);
}

struct worker {
	unsigned node;
	unsigned iters;
	bool ok;
};

/*
 * What a spinning test thread does between looks: sleep 20 us.  The
 * engine threads that move the pages it waits for need a core, and on two
 * shared cores under ASan a spinning thread (sched_yield is barely honoured
 * by CFS against other processes) only slows them down.
 */
static void relax(void)
{
	nanosleep(&(struct timespec){.tv_nsec = 20000}, NULL);
}

#define LOCK_GPA    (4ull << 20)	  /* homed on node 0 */
#define COUNTER_GPA ((60ull << 20) + 8) /* homed on node 2 */

static void *count_worker(void *arg)
{
	struct worker *w = arg;
	volatile uint64_t *lock = at(w->node, LOCK_GPA), *ctr = at(w->node, COUNTER_GPA);

	for (unsigned i = 0; i < w->iters; i++) {
		/* Nap, not pause, while the lock is held elsewhere: the
		 * holder's node needs a core for the engine to move the pages
		 * back (see relax()). */
		while (__atomic_exchange_n(lock, 1, __ATOMIC_ACQUIRE))
			while (__atomic_load_n(lock, __ATOMIC_RELAXED))
				relax();
		*ctr = *ctr + 1; /* plain read-modify-write: only the lock protects it */
		__atomic_store_n(lock, 0, __ATOMIC_RELEASE);
	}
	w->ok = true;
	return NULL;
}

/* Mutual exclusion across nodes: a lock on one page guards a counter on another. */
Test(pool, lock_protected_counter_is_exact_across_nodes)
{
	struct worker w[NODES];
	pthread_t t[NODES];

	for (unsigned n = 0; n < NODES; n++) {
		w[n] = (struct worker){.node = n, .iters = 300};
		pthread_create(&t[n], NULL, count_worker, &w[n]);
	}
	for (unsigned n = 0; n < NODES; n++) {
		pthread_join(t[n], NULL);
		cr_assert(w[n].ok);
	}
	for (unsigned n = 0; n < NODES; n++)
		cr_assert_eq(*at(n, COUNTER_GPA), 300 * NODES, "node %u sees %llu", n,
			     (unsigned long long)*at(n, COUNTER_GPA));
}

/* Not a timing target: only how long a wait may take before it counts as hung. */
#define HANG_S 240

#define DATA_GPA (10ull << 20) /* node 0 */
#define FLAG_GPA (50ull << 20) /* node 2 */
#define ACK_GPA	 (30ull << 20) /* node 1 */
#define MP_ITERS 300

static void *mp_reader(void *arg)
{
	struct worker *w = arg;
	volatile uint64_t *data = at(1, DATA_GPA), *flag = at(1, FLAG_GPA), *ack = at(1, ACK_GPA);
	uint64_t deadline = now_s() + HANG_S;

	for (uint64_t i = 1; i <= MP_ITERS; i++) {
		while (*flag != i) {
			if (now_s() > deadline) {
				w->ok = false;
				return NULL;
			}
			relax();
		}
		/* TSO: the data store came before the flag store. */
		if (*data != i * 3) {
			w->ok = false;
			return NULL;
		}
		*ack = i;
	}
	return NULL;
}

/* Message passing across three homes: data, then flag; the reader never sees the flag first. */
Test(pool, message_passing_never_sees_the_flag_before_the_data)
{
	volatile uint64_t *data = at(0, DATA_GPA), *flag = at(0, FLAG_GPA), *ack = at(0, ACK_GPA);
	/* ok before the reader runs: set by the reader itself, a late start
	 * let this loop see ok false, skip every wait for the ack and finish
	 * alone, leaving the reader waiting for flag 1 for ever (the "slow
	 * under ASan" failures were this) */
	struct worker w = {.ok = true};
	uint64_t deadline = now_s() + HANG_S;
	pthread_t t;

	pthread_create(&t, NULL, mp_reader, &w);
	for (uint64_t i = 1; i <= MP_ITERS; i++) {
		*data = i * 3;
		*flag = i;
		while (*ack != i && w.ok && now_s() < deadline)
			relax();
	}
	pthread_join(t, NULL);
	cr_assert(w.ok, "reader saw the flag without the data, or timed out");
	cr_assert_eq(*ack, MP_ITERS);
}

static void deliver_raw(unsigned to, unsigned from, const Hk__Coh__CohMsg *m)
{
	uint8_t buf[HK_POOL_MSG_MAX];
	size_t len = hk__coh__coh_msg__pack(m, buf);

	hk_mem_pool_deliver(nodes[to].mem, from, buf, len);
}

/* Forged or malformed messages are counted and dropped; the data stays right. */
Test(pool, bad_messages_are_dropped_and_change_nothing)
{
	const uint64_t gpa = 12ull << 20; /* homed on node 0 */
	uint64_t frame = hk_mem_frame(nodes[0].mem, gpa);
	Hk__Coh__CohMsg m = HK__COH__COH_MSG__INIT;
	uint8_t page[4096];
	struct hk_pool_stats st;
	uint8_t junk[64];

	memset(page, 0xee, sizeof(page));
	*at(1, gpa) = 42;

	memset(junk, 0xff, sizeof(junk));
	hk_mem_pool_deliver(nodes[0].mem, 1, junk, sizeof(junk)); /* not protobuf */
	m.version = 1;
	m.guest = 7;
	m.type = HK__COH__COH_TYPE__COH_DATA; /* data for a page node 2 does not home */
	m.frame = frame;
	m.exclusive = true;
	m.data.data = page;
	m.data.len = sizeof(page);
	deliver_raw(1, 2, &m);
	m.type = HK__COH__COH_TYPE__COH_READ; /* frame past the end */
	m.frame = GUEST / 4096;
	m.data.len = 0;
	deliver_raw(0, 1, &m);
	m.frame = frame; /* an older boot's message */
	m.guest = 6;
	deliver_raw(0, 1, &m);
	m.guest = 7;
	m.type = HK__COH__COH_TYPE__COH_ZERO; /* more frames than a grant may hold */
	m.count = 100000;
	deliver_raw(1, 0, &m);
	m.type = HK__COH__COH_TYPE__COH_WRITEBACK; /* write-back without data */
	m.count = 0;
	deliver_raw(0, 2, &m);
	m.type = HK__COH__COH_TYPE__COH_INV_ACK; /* ack nobody waits for */
	deliver_raw(0, 2, &m);
	deliver_raw(0, 0, &m); /* from itself */

	hk_mem_pool_stats(nodes[0].mem, &st);
	cr_assert_geq(st.bad_msgs, 6);
	hk_mem_pool_stats(nodes[1].mem, &st);
	cr_assert_geq(st.bad_msgs, 2);
	for (unsigned n = 0; n < NODES; n++)
		cr_assert_eq(*at(n, gpa), 42);
}

static void small_setup(void)
{
	pool_setup(24ull << 20);
}

TestSuite(pool_small, .init = small_setup, .fini = teardown);

/* 64 MiB guest over three nodes of 24 MiB: more than any one node holds. */
Test(pool_small, every_node_writes_more_than_it_holds)
{
	struct hk_pool_stats st;

	for (unsigned n = 0; n < NODES; n++)
		for (uint64_t gpa = 0; gpa < GUEST; gpa += 4096)
			*at(n, gpa + n * 8) = pattern(gpa, n);
	for (unsigned n = 0; n < NODES; n++)
		for (uint64_t gpa = 0; gpa < GUEST; gpa += 4096)
			for (unsigned k = 0; k < NODES; k++)
				cr_assert_eq(*at(n, gpa + k * 8), pattern(gpa, k));
	for (unsigned n = 0; n < NODES; n++) {
		hk_mem_pool_stats(nodes[n].mem, &st);
		cr_assert_leq(st.resident_pages, st.budget_pages + 64, "node %u over budget", n);
		cr_assert_eq(st.bad_msgs, 0);
	}
}

/* The hold is set from the environment; a bad value is one clear error. */
Test(pool_env, bad_hold_value_is_refused)
{
	struct hk_pool_config cfg = {.self = 0, .n_nodes = 2, .transport = &q_transport};
	struct hk_mem *mem;
	char err[256] = "";
	int ret;

	cfg.node_memory[0] = cfg.node_memory[1] = 32ull << 20;
	cr_assert_eq(hk_mem_create(64ull << 20, 0, &mem, err, sizeof(err)), 0, "%s", err);
	if (!hk_mem_can_protect(mem)) {
		hk_mem_destroy(mem);
		cr_skip_test("userfaultfd write-protect not available here");
	}
	setenv("HK_POOL_HOLD_US", "soon", 1);
	ret = hk_mem_pool(mem, &cfg, err, sizeof(err));
	unsetenv("HK_POOL_HOLD_US");
	cr_assert_eq(ret, -EINVAL);
	cr_assert(strstr(err, "HK_POOL_HOLD_US=soon"), "%s", err);
	hk_mem_destroy(mem);
}

/* Pages that ping-pong are held where they arrive: the counter says so. */
Test(pool, contended_pages_are_held_before_they_move)
{
	struct hk_pool_stats st;
	uint64_t holds = 0;

	for (uint64_t round = 1; round < 40; round++) {
		*at(1, LOCK_GPA) = round;	/* homed on node 0: fetched exclusive */
		*at(2, LOCK_GPA) = round + 100; /* taken away from node 1 right after */
	}
	for (unsigned n = 0; n < NODES; n++) {
		hk_mem_pool_stats(nodes[n].mem, &st);
		holds += st.holds;
	}
	cr_assert_gt(holds, 0, "no request was ever held back");
	cr_assert_eq(*at(0, LOCK_GPA), 139);
}

/* ---- failed sends end the guest and release every waiter ------------------ */

struct touch {
	unsigned node;
	uint64_t gpa;
	bool write;
	uint64_t seen;
};

static void *touch_thread(void *arg)
{
	struct touch *t = arg;

	if (t->write)
		*at(t->node, t->gpa) = 0x77;
	else
		t->seen = *at(t->node, t->gpa);
	return NULL;
}

static void abs_deadline(struct timespec *ts, unsigned seconds)
{
	clock_gettime(CLOCK_REALTIME, ts);
	ts->tv_sec += seconds;
}

/* What the leader does once a node's guest ended: stop it everywhere. */
static void stop_everywhere(void)
{
	for (unsigned n = 0; n < NODES; n++)
		hk_mem_pool_abort(nodes[n].mem, "the guest is ending");
}

/* Join a vCPU-like thread within 10 s; a hung one is released first, so a
 * failing test still ends. */
static bool joined_in_time(pthread_t t)
{
	struct timespec ts;

	abs_deadline(&ts, 10);
	if (pthread_timedjoin_np(t, NULL, &ts) == 0)
		return true;
	stop_everywhere();
	pthread_join(t, NULL);
	return false;
}

/* Wait up to 10 s for node's fail hook; its reason, or NULL. */
static const char *failure_of(unsigned node)
{
	struct timespec ts;
	const char *why = NULL;

	abs_deadline(&ts, 10);
	pthread_mutex_lock(&fail_lock);
	while (!fail_calls[node] && pthread_cond_timedwait(&fail_cv, &fail_lock, &ts) == 0)
		;
	if (fail_calls[node])
		why = fail_why[node];
	pthread_mutex_unlock(&fail_lock);
	return why;
}

static void fail_sends(unsigned node, Hk__Coh__CohType type)
{
	atomic_store(&fail_from, (int)node);
	atomic_store(&fail_type, (int)type);
}

static void expect_reason(const char *why, const char *msg, uint64_t gpa, unsigned to)
{
	char want[128];

	snprintf(want, sizeof(want), "pool: cannot send %s for frame %llu to node %u: ", msg,
		 (unsigned long long)hk_mem_frame(nodes[0].mem, gpa), to);
	cr_assert(why, "the transport was not told");
	cr_assert(strstr(why, want) == why, "reason \"%s\", want \"%s...\"", why, want);
	cr_assert(strstr(why, strerror(ENOBUFS)), "reason \"%s\" lacks the error", why);
}

/* A request that cannot reach the home: the faulting thread is released by
 * its own node at once, and that node moves nothing any more. */
Test(pool, a_request_that_cannot_be_sent_ends_the_guest)
{
	const uint64_t gpa = 12ull << 20, other = 44ull << 20; /* homed on nodes 0 and 2 */
	struct touch t = {.node = 1, .gpa = gpa};
	pthread_t th;
	uint64_t before;

	*at(0, gpa) = 42;
	fail_sends(1, HK__COH__COH_TYPE__COH_READ);
	pthread_create(&th, NULL, touch_thread, &t);
	expect_reason(failure_of(1), "READ", gpa, 0);
	cr_assert(joined_in_time(th), "the faulting thread stayed blocked");
	cr_assert_eq(t.seen, 0, "released with the page's content: coherence did not stop");

	/* Aborted: later faults resolve here, no message leaves. */
	before = atomic_load(&sent_by[1]);
	t = (struct touch){.node = 1, .gpa = other, .write = true};
	pthread_create(&th, NULL, touch_thread, &t);
	cr_assert(joined_in_time(th), "a fault after the abort blocked");
	cr_assert_eq(atomic_load(&sent_by[1]), before);
	pthread_mutex_lock(&fail_lock);
	cr_assert_eq(fail_calls[1], 1, "told %u times", fail_calls[1]);
	cr_assert_eq(fail_calls[0] + fail_calls[2], 0);
	pthread_mutex_unlock(&fail_lock);
}

/* The home cannot send the page: it ends the guest; the requester on another
 * node is released by the stop that follows. */
Test(pool, a_data_reply_that_cannot_be_sent_ends_the_guest)
{
	const uint64_t gpa = 12ull << 20; /* homed on node 0 */
	struct touch t = {.node = 2, .gpa = gpa};
	pthread_t th;

	*at(0, gpa) = 42;
	fail_sends(0, HK__COH__COH_TYPE__COH_DATA);
	pthread_create(&th, NULL, touch_thread, &t);
	expect_reason(failure_of(0), "DATA", gpa, 2);
	stop_everywhere();
	cr_assert(joined_in_time(th), "the requester stayed blocked after the stop");
}

/* A sharer cannot acknowledge an invalidation: the writer waits on the home,
 * and is released by the stop. */
Test(pool, an_inv_ack_that_cannot_be_sent_ends_the_guest)
{
	const uint64_t gpa = 12ull << 20; /* homed on node 0 */
	struct touch t = {.node = 1, .gpa = gpa, .write = true};
	pthread_t th;

	*at(0, gpa) = 42;
	cr_assert_eq(*at(1, gpa), 42);
	cr_assert_eq(*at(2, gpa), 42);
	fail_sends(2, HK__COH__COH_TYPE__COH_INV_ACK);
	pthread_create(&th, NULL, touch_thread, &t);
	expect_reason(failure_of(2), "INV_ACK", gpa, 0);
	stop_everywhere();
	cr_assert(joined_in_time(th), "the writer stayed blocked after the stop");
}

/* The owner cannot answer a fetch (and, for a write, already dropped the
 * page): it ends the guest. */
Test(pool, a_fetch_reply_that_cannot_be_sent_ends_the_guest)
{
	const uint64_t gpa = 12ull << 20; /* homed on node 0 */
	struct touch t = {.node = 2, .gpa = gpa, .write = true};
	pthread_t th;

	*at(1, gpa) = 42; /* node 1 owns it */
	fail_sends(1, HK__COH__COH_TYPE__COH_FETCH_REPLY);
	pthread_create(&th, NULL, touch_thread, &t);
	expect_reason(failure_of(1), "FETCH_REPLY", gpa, 0);
	stop_everywhere();
	cr_assert(joined_in_time(th), "the writer stayed blocked after the stop");
}

/* An eviction whose message cannot leave keeps the page: nothing ends, and
 * the data stays right once the transport works again. */
Test(pool_small, an_eviction_that_cannot_be_sent_keeps_the_page)
{
	struct hk_pool_stats st;

	for (uint64_t gpa = 0; gpa < GUEST; gpa += 4096)
		*at(0, gpa) = pattern(gpa, 5);
	for (uint64_t gpa = 0; gpa < GUEST; gpa += 4096) /* shared copies on node 1 */
		cr_assert_eq(*at(1, gpa), pattern(gpa, 5));
	fail_sends(1, HK__COH__COH_TYPE__COH_EVICT);
	for (uint64_t gpa = 0; gpa < GUEST; gpa += 4096)
		cr_assert_eq(*at(1, gpa), pattern(gpa, 5));
	hk_mem_pool_stats(nodes[1].mem, &st);
	cr_assert_gt(st.resident_pages, st.budget_pages, "nothing was kept for a failed EVICT");
	atomic_store(&fail_type, -1);
	for (uint64_t gpa = 0; gpa < GUEST; gpa += 4096) {
		*at(2, gpa) = pattern(gpa, 6); /* invalidates node 1's copies */
		cr_assert_eq(*at(1, gpa), pattern(gpa, 6));
	}
	pthread_mutex_lock(&fail_lock);
	cr_assert_eq(fail_calls[0] + fail_calls[1] + fail_calls[2], 0);
	pthread_mutex_unlock(&fail_lock);
}

/* ---- a node that waits for one page keeps the others it just got --------- */

#define WAIT_HOLD_MS 100ull /* HK_POOL_HOLD_US below; a turn is 8 holds */

static void wait_setup(void)
{
	setenv("HK_POOL_HOLD_US", "100000", 1);
	pool_setup(NODE_MEM);
	unsetenv("HK_POOL_HOLD_US");
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void sleep_until_ms(uint64_t t)
{
	while (now_ms() < t) {
		struct timespec ts = {0, 1000000};

		nanosleep(&ts, NULL);
	}
}

/* The start of `node`'s turn to keep pages while it waits (wall clock). */
static void wait_for_turn(unsigned node)
{
	const uint64_t turn_ns = 8 * WAIT_HOLD_MS * 1000000;

	for (;;) {
		struct timespec ts;
		uint64_t now;

		clock_gettime(CLOCK_REALTIME, &ts);
		now = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
		if ((now / turn_ns) % NODES == node && now % turn_ns < 20000000)
			return;
		ts = (struct timespec){0, 2000000};
		nanosleep(&ts, NULL);
	}
}

struct timed_touch {
	struct touch t;
	uint64_t done_ms;
};

static void *timed_touch_thread(void *arg)
{
	struct timed_touch *tt = arg;

	touch_thread(&tt->t);
	tt->done_ms = now_ms();
	return NULL;
}

TestSuite(pool_wait, .init = wait_setup, .fini = teardown);

/*
 * The two-page livelock of guest page walks, slowed down: node 1 holds A
 * and waits for B, which node 2 holds a little longer; node 2 then asks for
 * A.  A's own hold ends before B comes, but node 1 (in its turn) keeps A
 * until it has B: the step that needed both can finish.
 */
Test(pool_wait, a_waiting_node_keeps_the_pages_it_just_got)
{
	const uint64_t a = 4ull << 20, b = 12ull << 20; /* both homed on node 0 */
	struct timed_touch need_b = {.t = {.node = 1, .gpa = b, .write = true}};
	struct timed_touch need_a = {.t = {.node = 2, .gpa = a, .write = true}};
	pthread_t t1, t2;
	uint64_t t0;

	wait_for_turn(1);
	t0 = now_ms();
	*at(1, a) = 1; /* A arrives on node 1: held until t0 + 100 ms */
	sleep_until_ms(t0 + 60);
	*at(2, b) = 2; /* B arrives on node 2: held until t0 + 160 ms */
	sleep_until_ms(t0 + 70);
	pthread_create(&t1, NULL, timed_touch_thread, &need_b); /* node 1 waits for B */
	sleep_until_ms(t0 + 80);
	pthread_create(&t2, NULL, timed_touch_thread, &need_a); /* node 2 asks for A */
	cr_assert(joined_in_time(t1), "node 1 never got B");
	cr_assert(joined_in_time(t2), "node 2 never got A");
	cr_assert_gt(need_a.done_ms, need_b.done_ms,
		     "A left node 1 (at +%llu ms) before B came (at +%llu ms)",
		     (unsigned long long)(need_a.done_ms - t0),
		     (unsigned long long)(need_b.done_ms - t0));
	cr_assert_eq(*at(0, a), 0x77);
	cr_assert_eq(*at(0, b), 0x77);
}

/* ---- pages a device transfer pinned stay on its node ---------------------- */

static int pin(unsigned node, uint64_t gpa, uint64_t len)
{
	struct hk_mem_range r = {gpa, len};

	return hk_mem_pin(nodes[node].mem, &r, 1);
}

static void unpin(unsigned node, uint64_t gpa, uint64_t len)
{
	struct hk_mem_range r = {gpa, len};

	hk_mem_unpin(nodes[node].mem, &r, 1);
}

static bool exclusive_on(unsigned node, uint64_t gpa)
{
	struct hk_mem *mem = nodes[node].mem;

	return hk_mem_page_flags(mem, hk_mem_frame(mem, gpa)) & HK_PG_EXCL;
}

/* Another node writes next to the pinned word, then reads the pinned one. */
struct poke {
	unsigned node;
	uint64_t gpa;
	uint64_t seen;
};

static void *poke_thread(void *arg)
{
	struct poke *k = arg;

	*at(k->node, k->gpa + 8) = 0xb0b0;
	k->seen = *at(k->node, k->gpa);
	return NULL;
}

/* Still running ms milliseconds after it was started (it waits on a pin). */
static bool still_blocked(pthread_t t, unsigned ms)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_nsec += (long)ms * 1000000;
	ts.tv_sec += ts.tv_nsec / 1000000000;
	ts.tv_nsec %= 1000000000;
	return pthread_timedjoin_np(t, NULL, &ts) == ETIMEDOUT;
}

/*
 * Node 0 pins a page node 1 owns (and homes): it comes over with its data
 * and stays exclusive on node 0.  Node 1's write waits until the unpin, then
 * sees what node 0 wrote meanwhile, as a disk read into the page would.
 */
Test(pool, a_pinned_page_stays_until_unpinned)
{
	const uint64_t gpa = 30ull << 20; /* homed on node 1 */
	struct poke k = {.node = 1, .gpa = gpa};
	struct hk_pool_stats st;
	pthread_t th;

	*at(1, gpa) = pattern(gpa, 1);
	cr_assert_eq(pin(0, gpa, HK_PAGE_SIZE), 0);
	cr_assert(exclusive_on(0, gpa), "pinned but not exclusive on node 0");
	cr_assert(!exclusive_on(1, gpa));
	cr_assert_eq(*at(0, gpa), pattern(gpa, 1), "the pin lost the page's data");
	hk_mem_pool_stats(nodes[0].mem, &st);
	cr_assert_eq(st.pins, 1);
	cr_assert_geq(st.pin_retries, 1, "the page was not faulted in first");

	*at(0, gpa) = pattern(gpa, 2); /* the "transfer" */
	pthread_create(&th, NULL, poke_thread, &k);
	if (still_blocked(th, 200) == false) {
		stop_everywhere();
		cr_assert_fail("node 1 wrote a page pinned on node 0");
	}
	cr_assert(exclusive_on(0, gpa), "the page left node 0 while pinned");
	cr_assert_eq(*at(0, gpa), pattern(gpa, 2));

	unpin(0, gpa, HK_PAGE_SIZE);
	cr_assert(joined_in_time(th), "node 1's write stayed blocked after the unpin");
	cr_assert_eq(k.seen, pattern(gpa, 2), "node 1 did not see node 0's transfer");
	for (unsigned n = 0; n < NODES; n++)
		cr_assert_eq(*at(n, gpa + 8), 0xb0b0, "node %u", n);
	hk_mem_pool_stats(nodes[0].mem, &st);
	cr_assert_gt(st.pin_waits, 0, "the fetch was never put off");
	cr_assert_eq(st.bad_msgs, 0);
}

/*
 * The home pins its own page: another node's request waits at the home.
 * Pins count: the page stays until the last of two pins goes.
 */
Test(pool, a_page_pinned_twice_at_its_home_stays_until_both_unpin)
{
	const uint64_t gpa = 12ull << 20; /* homed on node 0 */
	struct poke k = {.node = 2, .gpa = gpa};
	pthread_t th;

	*at(1, gpa) = pattern(gpa, 3); /* node 1 owns it; the pin fetches it home */
	cr_assert_eq(pin(0, gpa, 16), 0);
	cr_assert_eq(pin(0, gpa + 100, 16), 0);
	cr_assert(exclusive_on(0, gpa));
	*at(0, gpa) = pattern(gpa, 4);
	pthread_create(&th, NULL, poke_thread, &k);
	if (!still_blocked(th, 200)) {
		stop_everywhere();
		cr_assert_fail("node 2 wrote a page pinned at its home");
	}
	unpin(0, gpa, 16);
	if (!still_blocked(th, 200)) {
		stop_everywhere();
		cr_assert_fail("one unpin of two released the page");
	}
	unpin(0, gpa + 100, 16);
	cr_assert(joined_in_time(th), "node 2's write stayed blocked after the unpins");
	cr_assert_eq(k.seen, pattern(gpa, 4));
	cr_assert_eq(*at(0, gpa + 8), 0xb0b0);
}

/* Ranges over three homes and page boundaries: every page comes, or none. */
Test(pool, pinning_several_ranges_makes_every_page_exclusive)
{
	const struct hk_mem_range r[3] = {
	    {(12ull << 20) + 4000, 200},	   /* two pages homed on node 0 */
	    {30ull << 20, 3 * HK_PAGE_SIZE},	   /* three on node 1 */
	    {(50ull << 20) + 8, HK_PAGE_SIZE - 8}, /* one on node 2 */
	};

	for (unsigned i = 0; i < 3; i++)
		for (uint64_t off = 0; off < r[i].len; off += 8)
			*at(1 + i % 2, (r[i].gpa + off) & ~7ull) = pattern(r[i].gpa + off, 7);
	cr_assert_eq(hk_mem_pin(nodes[0].mem, r, 3), 0);
	for (unsigned i = 0; i < 3; i++)
		for (uint64_t off = 0; off < r[i].len; off += 8) {
			uint64_t gpa = (r[i].gpa + off) & ~7ull;

			cr_assert(exclusive_on(0, gpa), "gpa 0x%llx", (unsigned long long)gpa);
			cr_assert_eq(*at(0, gpa), pattern(r[i].gpa + off, 7));
		}
	hk_mem_unpin(nodes[0].mem, r, 3);
	cr_assert_eq(*at(2, r[1].gpa), pattern(r[1].gpa, 7)); /* movable again */
}

/* A range outside guest memory is refused whole: nothing is pinned. */
Test(pool, pinning_a_range_outside_memory_is_refused)
{
	const struct hk_mem_range r[2] = {{12ull << 20, 64},
					  {GUEST - HK_PAGE_SIZE, 2 * HK_PAGE_SIZE}};
	struct hk_pool_stats st;

	cr_assert_eq(hk_mem_pin(nodes[0].mem, r, 2), -EFAULT);
	cr_assert_eq(pin(0, GUEST, HK_PAGE_SIZE), -EFAULT);
	cr_assert_eq(pin(0, UINT64_MAX - 8, 16), -EFAULT);
	cr_assert_eq(pin(0, 12ull << 20, 0), -EFAULT);
	hk_mem_pool_stats(nodes[0].mem, &st);
	cr_assert_eq(st.pins, 0);
	cr_assert_eq(st.pin_retries, 0, "a page was faulted in for a refused pin");
	*at(1, 12ull << 20) = 5; /* not pinned: moves at once */
	cr_assert_eq(*at(2, 12ull << 20), 5);
}

/* Once coherence stopped, a device cannot count on its pages: no pin. */
Test(pool, pinning_after_an_abort_is_refused)
{
	const uint64_t gpa = 30ull << 20;

	*at(1, gpa) = 9;
	stop_everywhere();
	cr_assert_eq(pin(0, gpa, HK_PAGE_SIZE), -ECONNABORTED);
	cr_assert_eq(pin(1, gpa, HK_PAGE_SIZE), -ECONNABORTED);
}

/* Over budget, eviction passes a pinned page by and gives the others back. */
Test(pool_small, a_pinned_page_is_not_evicted)
{
	const uint64_t gpa = 4ull << 20; /* homed on node 0 */
	struct hk_pool_stats st;

	*at(0, gpa) = pattern(gpa, 8);
	cr_assert_eq(pin(1, gpa, HK_PAGE_SIZE), 0);
	for (uint64_t g = 0; g < GUEST; g += 4096)
		*at(1, g + 8) = pattern(g, 9);
	hk_mem_pool_stats(nodes[1].mem, &st);
	cr_assert_gt(st.evictions, 1000, "64 MiB written on a node of 24 MiB must evict");
	cr_assert_leq(st.resident_pages, st.budget_pages + 64);
	cr_assert(exclusive_on(1, gpa), "the pinned page was evicted");
	cr_assert_eq(*at(1, gpa), pattern(gpa, 8));
	unpin(1, gpa, HK_PAGE_SIZE);
	for (uint64_t g = 0; g < GUEST; g += 4096)
		*at(1, g + 16) = pattern(g, 10); /* evicts again: now the page may go */
	cr_assert_eq(*at(0, gpa), pattern(gpa, 8));
	cr_assert_eq(*at(0, gpa + 8), pattern(gpa, 9));
	cr_assert_eq(*at(0, gpa + 16), pattern(gpa, 10));
}
