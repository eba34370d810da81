/*
 * node/cluster.c over shm under concurrent load: two nodes in this
 * process, three sender threads per node, every 97th message a full
 * HK_CLUSTER_MSG_MAX, and the receive callback answering every 7th from
 * the progress thread.  The senders outrun the posted receives, so most
 * messages arrive before a receive waits for them ("unexpected"): with
 * libfabric 1.17 shm those were never matched, a per-peer sequence gap
 * stalled both nodes within a few hundred messages and after 5 s each
 * declared the other down (see shm_prime_rx in node/fabric.c).  A stall
 * fails the test after STALL_MS without progress, not at the deadline.
 */
#include "node_test.h"
#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <rdma/fi_errno.h>

#include "cluster.h"

#define NODES	   2
#define THREADS	   3
#define MSGS	   4000 /* per sender thread */
#define BIG_EVERY  97
#define PONG_EVERY 7
#define JOIN_MS	   8000
#define STALL_MS   3000	 /* no message delivered for this long: stalled */
#define LIMIT_MS   30000 /* the whole exchange */

struct msg_hdr {
	uint32_t seq;
	uint8_t thread, pong;
};

struct node {
	struct hk_cluster *c;
	unsigned idx;
	int join_ret;
	char err[256];
	uint32_t next_seq[THREADS]; /* progress thread only */
	atomic_uint got, bad, pongs, downs;
	char bad_msg[256];
};

static struct node nodes[NODES];
static struct hk_config cfg;

static void teardown(void)
{
	for (unsigned i = 0; i < NODES; i++) {
		hk_cluster_destroy(nodes[i].c);
		nodes[i].c = NULL;
	}
}
#undef NODE_TEST_AFTER
#define NODE_TEST_AFTER() teardown()

static size_t msg_len(uint32_t seq)
{
	return seq % BIG_EVERY == 0 ? HK_CLUSTER_MSG_MAX : sizeof(struct msg_hdr) + 8 + seq % 200;
}

static uint8_t fill_byte(uint32_t seq, unsigned thread, size_t k)
{
	return (uint8_t)(seq * 131 + thread * 17 + k * 7);
}

static void on_msg(void *ctx, unsigned from, const void *buf, size_t len)
{
	struct node *n = ctx;
	const uint8_t *b = buf;
	struct msg_hdr h;

	memcpy(&h, buf, sizeof(h));
	if (h.pong) {
		atomic_fetch_add(&n->pongs, 1);
		return;
	}
	if (h.thread >= THREADS || h.seq != n->next_seq[h.thread] || len != msg_len(h.seq) ||
	    b[len - 1] != fill_byte(h.seq, h.thread, len - 1)) {
		if (!atomic_fetch_add(&n->bad, 1))
			snprintf(n->bad_msg, sizeof(n->bad_msg),
				 "node %u: thread %u seq %u (want %u), %zu bytes", n->idx, h.thread,
				 h.seq, h.thread < THREADS ? n->next_seq[h.thread] : 0, len);
		if (h.thread >= THREADS)
			return;
	}
	n->next_seq[h.thread] = h.seq + 1;
	atomic_fetch_add(&n->got, 1);
	if (h.seq % PONG_EVERY == 0) {
		/* answered from the progress thread, as the coherence protocol does */
		struct msg_hdr r = {.seq = h.seq, .thread = h.thread, .pong = 1};
		int ret = hk_cluster_send(n->c, from, HK_MSG_GUEST, &r, sizeof(r));

		if (ret && !atomic_fetch_add(&n->bad, 1))
			snprintf(n->bad_msg, sizeof(n->bad_msg), "reply from a callback: %d", ret);
	}
}

static void on_peer(void *ctx, unsigned node, bool up, const char *why)
{
	struct node *n = ctx;

	if (!up) {
		if (!atomic_fetch_add(&n->downs, 1))
			snprintf(n->bad_msg, sizeof(n->bad_msg), "node %u saw %u go down: %s",
				 n->idx, node, why);
	}
}

struct sender {
	unsigned node, thread;
};

static void *sender_main(void *arg)
{
	struct sender *s = arg;
	struct node *n = &nodes[s->node];
	uint8_t *buf = malloc(HK_CLUSTER_MSG_MAX);

	cr_assert_not_null(buf);
	for (uint32_t seq = 0; seq < MSGS && !atomic_load(&n->downs); seq++) {
		struct msg_hdr h = {.seq = seq, .thread = (uint8_t)s->thread};
		size_t len = msg_len(seq);
		int ret;

		memcpy(buf, &h, sizeof(h));
		for (size_t k = sizeof(h); k < len; k++)
			buf[k] = fill_byte(seq, s->thread, k);
		while ((ret = hk_cluster_send(n->c, 1 - s->node, HK_MSG_COH, buf, len)) == -ENOBUFS)
			usleep(100);
		if (ret) {
			if (!atomic_fetch_add(&n->bad, 1))
				snprintf(n->bad_msg, sizeof(n->bad_msg), "send %u: %d", seq, ret);
			break;
		}
	}
	free(buf);
	return NULL;
}

