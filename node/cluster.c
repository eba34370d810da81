/*
 * Cluster membership and ordered node-to-node messages over one libfabric
 * RDM endpoint (node/fabric.c).  See cluster.h for the contract.
 *
 * Threads: one progress thread drives the fabric endpoint (FI_THREAD_DOMAIN:
 * every fabric call is made under c->fab_lock, which the progress thread
 * holds except while it sleeps).  hk_cluster_send, from another thread,
 * posts the message itself when the endpoint is free and nothing is queued
 * to that peer ("direct send"): it reaps its own send completion and wakes
 * the progress thread only if something else turned up or the send did not
 * complete at once.  Otherwise it appends a copy to the peer's queue under
 * c->lock and wakes the progress thread through an eventfd.  The progress
 * thread splices queues, posts sends, reads completions, runs callbacks
 * (without c->lock held), and sleeps in hk_fabric_wait when idle; a send
 * from one of its callbacks only queues (no eventfd write: the same pass
 * posts it).
 *
 * Why direct sends: on a remote page fault the fault thread's request used
 * to wait for an eventfd write, a wake-up of the sleeping progress thread
 * and its pass over the queues (~35 us of CPU on a shared 2-vCPU host, on
 * the critical path) before it left; see docs/benchmarks.md, P3.
 * With HK_CLUSTER_SPIN_US set (default off), after any completion or post
 * it keeps polling the CQ (yielding between polls) that long before it
 * sleeps: a reply usually comes within one round trip, and catching it by
 * polling saves the wake-ups (CQ fd, then the thread).  While it spins,
 * senders skip the eventfd: the loop looks at the queues on every pass.
 *
 * Wire format, version 1: one tagged send per message.  The 64-bit tag is
 * the fixed header
 *     63..48 magic 0x484b ("HK")   47..44 version   43..40 class
 *     39..32 sender's node index   31..0  per-pair sequence number
 * and the message length is libfabric's.  Class HK_MSG_CLUSTER carries an
 * Hk__Cluster__ClusterMsg (proto/cluster.proto); other classes carry the
 * owner's bytes.  The sequence number lets the receiver deliver in send
 * order even if a provider completed receives out of order (e.g. an eager
 * message overtaking a segmented one); each peer's numbering is taken up at
 * the first Hello we accept from it, since Hellos sent before we listened
 * were lost with their connection.  Nothing is sent twice, so a gap still
 * open after HK_CLUSTER_DOWN_MS is a lost message: the peer is declared
 * down naming it, instead of its later messages piling up undelivered.
 */
#include "cluster.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <rdma/fi_errno.h>
#include <xxhash.h>

#include "cluster.pb-c.h"
#include "fabric.h"

#define TAG_MAGIC	0x484bull
#define RX_BUFS		32	      /* receive buffers of HK_CLUSTER_MSG_MAX posted at once */
#define HELLO_RESEND_NS 1000000000ull /* a Hello still in flight is sent again after 1 s */
#define LEAVE_FLUSH_NS	200000000ull  /* how long destroy lets Byes go out */
#define DROP_LOG_MAX	100	      /* log lines for dropped messages per cluster */
#define CLUSTER_ERR_LEN 256
#define PROGRESS_BATCH	HK_FABRIC_CQ_BATCH
#define HANDOFF_MAX	HK_FABRIC_CQ_BATCH
#define EAGAIN_RETRY_MS 1 /* a post got -FI_EAGAIN: look again this soon */
/* Default of HK_CLUSTER_SPIN_US: off.  On a host whose cores are all busy a
 * polling thread loses the wake-up preemption a sleeping one gets: with a
 * busy-waiting caller beside it, test-node-cluster's round trip went from
 * ~100 us to ~4 ms (a scheduler tick); see docs/benchmarks.md, P3.  Turn it
 * on where the progress thread has a core to itself.  SPIN_US_MAX bounds
 * what the variable may ask for. */
#define SPIN_US_DFLT 0
#define SPIN_US_MAX  100000
/* Sends posted to one peer and not completed.  ofi_rxm takes every post it
 * is given and allocates (and clears) a bounce buffer per post: thousands
 * posted at once kept the progress thread inside libfabric for seconds,
 * long enough for peers to declare it dead.  The rest waits in our queue. */
#define SEND_WINDOW 32

static inline uint64_t make_tag(unsigned cls, unsigned from, uint32_t seq)
{
	return TAG_MAGIC << 48 | (uint64_t)HK_CLUSTER_PROTO_VERSION << 44 | (uint64_t)cls << 40 |
	       (uint64_t)from << 32 | seq;
}

/* A message on its way out: queued, pending on the progress thread, posted. */
struct cl_msg {
	struct cl_msg *next, *prev; /* queue, or the inflight list once posted */
	unsigned peer;
	uint64_t tag;
	bool while_up; /* posted while the peer was up: a failure means it is down */
	bool hello;
	struct hk_fabric_mr mr; /* only when the provider wants local MRs */
	size_t len;
	uint8_t data[];
};

/* A message that arrived ahead of its turn (sequence gap), kept in order. */
struct cl_held {
	struct cl_held *next;
	uint32_t seq;
	unsigned cls;
	size_t len;
	uint8_t data[];
};

struct cl_peer {
	struct hk_cluster_peer pub; /* stats and up: under c->lock */
	fi_addr_t fa;
	bool inserted;		   /* fa is valid; else insert when the scheme says ready */
	char fnode[256], fsvc[32]; /* its address in the provider's terms */
	/* membership, written by the progress thread under c->lock */
	bool accepted; /* we took its Hello: its messages are delivered */
	bool answered; /* it acknowledged ours with the same digest: up */
	bool down;
	bool mismatch;
	uint64_t their_digest;
	/* sender side: queue under c->lock, pending list under c->fab_lock */
	struct cl_msg *q_head, *q_tail;
	size_t q_bytes;
	uint32_t tx_seq;
	struct cl_msg *p_head, *p_tail;
	/* receiver side, progress thread only */
	uint32_t rx_next;
	struct cl_held *held;
	unsigned n_held;
	uint64_t gap_since_ns; /* last in-order delivery while messages are held */
	/* Hellos posted and not completed: c->fab_lock (a direct send may
	 * reap their completions) */
	unsigned hello_inflight;
	uint64_t hello_sent_ns;
	unsigned inflight; /* posted, not completed (SEND_WINDOW); c->fab_lock */
};

struct cl_rx {
	uint8_t *buf;
};

struct hk_cluster {
	unsigned self, n;
	const struct cl_addr_scheme *scheme;
	char cluster_name[HK_NAME_MAX];
	uint64_t digest;
	struct hk_fabric *fab;
	int efd; /* eventfd: wakes the progress thread */
	pthread_t thread;
	bool thread_started;