static void *join_main(void *arg)
{
	struct node *n = arg;

	n->join_ret = hk_cluster_join(n->c, JOIN_MS, n->err, sizeof(n->err));
	return NULL;
}

NODE_TEST(cluster_shm, threaded_senders_full_size_no_stall)
{
	const unsigned want = THREADS * MSGS, want_pongs = THREADS * ((MSGS - 1) / PONG_EVERY + 1);
	pthread_t join[NODES], senders[NODES][THREADS];
	struct sender args[NODES][THREADS];
	uint64_t t0, last_change, deadline;
	unsigned last = 0;
	int ret;

	memset(&cfg, 0, sizeof(cfg));
	snprintf(cfg.path, sizeof(cfg.path), "test-hk.conf");
	snprintf(cfg.cluster_name, sizeof(cfg.cluster_name), "s%d", (int)getpid());
	snprintf(cfg.provider, sizeof(cfg.provider), "shm");
	cfg.vcpus = 2;
	cfg.n_nodes = NODES;
	for (unsigned i = 0; i < NODES; i++) {
		snprintf(cfg.nodes[i].name, sizeof(cfg.nodes[i].name), "n%u", i + 1);
		snprintf(cfg.nodes[i].address, sizeof(cfg.nodes[i].address), "127.0.0.1:%u",
			 node_free_port());
		cfg.nodes[i].memory = 256ull << 20;
	}
	for (unsigned i = 0; i < NODES; i++) {
		memset(&nodes[i], 0, sizeof(nodes[i]));
		nodes[i].idx = i;
		ret = hk_cluster_create(&cfg, i, &nodes[i].c, nodes[i].err, sizeof(nodes[i].err));
		if (ret == -FI_ENODATA && i == 0) {
			teardown();
			cr_skip_test("no shm provider on this host");
			return;
		}
		cr_assert_eq(ret, 0, "create node %u: %s", i, nodes[i].err);
		hk_cluster_on(nodes[i].c, HK_MSG_COH, on_msg, &nodes[i]);
		hk_cluster_on(nodes[i].c, HK_MSG_GUEST, on_msg, &nodes[i]);
		hk_cluster_on_peer(nodes[i].c, on_peer, &nodes[i]);
	}
	for (unsigned i = 0; i < NODES; i++)
		cr_assert_eq(pthread_create(&join[i], NULL, join_main, &nodes[i]), 0);
	for (unsigned i = 0; i < NODES; i++) {
		pthread_join(join[i], NULL);
		cr_assert_eq(nodes[i].join_ret, 0, "join node %u: %s", i, nodes[i].err);
	}

	t0 = last_change = node_now_ns();
	deadline = t0 + LIMIT_MS * 1000000ull;
	for (unsigned i = 0; i < NODES; i++)
		for (unsigned k = 0; k < THREADS; k++) {
			args[i][k] = (struct sender){.node = i, .thread = k};
			cr_assert_eq(pthread_create(&senders[i][k], NULL, sender_main, &args[i][k]),
				     0);
		}
	for (;;) {
		unsigned sum = 0, pongs = 0, bad = 0;
		uint64_t now = node_now_ns();

		for (unsigned i = 0; i < NODES; i++) {
			sum += atomic_load(&nodes[i].got);
			pongs += atomic_load(&nodes[i].pongs);
			bad += atomic_load(&nodes[i].bad) + atomic_load(&nodes[i].downs);
		}
		if (bad || (sum == NODES * want && pongs == NODES * want_pongs))
			break;
		if (sum + pongs != last) {
			last = sum + pongs;
			last_change = now;
		}
		if (now - last_change > STALL_MS * 1000000ull || now > deadline)
			break;
		usleep(5000);
	}
	for (unsigned i = 0; i < NODES; i++) {
		struct hk_cluster_peer p[NODES];

		hk_cluster_peers(nodes[i].c, p, NODES);
		cr_log_info("node %u: got %u of %u, pongs %u of %u; sent %" PRIu64 " recv %" PRIu64
			    " to/from its peer",
			    i, atomic_load(&nodes[i].got), want, atomic_load(&nodes[i].pongs),
			    want_pongs, p[1 - i].msgs_sent, p[1 - i].msgs_recv);
	}
	for (unsigned i = 0; i < NODES; i++) {
		cr_assert_eq(atomic_load(&nodes[i].bad), 0, "%s", nodes[i].bad_msg);
		cr_assert_eq(atomic_load(&nodes[i].downs), 0, "%s", nodes[i].bad_msg);
		cr_assert_eq(atomic_load(&nodes[i].got), want,
			     "node %u: %u of %u messages delivered, none for %d ms (stalled)", i,
			     atomic_load(&nodes[i].got), want, STALL_MS);
		cr_assert_eq(atomic_load(&nodes[i].pongs), want_pongs);
	}
	for (unsigned i = 0; i < NODES; i++)
		for (unsigned k = 0; k < THREADS; k++)
			pthread_join(senders[i][k], NULL);
	cr_log_info("shm: %u nodes x %u threads x %u messages (1 in %u of %u bytes) in order in "
		    "%.2f s",
		    NODES, THREADS, MSGS, BIG_EVERY, HK_CLUSTER_MSG_MAX,
		    (node_now_ns() - t0) / 1e9);
}