	pthread_mutex_t lock;
	pthread_cond_t cond; /* join waits on it; CLOCK_MONOTONIC */
	bool wake_pending;   /* an eventfd write is outstanding */
	bool joining, leaving;
	struct cl_peer peers[HK_MAX_NODES];

	struct {
		hk_cluster_recv_fn fn;
		void *ctx;
	} on[HK_MSG_CLASSES];
	hk_cluster_peer_fn on_peer;
	void *on_peer_ctx;

	/* the endpoint and what is posted on it: see the top of the file */
	pthread_mutex_t fab_lock;
	struct cl_msg *inflight; /* posted sends, doubly linked */
	unsigned n_inflight;
	/* completions a direct send read that are the progress thread's work */
	struct hk_fabric_cqe handoff[HANDOFF_MAX];
	unsigned n_handoff;

	/* progress thread only */
	bool again; /* a callback queued a message after this pass drained */
	struct cl_rx rx[RX_BUFS];
	uint8_t *rx_pool;
	struct hk_fabric_mr rx_mr;
	bool local_mr;
	uint64_t next_tick_ns, leave_deadline_ns;
	bool retry_soon, said_hello;
	uint64_t spin_ns;	 /* poll this long after activity before sleeping */
	uint64_t last_active_ns; /* last completion or post */
	unsigned drop_logs;
	char err[CLUSTER_ERR_LEN]; /* scratch for fabric calls on the thread */
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

__attribute__((format(printf, 3, 4))) static void seterr(char *err, size_t errlen, const char *fmt,
							 ...)
{
	va_list ap;

	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* One stderr line per dropped message, up to DROP_LOG_MAX per cluster. */
__attribute__((format(printf, 2, 3))) static void drop_log(struct hk_cluster *c, const char *fmt,
							   ...)
{
	va_list ap;

	if (c->drop_logs >= DROP_LOG_MAX)
		return;
	va_start(ap, fmt);
	fputs("cluster: dropped ", stderr);
	vfprintf(stderr, fmt, ap);
	fputs(++c->drop_logs == DROP_LOG_MAX ? " (further drops not logged)\n" : "\n", stderr);
	va_end(ap);
}

/* ---- addresses: what each provider is given for a [node] ----------------- */

/*
 * A table, so a provider with its own addressing plugs in beside these.
 * resolve fills the fabric's node and service (service "" = none).
 */
struct cl_addr_scheme {
	const char *prov; /* first component of the provider name; NULL = default */
	int (*resolve)(const struct hk_config *cfg, unsigned i, char *node, size_t nlen, char *svc,
		       size_t slen);
	/* NULL, or whether a peer can be put in the AV yet (see addr_shm_ready) */
	bool (*peer_ready)(const char *node);
};

/* host:port from hk.conf; "[v6]:port" loses its brackets. */
static int addr_inet(const struct hk_config *cfg, unsigned i, char *node, size_t nlen, char *svc,
		     size_t slen)
{
	const char *a = cfg->nodes[i].address, *colon = strrchr(a, ':');
	size_t hl;

	if (!colon || colon == a)
		return -EINVAL;
	hl = (size_t)(colon - a);
	if (a[0] == '[' && hl >= 2 && a[hl - 1] == ']') {
		a++;
		hl -= 2;
	}
	if (hl >= nlen || strlen(colon + 1) >= slen)
		return -ENAMETOOLONG;
	memcpy(node, a, hl);
	node[hl] = '\0';
	strcpy(svc, colon + 1);
	return 0;
}

/* shm endpoints are names in /dev/shm, one namespace per host. */
static int addr_shm(const struct hk_config *cfg, unsigned i, char *node, size_t nlen, char *svc,
		    size_t slen)
{
	int n = snprintf(node, nlen, "hk-%s-%s", cfg->cluster_name, cfg->nodes[i].name);

	svc[0] = '\0';
	return n < 0 || (size_t)n >= nlen ? -ENAMETOOLONG : 0;
}

/*
 * libfabric 1.17's shm AV gave the same fi_addr to two peers whose regions
 * did not exist yet (so node 1's messages for node 3 went to node 2): a
 * peer is inserted only once its /dev/shm file is there.
 */
static bool addr_shm_ready(const char *node)
{
	char path[300];

	snprintf(path, sizeof(path), "/dev/shm/%s", node);
	return access(path, F_OK) == 0;
}

static const struct cl_addr_scheme addr_schemes[] = {
    {.prov = "shm", .resolve = addr_shm, .peer_ready = addr_shm_ready},
    {.prov = NULL, .resolve = addr_inet},
};

static const struct cl_addr_scheme *addr_scheme(const char *provider)
{
	const struct cl_addr_scheme *s = addr_schemes;
	size_t first = strcspn(provider, ";");

	for (; s->prov; s++)
		if (strlen(s->prov) == first && !strncmp(provider, s->prov, first))
			break;
	return s;
}

static int peer_insert(struct hk_cluster *c, struct cl_peer *p, char *err, size_t errlen)
{
	int ret = hk_fabric_insert_addr(c->fab, p->fnode, p->fsvc[0] ? p->fsvc : NULL, &p->fa, err,
					errlen);

	p->inserted = ret == 0;
	return ret;
}

/* ---- the digest every node must agree on --------------------------------- */

static uint64_t config_digest(const struct hk_config *cfg)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	uint64_t d;

	if (!f)
		return 0;
	/* Canonical text, version 1: one "key=value" per line, nodes in file order. */
	fprintf(f,
		"hk-cluster-digest 1\ncluster=%s\nprovider=%s\nguest_memory=%" PRIu64
		"\nvcpus=%u\nnodes=%u\n",
		cfg->cluster_name, cfg->provider, hk_config_guest_memory(cfg), cfg->vcpus,
		cfg->n_nodes);
	for (unsigned i = 0; i < cfg->n_nodes; i++)
		fprintf(f, "node=%s address=%s memory=%" PRIu64 "\n", cfg->nodes[i].name,
			cfg->nodes[i].address, cfg->nodes[i].memory);
	fclose(f);
	d = XXH3_64bits(text, len);
	free(text);
	return d;
}

/* ---- sending ------------------------------------------------------------- */

static void wake(struct hk_cluster *c)
{
	uint64_t one = 1;

	if (write(c->efd, &one, sizeof(one)) < 0) {
		/* EAGAIN: the counter is saturated, the thread is awake anyway */
	}
}

/* The cluster whose progress thread this is, NULL on other threads. */
static __thread const struct hk_cluster *on_progress;

/*
 * Under c->lock: mark the thread as needing a wake-up; 1 when we must write.
 * On the progress thread itself (a callback sending) never: the pass drains
 * the queues after its callbacks, and c->again covers what comes later.
 * The self-wake it replaces cost an eventfd write and one more wake-up and
 * pass of the thread per reply (~15-20 us of CPU on the shared host).
 */
static int want_wake(struct hk_cluster *c)
{
	if (on_progress == c) {
		c->again = true;
		return 0;
	}
	if (c->wake_pending)
		return 0;
	c->wake_pending = true;
	return 1;
}

static void msg_free(struct hk_cluster *c, struct cl_msg *m)
{
	if (m->mr.mr)
		hk_fabric_mr_close(&m->mr);
	free(m);
}

static void list_free(struct hk_cluster *c, struct cl_msg *m)
{
	while (m) {
		struct cl_msg *next = m->next;

		msg_free(c, m);
		m = next;
	}
}

/*
 * Under c->lock: append a copy of buf to peer's queue with the next
 * sequence number.  force: also before the peer is up (Hello).
 */
static int enqueue_locked(struct hk_cluster *c, unsigned node, unsigned cls, const void *buf,
			  size_t len, bool force, struct cl_msg **out)
{
	struct cl_peer *p = &c->peers[node];
	struct cl_msg *m;

	if (p->down || (!force && !p->pub.up))
		return -ENOTCONN;
	if (p->q_bytes + len > HK_CLUSTER_QUEUE_MAX)
		return -ENOBUFS;
	m = malloc(sizeof(*m) + len);
	if (!m)
		return -ENOMEM;
	*m = (struct cl_msg){.peer = node, .len = len};
	memcpy(m->data, buf, len);
	m->tag = make_tag(cls, c->self, p->tx_seq++);
	if (p->q_tail)
		p->q_tail->next = m;
	else
		p->q_head = m;
	p->q_tail = m;
	p->q_bytes += len;
	if (out)
		*out = m;
	return 0;
}

static void inflight_add(struct hk_cluster *c, struct cl_msg *m);
static void on_send_done(struct hk_cluster *c, struct cl_msg *m, int err);
static bool is_rx(const struct hk_cluster *c, const void *ctx);

/*
 * Under c->fab_lock, after a direct send of m: one read of the CQ.  Our own
 * successful send completions are finished here; anything else (receives,
 * errors) is handed to the progress thread.  Returns 1 when the progress
 * thread must be woken: it has work, another send finished, or m has not
 * completed (rxm pushes a
 * transmit that did not leave at once only inside fi_cq_read, so someone
 * must keep polling; the progress thread naps while sends are out).
 */
static int direct_reap(struct hk_cluster *c, struct cl_msg *m)
{
	struct hk_fabric_cqe cqe[HANDOFF_MAX];
	size_t room = HANDOFF_MAX - c->n_handoff;
	bool done = false, others = false;
	int n;

	if (!room)
		return 1;
	n = hk_fabric_poll(c->fab, cqe, room, NULL, 0);
	if (n < 0)
		return 1; /* the progress thread's next poll reports it */
	for (int i = 0; i < n; i++) {
		if (!is_rx(c, cqe[i].ctx) && !cqe[i].err) {
			done = done || cqe[i].ctx == m;
			others = others || cqe[i].ctx != m;
			on_send_done(c, cqe[i].ctx, 0);
		} else {
			c->handoff[c->n_handoff++] = cqe[i];
		}
	}
	/* Another send finished: it may have opened a full window of
	 * messages the sleeping progress thread would post only at its
	 * next tick, since we took the completion its CQ fd announced. */
	return !done || others || c->n_handoff;
}

/*
 * Post buf to node from the calling thread, if the endpoint is free (the
 * progress thread is asleep) and nothing is queued to node, so the send
 * order is kept.  Returns 0 when sent (or handed to the progress thread),
 * 1 when the caller should queue it instead.
 */
static int direct_send(struct hk_cluster *c, unsigned node, unsigned cls, const void *buf,
		       size_t len)
{
	struct cl_peer *p = &c->peers[node];
	struct cl_msg *m;
	int ret, w;

	if (c->local_mr || pthread_mutex_trylock(&c->fab_lock))
		return 1;
	pthread_mutex_lock(&c->lock);
	if (c->leaving || p->down || !p->pub.up || !p->inserted || p->q_head || p->p_head ||
	    p->inflight >= SEND_WINDOW || !(m = malloc(sizeof(*m) + len))) {
		pthread_mutex_unlock(&c->lock);
		pthread_mutex_unlock(&c->fab_lock);
		return 1;
	}
	*m = (struct cl_msg){.peer = node, .len = len, .while_up = true};
	memcpy(m->data, buf, len);
	m->tag = make_tag(cls, c->self, p->tx_seq++);
	/* counted before it can be answered (undone below if not posted) */
	p->pub.msgs_sent++;
	p->pub.bytes_sent += len;
	pthread_mutex_unlock(&c->lock);

	ret = hk_fabric_try_send(c->fab, p->fa, m->tag, m->data, m->len, NULL, m, NULL, 0);
	if (ret) {
		/* -FI_EAGAIN or a failure: the progress thread posts it again
		 * (and declares the peer down if it fails there too) */
		p->p_head = p->p_tail = m;
		w = 1;
	} else {
		inflight_add(c, m);
		p->inflight++;
		/* The progress thread may be asleep on the CQ fd, armed by its
		 * own fi_trywait before our CQ read: provider work that read
		 * started and that no fd announces needs it awake. */
		w = direct_reap(c, m) || hk_fabric_trywait(c->fab);
	}
	pthread_mutex_lock(&c->lock);
	if (ret) { /* the progress thread counts it when it posts it */
		p->pub.msgs_sent--;
		p->pub.bytes_sent -= len;
	}
	w = w && want_wake(c);
	pthread_mutex_unlock(&c->lock);
	pthread_mutex_unlock(&c->fab_lock);
	if (w)
		wake(c);
	return 0;
}

int hk_cluster_send(struct hk_cluster *c, unsigned node, unsigned cls, const void *buf, size_t len)
{
	int ret, w = 0;

	if (node >= c->n || cls == HK_MSG_CLUSTER || cls >= HK_MSG_CLASSES || (!buf && len))
		return -EINVAL;
	if (len > HK_CLUSTER_MSG_MAX)
		return -EMSGSIZE;
	if (node != c->self && on_progress != c && !direct_send(c, node, cls, buf, len))
		return 0;
	pthread_mutex_lock(&c->lock);
	ret = enqueue_locked(c, node, cls, buf, len, false, NULL);
	if (!ret)
		w = want_wake(c);
	pthread_mutex_unlock(&c->lock);
	if (w)
		wake(c);
	return ret;
}

/* Pack and queue a ClusterMsg (progress thread, or join/destroy). */
static int send_cluster_msg_locked(struct hk_cluster *c, unsigned node,
				   const Hk__Cluster__ClusterMsg *msg, bool force)
{
	uint8_t buf[512];
	size_t len = hk__cluster__cluster_msg__get_packed_size(msg);
	struct cl_msg *m = NULL;
	int ret;

	if (len > sizeof(buf))
		return -EMSGSIZE;
	hk__cluster__cluster_msg__pack(msg, buf);
	ret = enqueue_locked(c, node, HK_MSG_CLUSTER, buf, len, force, &m);
	if (!ret && msg->body_case == HK__CLUSTER__CLUSTER_MSG__BODY_HELLO)
		m->hello = true;
	return ret;
}

static int send_hello_locked(struct hk_cluster *c, unsigned node, bool ack, bool agree)
{
	Hk__Cluster__Hello h = HK__CLUSTER__HELLO__INIT;
	Hk__Cluster__ClusterMsg msg = HK__CLUSTER__CLUSTER_MSG__INIT;

	h.cluster = c->cluster_name;
	h.node = c->self;
	h.name = c->peers[c->self].pub.name;
	h.version = HK_CLUSTER_PROTO_VERSION;
	h.digest = c->digest;
	h.ack = ack;
	h.agree = agree;
	msg.body_case = HK__CLUSTER__CLUSTER_MSG__BODY_HELLO;
	msg.hello = &h;
	return send_cluster_msg_locked(c, node, &msg, true);
}

static int send_ping_locked(struct hk_cluster *c, unsigned node, uint64_t sent_ns, bool reply)
{
	Hk__Cluster__Ping ping = HK__CLUSTER__PING__INIT;
	Hk__Cluster__ClusterMsg msg = HK__CLUSTER__CLUSTER_MSG__INIT;

	ping.sent_ns = sent_ns;
	ping.reply = reply;
	msg.body_case = HK__CLUSTER__CLUSTER_MSG__BODY_PING;
	msg.ping = &ping;
	return send_cluster_msg_locked(c, node, &msg, false);
}

/* ---- peers going up and down --------------------------------------------- */

static void notify_peer(struct hk_cluster *c, unsigned node, bool up, const char *why)
{
	if (c->on_peer)
		c->on_peer(c->on_peer_ctx, node, up, why);
}

static void held_free(struct cl_peer *p)
{
	while (p->held) {
		struct cl_held *h = p->held;

		p->held = h->next;
		free(h);
	}
	p->n_held = 0;
}

/* Progress thread: declare node down once, drop what was queued to it. */
__attribute__((format(printf, 3, 4))) static void mark_down(struct hk_cluster *c, unsigned node,
							    const char *fmt, ...)
{
	struct cl_peer *p = &c->peers[node];
	struct cl_msg *q;
	char why[CLUSTER_ERR_LEN];
	va_list ap;

	pthread_mutex_lock(&c->lock);
	if (p->down) {
		pthread_mutex_unlock(&c->lock);
		return;
	}
	p->down = true;
	p->pub.up = false;
	q = p->q_head;
	p->q_head = p->q_tail = NULL;
	p->q_bytes = 0;
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
	list_free(c, q);
	list_free(c, p->p_head);
	p->p_head = p->p_tail = NULL;
	held_free(p);

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	fprintf(stderr, "cluster: node %s is down: %s\n", p->pub.name, why);
	notify_peer(c, node, false, why);
}

/* ---- receiving ----------------------------------------------------------- */

static void deliver(struct hk_cluster *c, unsigned from, unsigned cls, const uint8_t *buf,
		    size_t len);

static void on_hello(struct hk_cluster *c, unsigned from, const Hk__Cluster__Hello *h, uint32_t seq)
{
	struct cl_peer *p = &c->peers[from];
	bool agree = h->version == HK_CLUSTER_PROTO_VERSION && h->digest == c->digest &&
		     h->node == from && h->name && !strcmp(h->name, p->pub.name) && h->cluster &&
		     !strcmp(h->cluster, c->cluster_name);
	bool came_up = false;
	int w = 0;

	pthread_mutex_lock(&c->lock);
	if (!c->joining) {
		/* not listening yet: our callbacks may not be set; it resends */
		pthread_mutex_unlock(&c->lock);
		return;
	}
	if (!agree || (h->ack && !h->agree)) {
		if (!p->mismatch)
			fprintf(
			    stderr,
			    "cluster: node %s has a different cluster config (digest %016" PRIx64
			    ", ours %016" PRIx64 ", version %u)\n",
			    p->pub.name, h->digest, c->digest, h->version);
		p->mismatch = true;
		p->their_digest = h->digest;
		pthread_cond_broadcast(&c->cond);
		if (!h->ack && send_hello_locked(c, from, true, false) == 0)
			w = want_wake(c);
		pthread_mutex_unlock(&c->lock);
		if (w)
			wake(c);
		return;
	}
	if (!p->accepted) {
		p->accepted = true;
		p->rx_next = seq + 1; /* its numbering starts here for us */
		/* Answer even an ack: our own Hello may have reached it before
		 * it listened, and this saves waiting for our next resend. */
		if (h->ack && send_hello_locked(c, from, true, true) == 0)
			w = want_wake(c);
	}
	if (!h->ack && send_hello_locked(c, from, true, true) == 0)
		w = want_wake(c);
	if (h->ack && !p->answered && !p->down) {
		p->answered = true;
		p->pub.up = true;
		p->pub.last_heard_ns = now_ns();
		came_up = true;
		pthread_cond_broadcast(&c->cond);
	}
	pthread_mutex_unlock(&c->lock);
	if (w)
		wake(c);
	if (came_up)
		notify_peer(c, from, true, "joined");
}

static void on_cluster_msg(struct hk_cluster *c, unsigned from, const uint8_t *buf, size_t len,
			   uint32_t seq)
{
	struct cl_peer *p = &c->peers[from];
	Hk__Cluster__ClusterMsg *msg = hk__cluster__cluster_msg__unpack(NULL, len, buf);
	int w = 0;

	if (!msg) {
		pthread_mutex_lock(&c->lock);
		p->pub.dropped++;
		pthread_mutex_unlock(&c->lock);
		drop_log(c, "cluster message from %s: %zu bytes do not unpack", p->pub.name, len);
		return;
	}
	switch (msg->body_case) {
	case HK__CLUSTER__CLUSTER_MSG__BODY_HELLO:
		on_hello(c, from, msg->hello, seq);
		break;
	case HK__CLUSTER__CLUSTER_MSG__BODY_PING:
		pthread_mutex_lock(&c->lock);
		if (msg->ping->reply) {
			uint64_t now = now_ns();

			if (msg->ping->sent_ns && msg->ping->sent_ns <= now)
				p->pub.rtt_ns = now - msg->ping->sent_ns;
		} else if (send_ping_locked(c, from, msg->ping->sent_ns, true) == 0) {
			w = want_wake(c);
		}
		pthread_mutex_unlock(&c->lock);
		if (w)
			wake(c);
		break;
	case HK__CLUSTER__CLUSTER_MSG__BODY_BYE:
		mark_down(c, from, "left the cluster (%s)",
			  msg->bye->reason && *msg->bye->reason ? msg->bye->reason : "no reason");
		break;
	default:
		drop_log(c, "cluster message from %s: unknown body %d", p->pub.name,
			 (int)msg->body_case);
		break;
	}
	hk__cluster__cluster_msg__free_unpacked(msg, NULL);
}

static void deliver(struct hk_cluster *c, unsigned from, unsigned cls, const uint8_t *buf,
		    size_t len)
{
	if (cls == HK_MSG_CLUSTER) {
		on_cluster_msg(c, from, buf, len, c->peers[from].rx_next - 1);
		return;
	}
	if (!c->on[cls].fn) {
		pthread_mutex_lock(&c->lock);
		c->peers[from].pub.dropped++;
		pthread_mutex_unlock(&c->lock);
		drop_log(c, "class %u message from %s: no receiver for the class", cls,
			 c->peers[from].pub.name);
		return;
	}
	c->on[cls].fn(c->on[cls].ctx, from, buf, len);
}

/* Keep a copy of a message that came ahead of its turn, sorted by seq. */
static void hold(struct hk_cluster *c, struct cl_peer *p, uint32_t seq, unsigned cls,
		 const uint8_t *buf, size_t len)
{
	struct cl_held *h = malloc(sizeof(*h) + len), **pp = &p->held;

	if (!h) {
		/* a gap we cannot fill would stall the peer forever */
		mark_down(c, (unsigned)(p - c->peers), "out of memory holding a message");
		return;
	}
	if (!p->held)
		p->gap_since_ns = now_ns(); /* tick() gives the gap HK_CLUSTER_DOWN_MS */
	p->n_held++;
	h->seq = seq;
	h->cls = cls;
	h->len = len;
	memcpy(h->data, buf, len);
	while (*pp && (int32_t)((*pp)->seq - seq) < 0)
		pp = &(*pp)->next;
	h->next = *pp;
	*pp = h;
}

static void on_recv(struct hk_cluster *c, const uint8_t *buf, size_t len, uint64_t tag)
{
	unsigned ver = (unsigned)(tag >> 44) & 0xf, cls = (unsigned)(tag >> 40) & 0xf;
	unsigned from = (unsigned)(tag >> 32) & 0xff;
	uint32_t seq = (uint32_t)tag;
	struct cl_peer *p;

	if (tag >> 48 != TAG_MAGIC || ver != HK_CLUSTER_PROTO_VERSION || from >= c->n ||
	    from == c->self || cls >= HK_MSG_CLASSES) {
		drop_log(c, "message with a bad header (tag %#" PRIx64 ", %zu bytes)", tag, len);
		return;
	}
	p = &c->peers[from];
	pthread_mutex_lock(&c->lock);
	p->pub.msgs_recv++;
	p->pub.bytes_recv += len;
	if (p->down) {
		p->pub.dropped++;
		pthread_mutex_unlock(&c->lock);
		return;
	}
	if (p->accepted)
		p->pub.last_heard_ns = now_ns();
	pthread_mutex_unlock(&c->lock);

	if (!p->accepted) {
		if (cls == HK_MSG_CLUSTER)
			on_cluster_msg(c, from, buf, len, seq);
		else
			drop_log(c, "class %u message from %s before its hello", cls, p->pub.name);
		return;
	}
	if (seq != p->rx_next) {
		if ((int32_t)(seq - p->rx_next) > 0)
			hold(c, p, seq, cls, buf, len);
		else
			drop_log(c, "duplicate message %u from %s (expected %u)", seq, p->pub.name,
				 p->rx_next);
		return;
	}
	p->rx_next++;
	deliver(c, from, cls, buf, len);
	while (p->held && p->held->seq == p->rx_next && !p->down) {
		struct cl_held *h = p->held;

		p->held = h->next;
		p->n_held--;
		p->rx_next++;
		deliver(c, from, h->cls, h->data, h->len);
		free(h);
	}
	if (p->held)
		p->gap_since_ns = now_ns(); /* the stream moved: a new gap starts now */
}

static int post_recv(struct hk_cluster *c, struct cl_rx *rx)
{
	int ret = hk_fabric_recv(c->fab, 0, ~0ull, rx->buf, HK_CLUSTER_MSG_MAX,
				 c->local_mr ? &c->rx_mr : NULL, rx, c->err, sizeof(c->err));

	if (ret)
		fprintf(stderr, "cluster: cannot post a receive buffer: %s\n", c->err);
	return ret;
}

/* ---- the progress thread -------------------------------------------------- */

static void inflight_add(struct hk_cluster *c, struct cl_msg *m)
{
	m->prev = NULL;
	m->next = c->inflight;
	if (c->inflight)
		c->inflight->prev = m;
	c->inflight = m;
	c->n_inflight++;
}

static void inflight_del(struct hk_cluster *c, struct cl_msg *m)
{
	if (m->prev)
		m->prev->next = m->next;
	else
		c->inflight = m->next;
	if (m->next)
		m->next->prev = m->prev;
	c->n_inflight--;
}

static void on_send_done(struct hk_cluster *c, struct cl_msg *m, int err)
{
	struct cl_peer *p = &c->peers[m->peer];

	inflight_del(c, m);
	p->inflight--;
	if (m->hello)
		p->hello_inflight--;
	/* A failure before the peer was up is a connection that was not
	 * there yet (Hello is sent again); after, the peer is gone. */
	if (err && m->while_up && err != -FI_ECANCELED)
		mark_down(c, m->peer, "send failed: %s", fi_strerror(-err));
	msg_free(c, m);
}

/* Deliver what a node queued to itself, in order. */
static int drain_self(struct hk_cluster *c)
{
	struct cl_peer *p = &c->peers[c->self];
	struct cl_msg *m;
	int n = 0;

	pthread_mutex_lock(&c->lock);
	m = p->q_head;
	p->q_head = p->q_tail = NULL;
	p->q_bytes = 0;
	pthread_mutex_unlock(&c->lock);
	while (m) {
		struct cl_msg *next = m->next;
		unsigned cls = (unsigned)(m->tag >> 40) & 0xf;

		pthread_mutex_lock(&c->lock);
		p->pub.msgs_sent++;
		p->pub.bytes_sent += m->len;
		p->pub.msgs_recv++;
		p->pub.bytes_recv += m->len;
		pthread_mutex_unlock(&c->lock);
		deliver(c, c->self, cls, m->data, m->len);
		free(m);
		m = next;
		n++;
	}
	return n;
}

/* Post what is pending for one peer, in order; stop at -FI_EAGAIN. */
static int drain_peer(struct hk_cluster *c, unsigned node)
{
	struct cl_peer *p = &c->peers[node];
	int n = 0;
	bool up;

	pthread_mutex_lock(&c->lock);
	if (p->q_head) {
		if (p->p_tail)
			p->p_tail->next = p->q_head;
		else
			p->p_head = p->q_head;
		p->p_tail = p->q_tail;
		p->q_head = p->q_tail = NULL;
		p->q_bytes = 0;
	}
	up = p->pub.up;
	pthread_mutex_unlock(&c->lock);

	if (!p->inserted) {
		/* only Hellos are queued before a peer is up: drop them, the
		 * next beat says Hello again once the peer can be reached */
		list_free(c, p->p_head);
		p->p_head = p->p_tail = NULL;
		return 0;
	}
	while (p->p_head && p->inflight < SEND_WINDOW) {
		struct cl_msg *m = p->p_head;
		int ret = 0;

		if (c->local_mr && !m->mr.mr)
			ret = hk_fabric_mr_reg(c->fab, m->data, m->len ? m->len : 1, &m->mr, c->err,
					       sizeof(c->err));
		if (!ret)
			ret = hk_fabric_try_send(c->fab, p->fa, m->tag, m->data, m->len,
						 c->local_mr ? &m->mr : NULL, m, c->err,
						 sizeof(c->err));
		if (ret == -FI_EAGAIN) {
			c->retry_soon = true;
			break;
		}
		p->p_head = m->next;
		if (!p->p_head)
			p->p_tail = NULL;
		if (ret) {
			msg_free(c, m);
			if (up) {
				mark_down(c, node, "%s", c->err);
				break;
			}
			continue; /* not up yet: the Hello is sent again */
		}
		m->while_up = up;
		if (m->hello) {
			p->hello_inflight++;
			p->hello_sent_ns = now_ns();
		}
		inflight_add(c, m);
		p->inflight++;
		pthread_mutex_lock(&c->lock);
		p->pub.msgs_sent++;
		p->pub.bytes_sent += m->len;
		pthread_mutex_unlock(&c->lock);
		n++;
	}
	return n;
}

/* Every heartbeat: Hellos while joining, pings, silence detection. */
static void tick(struct hk_cluster *c, uint64_t now)
{
	unsigned silent[HK_MAX_NODES], n_silent = 0;
	int w = 0;

	for (unsigned i = 0; i < c->n; i++) {
		struct cl_peer *p = &c->peers[i];

		if (i != c->self && !p->inserted && c->scheme->peer_ready &&
		    c->scheme->peer_ready(p->fnode) && peer_insert(c, p, c->err, sizeof(c->err)))
			fprintf(stderr, "cluster: peer %s: %s\n", p->pub.name, c->err);
	}

	pthread_mutex_lock(&c->lock);
	for (unsigned i = 0; i < c->n; i++) {
		struct cl_peer *p = &c->peers[i];

		if (i == c->self || p->down)
			continue;
		if (c->joining && !c->leaving && !p->answered && !p->mismatch &&
		    (!p->hello_inflight || now - p->hello_sent_ns > HELLO_RESEND_NS)) {
			if (send_hello_locked(c, i, false, true) == 0)
				w = 1;
		}
		if (!p->pub.up)
			continue;
		if (now - p->pub.last_heard_ns > HK_CLUSTER_DOWN_MS * 1000000ull ||
		    (p->held && now - p->gap_since_ns > HK_CLUSTER_DOWN_MS * 1000000ull))
			silent[n_silent++] = i;
		else if (send_ping_locked(c, i, now, false) == 0)
			w = 1;
	}
	pthread_mutex_unlock(&c->lock);
	(void)w; /* the caller drains queues right after */
	for (unsigned k = 0; k < n_silent; k++) {
		struct cl_peer *p = &c->peers[silent[k]];

		/* A message that has not come while later ones did was lost
		 * (nothing is sent twice): say so, rather than stall quietly. */
		if (now - p->pub.last_heard_ns <= HK_CLUSTER_DOWN_MS * 1000000ull)
			mark_down(c, silent[k],
				  "message %" PRIu32
				  " never arrived: %u later ones held for %.1f s",
				  p->rx_next, p->n_held, (double)(now - p->gap_since_ns) / 1e9);
		else
			mark_down(c, silent[k], "no message for %.1f s",
				  (double)(now - p->pub.last_heard_ns) / 1e9);
	}
}

static int queues_empty(struct hk_cluster *c)
{
	int empty = 1;

	pthread_mutex_lock(&c->lock);
	for (unsigned i = 0; i < c->n && empty; i++)
		empty = !c->peers[i].q_head && !c->peers[i].p_head;
	pthread_mutex_unlock(&c->lock);
	return empty;
}

static bool is_rx(const struct hk_cluster *c, const void *ctx)
{
	const struct cl_rx *rx = ctx;

	return rx >= c->rx && rx < c->rx + RX_BUFS;
}

/* Progress thread: act on finished receives and sends. */
static void handle_cqes(struct hk_cluster *c, const struct hk_fabric_cqe *cqe, int n)
{
	for (int i = 0; i < n; i++) {
		struct cl_rx *rx = cqe[i].ctx;

		if (is_rx(c, rx)) {
			if (cqe[i].err && cqe[i].err != -FI_ECANCELED)
				drop_log(c, "receive: %s", fi_strerror(-cqe[i].err));
			else if (!cqe[i].err)
				on_recv(c, rx->buf, cqe[i].len, cqe[i].tag);
			if (cqe[i].err != -FI_ECANCELED)
				post_recv(c, rx);
		} else {
			on_send_done(c, cqe[i].ctx, cqe[i].err);
		}
	}
}

static void *progress_main(void *arg)
{
	struct hk_cluster *c = arg;
	struct hk_fabric_cqe cqe[PROGRESS_BATCH];

	on_progress = c;
	pthread_mutex_lock(&c->fab_lock); /* released only while asleep */
	for (;;) {
		uint64_t now = now_ns();
		int work = 0, n, timeout_ms;
		bool leaving, joining;
		/* decided before the queues are looked at, so a send either is
		 * seen by this pass or writes the eventfd before we sleep */
		bool spinning = now - c->last_active_ns < c->spin_ns;

		pthread_mutex_lock(&c->lock);
		/* false: a send after this writes the eventfd again; true while
		 * spinning: the next pass sees it anyway, spare the syscall */
		c->wake_pending = spinning;
		leaving = c->leaving;
		joining = c->joining;
		pthread_mutex_unlock(&c->lock);
		if (joining && !c->said_hello) {
			c->said_hello = true;
			c->next_tick_ns = 0; /* Hello to everyone now, not at the next beat */
		}

		if (c->n_handoff) {
			/* read by a direct send; no callback adds to it meanwhile,
			 * since sends from this thread never take that path */
			n = (int)c->n_handoff;
			memcpy(cqe, c->handoff, sizeof(cqe[0]) * c->n_handoff);
			c->n_handoff = 0;
			handle_cqes(c, cqe, n);
			work += n;
		}
		n = hk_fabric_poll(c->fab, cqe, PROGRESS_BATCH, c->err, sizeof(c->err));
		if (n < 0) {
			fprintf(stderr, "cluster: completion queue: %s\n", c->err);
			n = 0;
		}
		handle_cqes(c, cqe, n);
		work += n;

		now = now_ns();
		if (now >= c->next_tick_ns) {
			c->next_tick_ns = now + HK_CLUSTER_HEARTBEAT_MS * 1000000ull;
			if (!leaving)
				tick(c, now);
		}
		c->retry_soon = false;
		c->again = false; /* callbacks from here on may queue after the drain */
		work += drain_self(c);
		for (unsigned i = 0; i < c->n; i++)
			if (i != c->self)
				work += drain_peer(c, i);

		if (leaving && ((!c->n_inflight && queues_empty(c)) || now > c->leave_deadline_ns))
			break;
		if (work || c->again) {
			c->last_active_ns = now;
			continue;
		}
		if (spinning && !leaving) {
			/* let a thread this node is waiting for (the faulting
			 * reader, the fault thread) have the CPU first, and
			 * the endpoint for a direct send */
			pthread_mutex_unlock(&c->fab_lock);
			sched_yield();
			pthread_mutex_lock(&c->fab_lock);
			continue;
		}
		timeout_ms = (int)((c->next_tick_ns - now) / 1000000) + 1;
		if (c->retry_soon || leaving)
			timeout_ms = EAGAIN_RETRY_MS;
		if (hk_fabric_wait(c->fab, c->efd, timeout_ms)) {
			uint64_t v;

			if (read(c->efd, &v, sizeof(v)) < 0) {
				/* EAGAIN: another reader got it; nothing to do */
			}
		}
	}
	pthread_mutex_unlock(&c->fab_lock);
	return NULL;
}

/* ---- life cycle ----------------------------------------------------------- */

static void cluster_free(struct hk_cluster *c)
{
	/* the endpoint is closed: nothing touches the buffers any more */
	hk_fabric_mr_close(&c->rx_mr);
	hk_fabric_close(c->fab);
	while (c->inflight) {
		struct cl_msg *m = c->inflight;

		c->inflight = m->next;
		free(m); /* its MR went with the domain */
	}
	for (unsigned i = 0; i < c->n; i++) {
		struct cl_peer *p = &c->peers[i];

		list_free(c, p->q_head);
		list_free(c, p->p_head);
		held_free(p);
	}
	free(c->rx_pool);
	if (c->efd >= 0)
		close(c->efd);
	pthread_cond_destroy(&c->cond);
	pthread_mutex_destroy(&c->fab_lock);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

/* HK_CLUSTER_SPIN_US: microseconds of polling after activity; 0 = sleep at once. */
static int spin_from_env(uint64_t *spin_ns, char *err, size_t errlen)
{
	const char *s = getenv("HK_CLUSTER_SPIN_US");
	unsigned long v = SPIN_US_DFLT;
	char *end;

	if (s && *s) {
		errno = 0;
		v = strtoul(s, &end, 10);
		if (errno || *end || s[0] == '-' || v > SPIN_US_MAX) {
			seterr(err, errlen,
			       "cluster: HK_CLUSTER_SPIN_US='%s': want microseconds 0..%d", s,
			       SPIN_US_MAX);
			return -EINVAL;
		}
	}
	*spin_ns = (uint64_t)v * 1000;
	return 0;
}

int hk_cluster_create(const struct hk_config *cfg, unsigned self, struct hk_cluster **out,
		      char *err, size_t errlen)
{
	const struct cl_addr_scheme *scheme;
	struct hk_fabric_opts o = {.size = sizeof(o), .wait = true};
	char node[256], svc[32], ferr[CLUSTER_ERR_LEN];
	pthread_condattr_t ca;
	struct hk_cluster *c;
	int ret;

	*out = NULL;
	if (self >= cfg->n_nodes || cfg->n_nodes > HK_MAX_NODES) {
		seterr(err, errlen, "cluster: node index %u is not in the %u nodes of %s", self,
		       cfg->n_nodes, cfg->path);
		return -EINVAL;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		seterr(err, errlen, "cluster: out of memory");
		return -ENOMEM;
	}
	c->efd = -1;
	c->self = self;
	c->n = cfg->n_nodes;
	snprintf(c->cluster_name, sizeof(c->cluster_name), "%s", cfg->cluster_name);
	c->digest = config_digest(cfg);
	pthread_mutex_init(&c->lock, NULL);
	pthread_mutex_init(&c->fab_lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&c->cond, &ca);
	pthread_condattr_destroy(&ca);
	for (unsigned i = 0; i < c->n; i++) {
		struct hk_cluster_peer *pub = &c->peers[i].pub;

		snprintf(pub->name, sizeof(pub->name), "%s", cfg->nodes[i].name);
		snprintf(pub->address, sizeof(pub->address), "%s", cfg->nodes[i].address);
		pub->self = i == self;
		pub->up = i == self;
	}

	ret = spin_from_env(&c->spin_ns, err, errlen);
	if (ret)
		goto fail;
	c->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (c->efd < 0) {
		ret = -errno;
		seterr(err, errlen, "cluster: eventfd: %s", strerror(errno));
		goto fail;
	}
	scheme = c->scheme = addr_scheme(cfg->provider);
	ret = scheme->resolve(cfg, self, node, sizeof(node), svc, sizeof(svc));
	if (ret) {
		seterr(err, errlen, "cluster: node %s: bad address '%s' for provider %s",
		       cfg->nodes[self].name, cfg->nodes[self].address, cfg->provider);
		goto fail;
	}
	o.provider = cfg->provider;
	o.src_node = node;
	o.src_service = svc[0] ? svc : NULL;
	ret = hk_fabric_open_opts(&o, &c->fab, ferr, sizeof(ferr));
	if (ret) {
		seterr(err, errlen, "cluster: node %s: %s", cfg->nodes[self].name, ferr);
		goto fail;
	}
	for (unsigned i = 0; i < c->n; i++) {
		if (i == self)
			continue;
		struct cl_peer *p = &c->peers[i];

		ret = scheme->resolve(cfg, i, p->fnode, sizeof(p->fnode), p->fsvc, sizeof(p->fsvc));
		if (ret)
			snprintf(ferr, sizeof(ferr), "bad address '%s'", cfg->nodes[i].address);
		else if (!scheme->peer_ready || scheme->peer_ready(p->fnode))
			ret = peer_insert(c, p, ferr, sizeof(ferr));
		if (ret) {
			seterr(err, errlen, "cluster: peer %s: %s", cfg->nodes[i].name, ferr);
			goto fail;
		}
	}

	c->local_mr = hk_fabric_needs_local_mr(c->fab);
	hk_fabric_set_lock(c->fab, &c->fab_lock);
	c->rx_pool = malloc((size_t)RX_BUFS * HK_CLUSTER_MSG_MAX);
	if (!c->rx_pool) {
		ret = -ENOMEM;
		seterr(err, errlen, "cluster: out of memory for receive buffers");
		goto fail;
	}
	if (c->local_mr) {
		ret = hk_fabric_mr_reg(c->fab, c->rx_pool, (size_t)RX_BUFS * HK_CLUSTER_MSG_MAX,
				       &c->rx_mr, ferr, sizeof(ferr));
		if (ret) {
			seterr(err, errlen, "cluster: receive buffers: %s", ferr);
			goto fail;
		}
	}
	for (unsigned i = 0; i < RX_BUFS; i++) {
		c->rx[i].buf = c->rx_pool + (size_t)i * HK_CLUSTER_MSG_MAX;
		ret = hk_fabric_recv(c->fab, 0, ~0ull, c->rx[i].buf, HK_CLUSTER_MSG_MAX,
				     c->local_mr ? &c->rx_mr : NULL, &c->rx[i], ferr, sizeof(ferr));
		if (ret) {
			seterr(err, errlen, "cluster: receive buffers: %s", ferr);
			goto fail;
		}
	}
	ret = -pthread_create(&c->thread, NULL, progress_main, c);
	if (ret) {
		seterr(err, errlen, "cluster: progress thread: %s", strerror(-ret));
		goto fail;
	}
	c->thread_started = true;
	*out = c;
	return 0;
fail:
	cluster_free(c);
	return ret;
}

void hk_cluster_on(struct hk_cluster *c, unsigned cls, hk_cluster_recv_fn fn, void *ctx)
{
	if (cls == HK_MSG_CLUSTER || cls >= HK_MSG_CLASSES)
		return;
	pthread_mutex_lock(&c->lock);
	c->on[cls].fn = fn;
	c->on[cls].ctx = ctx;
	pthread_mutex_unlock(&c->lock);
}

void hk_cluster_on_peer(struct hk_cluster *c, hk_cluster_peer_fn fn, void *ctx)
{
	pthread_mutex_lock(&c->lock);
	c->on_peer = fn;
	c->on_peer_ctx = ctx;
	pthread_mutex_unlock(&c->lock);
}

/* Under c->lock: "n2, n3" of the peers that have not answered. */
static unsigned missing_locked(struct hk_cluster *c, char *buf, size_t len)
{
	unsigned n = 0;
	size_t off = 0;

	buf[0] = '\0';
	for (unsigned i = 0; i < c->n; i++) {
		if (i == c->self || c->peers[i].answered)
			continue;
		if (off < len)
			off += (size_t)snprintf(buf + off, len - off, "%s%s%s", n ? ", " : "",
						c->peers[i].pub.name,
						c->peers[i].down ? " (down)" : "");
		n++;
	}
	return n;
}

int hk_cluster_join(struct hk_cluster *c, int timeout_ms, char *err, size_t errlen)
{
	uint64_t start = now_ns(), deadline = start + (uint64_t)timeout_ms * 1000000ull;
	uint64_t next_log = start + 1000000000ull;
	char names[512];
	int ret = 0;

	pthread_mutex_lock(&c->lock);
	c->joining = true; /* the progress thread says Hello at once */
	pthread_mutex_unlock(&c->lock);
	wake(c);

	pthread_mutex_lock(&c->lock);
	for (;;) {
		uint64_t now = now_ns(), until;
		struct timespec ts;
		unsigned bad = c->n;

		for (unsigned i = 0; i < c->n; i++)
			if (c->peers[i].mismatch) {
				bad = i;
				break;
			}
		if (bad < c->n) {
			seterr(err, errlen,
			       "cluster: node %s has a different cluster config (digest %016" PRIx64
			       ", ours %016" PRIx64 "); start all nodes from the same hk.conf",
			       c->peers[bad].pub.name, c->peers[bad].their_digest, c->digest);
			ret = -EPROTO;
			break;
		}
		if (!missing_locked(c, names, sizeof(names)))
			break;
		if (now >= deadline) {
			seterr(err, errlen,
			       "cluster: join timed out after %.1f s: no answer from %s",
			       (double)(now - start) / 1e9, names);
			ret = -ETIMEDOUT;
			break;
		}
		if (now >= next_log) {
			fprintf(stderr, "cluster: waiting for %s (%.0f s)\n", names,
				(double)(now - start) / 1e9);
			next_log += 1000000000ull;
		}
		until = next_log < deadline ? next_log : deadline;
		ts.tv_sec = (time_t)(until / 1000000000ull);
		ts.tv_nsec = (long)(until % 1000000000ull);
		pthread_cond_timedwait(&c->cond, &c->lock, &ts);
	}
	pthread_mutex_unlock(&c->lock);
	return ret;
}

unsigned hk_cluster_self(const struct hk_cluster *c)
{
	return c->self;
}

unsigned hk_cluster_size(const struct hk_cluster *c)
{
	return c->n;
}

const char *hk_cluster_provider(const struct hk_cluster *c)
{
	return hk_fabric_provider(c->fab);
}

unsigned hk_cluster_peers(struct hk_cluster *c, struct hk_cluster_peer *out, unsigned max)
{
	unsigned n = max < c->n ? max : c->n;

	pthread_mutex_lock(&c->lock);
	for (unsigned i = 0; i < n; i++)
		out[i] = c->peers[i].pub;
	pthread_mutex_unlock(&c->lock);
	return n;
}

void hk_cluster_destroy(struct hk_cluster *c)
{
	if (!c)
		return;
	if (c->thread_started) {
		Hk__Cluster__Bye bye = HK__CLUSTER__BYE__INIT;
		Hk__Cluster__ClusterMsg msg = HK__CLUSTER__CLUSTER_MSG__INIT;

		bye.reason = "hk_cluster_destroy";
		msg.body_case = HK__CLUSTER__CLUSTER_MSG__BODY_BYE;
		msg.bye = &bye;
		pthread_mutex_lock(&c->lock);
		for (unsigned i = 0; i < c->n; i++)
			if (i != c->self && c->peers[i].pub.up)
				send_cluster_msg_locked(c, i, &msg, false);
		c->leave_deadline_ns = now_ns() + LEAVE_FLUSH_NS;
		c->leaving = true;
		pthread_mutex_unlock(&c->lock);
		wake(c);
		pthread_join(c->thread, NULL);
	}
	cluster_free(c);
}
