/*
 * Pooled memory: one node's page-coherence engine.  Faults on guest memory
 * (from fault.c) and coherence messages from other nodes (through the
 * transport the caller supplies) both end up here, under one lock.
 *
 * A fault on a page this node lacks, or may not write, becomes a request
 * to the page's home (pool_home.c), answered by the home itself when it is
 * this node.  Replies place the page (pool_page.c) and thereby wake every
 * thread blocked on it.  Messages are protobuf-c (proto/coh.proto).
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pool_internal.h"

/* Optional transport hooks exist only in tables big enough to hold them. */
#define transport_has(t, fn)                                                                       \
	((t)->size >= offsetof(struct hk_pool_transport, fn) + sizeof((t)->fn) && (t)->fn)

unsigned pool_home(const struct hk_pool *p, uint64_t frame)
{
	unsigned lo = 0, hi = p->cfg.n_nodes;

	/* home_start is sorted: binary search over at most 64 nodes. */
	while (hi - lo > 1) {
		unsigned mid = (lo + hi) / 2;

		if (frame >= p->home_start[mid])
			lo = mid;
		else
			hi = mid;
	}
	return lo;
}

/* "INV_ACK" for COH_INV_ACK: the names log lines use. */
static const char *msg_name(int type)
{
	const ProtobufCEnumValue *v =
		protobuf_c_enum_descriptor_get_value(&hk__coh__coh_type__descriptor, type);

	if (!v)
		return "unknown message";
	return strncmp(v->name, "COH_", 4) ? v->name : v->name + 4;
}

/*
 * A message that a page or an answer depends on did not leave: whoever
 * waits for it (a vCPU here, or one on another node through the home)
 * would wait until the guest is stopped.  The guest cannot go on, so
 * coherence stops now (no message moves, new faults wait) and the thread
 * holding the lock ends the guest when it lets go (pool_unlock).
 */
static void pool_fail(struct hk_pool *p, int type, unsigned node, uint64_t frame, int err)
{
	p->failed = true;
	p->fail_report = true;
	snprintf(p->fail_why, sizeof(p->fail_why),
		 "pool: cannot send %s for frame %llu to node %u: %s", msg_name(type),
		 (unsigned long long)frame, node, strerror(-err));
	fprintf(stderr, "hyperkernel: %s\n", p->fail_why);
}

void pool_unlock(struct hk_pool *p)
{
	char why[sizeof(p->fail_why)];
	bool report = p->fail_report;

	if (report) {
		p->fail_report = false;
		memcpy(why, p->fail_why, sizeof(why));
	}
	pthread_mutex_unlock(&p->lock);
	if (!report)
		return;
	/* The guest ends first, so its outcome is this reason and not what a
	 * vCPU does with the zeros the abort then hands it (as on a lost node). */
	if (transport_has(p->cfg.transport, fail))
		p->cfg.transport->fail(p->cfg.ctx, p->mem, why);
	hk_mem_pool_abort(p->mem, why);
}

int pool_send(struct hk_pool *p, unsigned node, Hk__Coh__CohType type, uint64_t frame,
	      uint32_t count, bool exclusive, const void *data)
{
	Hk__Coh__CohMsg m = HK__COH__COH_MSG__INIT;
	uint8_t buf[HK_POOL_MSG_MAX];
	size_t len;
	int ret;

	if (p->failed || p->aborted)
		return -ECANCELED; /* coherence stopped: nothing moves any more */
	if (node == p->cfg.self || node >= p->cfg.n_nodes) {
		ret = -EINVAL; /* a bug here, but a waiter must not hang on it */
		goto fail;
	}
	m.version = POOL_WIRE_VERSION;
	m.type = type;
	m.frame = frame;
	m.count = count;
	m.exclusive = exclusive;
	m.guest = p->cfg.guest;
	if (data) {
		m.data.data = (uint8_t *)data;
		m.data.len = HK_PAGE_SIZE;
	}
	len = hk__coh__coh_msg__pack(&m, buf);
	if (p->trace)
		fprintf(stderr, "pool[%u]: -> %u %s frame %llu count %u%s%s\n", p->cfg.self, node,
			msg_name(type), (unsigned long long)frame, count, exclusive ? " excl" : "",
			data ? " +data" : "");
	ret = p->cfg.transport->send(p->cfg.ctx, node, buf, len);
	if (!ret)
		return 0;
fail:
	if (type == HK__COH__COH_TYPE__COH_EVICT || type == HK__COH__COH_TYPE__COH_WRITEBACK) {
		/* Nobody waits for these: pool_evict keeps the page and tries
		 * again on the next fault (a dead peer is the transport's to
		 * report), so say it once, not per fault. */
		if (!p->evict_warned)
			fprintf(stderr,
				"hyperkernel: pool: cannot send %s for frame %llu to node %u: %s: "
				"the page stays here for now\n",
				msg_name(type), (unsigned long long)frame, node, strerror(-ret));
		p->evict_warned = true;
		return ret;
	}
	pool_fail(p, type, node, frame, ret);
	return ret;
}

/* Ask the home for frame; this node's page is invalid or read-only. */
static void pool_request(struct hk_pool *p, uint64_t frame, bool write)
{
	unsigned home = pool_home(p, frame);

	if (!(hk_mem_page_set(p->mem, frame, HK_PG_PENDING) & HK_PG_PENDING))
		pool_hold_wait(p);
	if (home == p->cfg.self) {
		p->st.local_faults++;
		pool_home_request(p, p->cfg.self, frame, write);
		return;
	}
	p->st.remote_faults++;
	pool_send(p, home, write ? HK__COH__COH_TYPE__COH_WRITE : HK__COH__COH_TYPE__COH_READ,
		  frame, 0, false, NULL);
}

static void pool_release(struct hk_pool *p, uint64_t frame, uint8_t fl);

/* A fault this node had to ask `home` about, charged to the vCPU that took it. */
static void count_vcpu_fault(struct hk_pool *p, uint32_t tid, unsigned home)
{
	if (!tid)
		return;
	for (unsigned i = 0; i < HK_MAX_VCPUS; i++)
		if (atomic_load(&p->vcpu_tid[i]) == tid) {
			atomic_fetch_add(&p->vcpu_faults[i][home], 1);
			return;
		}
}

void hk_mem_pool_vcpu_thread(struct hk_mem *mem, unsigned index, uint32_t tid)
{
	if (mem->pool && index < HK_MAX_VCPUS)
		atomic_store(&mem->pool->vcpu_tid[index], tid);
}

void hk_mem_pool_vcpu_faults(const struct hk_mem *mem, unsigned index,
			     uint64_t faults[HK_POOL_MAX_NODES])
{
	for (unsigned n = 0; n < HK_POOL_MAX_NODES; n++)
		faults[n] = mem->pool && index < HK_MAX_VCPUS
				    ? atomic_load(&mem->pool->vcpu_faults[index][n])
				    : 0;
}

void hk_pool_fault(struct hk_mem *mem, uint64_t addr, bool write, bool wp, uint32_t tid)
{
	struct hk_pool *p = mem->pool;
	uint64_t frame = (addr - (uintptr_t)mem->base) / HK_PAGE_SIZE;
	uint8_t fl;

	count_vcpu_fault(p, tid, pool_home(p, frame));

	pthread_mutex_lock(&p->lock);
	fl = hk_mem_page_flags(mem, frame);
	if (p->trace)
		fprintf(stderr, "pool[%u]: fault frame %llu%s%s flags 0x%x\n", p->cfg.self,
			(unsigned long long)frame, write ? " write" : "", wp ? " wp" : "", fl);
	if (p->aborted) {
		pool_release(p, frame, fl);
	} else if (p->failed) {
		/* Coherence stopped; the abort that follows releases it. */
		hk_mem_page_set(mem, frame, HK_PG_PENDING);
	} else if (fl & HK_PG_PENDING) {
		/* Asked already; the reply wakes every waiter.  A write fault
		 * behind a read request faults again, write-protected. */
	} else if (wp) {
		if (fl & HK_PG_EXCL) /* protected only for a storage replica */
			pool_page_upgrade(p, frame);
		else
			pool_request(p, frame, true);
	} else if (fl & (HK_PG_SHARED | HK_PG_EXCL)) {
		pool_page_wake(p, frame); /* placed while the fault was queued */
	} else {
		pool_request(p, frame, write);
	}
	pool_evict(p);
	pool_unlock(p);
}

/*
 * After hk_mem_pool_abort: let a waiter go without the page's real content
 * (zeros, or its read-only copy made writable).  The guest is being ended;
 * what matters is that no thread stays blocked in the kernel.
 */
static void pool_release(struct hk_pool *p, uint64_t frame, uint8_t fl)
{
	if (fl & HK_PG_SHARED)
		pool_page_upgrade(p, frame);
	else if (fl & HK_PG_EXCL)
		pool_page_wake(p, frame);
	else
		pool_page_zero(p, frame, 1);
}

void hk_mem_pool_abort(struct hk_mem *mem, const char *why)
{
	struct hk_pool *p = mem->pool;
	uint64_t released = 0;

	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	if (!p->aborted) {
		p->aborted = true;
		for (uint64_t f = 0; f < p->n_frames; f += POOL_DIR_CHUNK) {
			if (!hk_mem_page_chunk_used(mem, f)) {
				continue;
			}
			for (uint64_t i = f; i < f + POOL_DIR_CHUNK && i < p->n_frames; i++) {
				uint8_t fl = hk_mem_page_flags(mem, i);

				if (fl & HK_PG_PENDING) {
					pool_release(p, i, fl);
					released++;
				}
			}
		}
		fprintf(stderr, "hyperkernel: pool: coherence stopped (%s), %llu waiting pages "
				"released\n", why, (unsigned long long)released);
	}
	pthread_mutex_unlock(&p->lock);
}

/* Checks a message from `from` before anything acts on it. */
static bool msg_ok(struct hk_pool *p, unsigned from, const Hk__Coh__CohMsg *m)
{
	bool to_home = m->type == HK__COH__COH_TYPE__COH_READ ||
		       m->type == HK__COH__COH_TYPE__COH_WRITE ||
		       m->type == HK__COH__COH_TYPE__COH_EVICT ||
		       m->type == HK__COH__COH_TYPE__COH_WRITEBACK ||
		       m->type == HK__COH__COH_TYPE__COH_INV_ACK ||
		       m->type == HK__COH__COH_TYPE__COH_FETCH_REPLY;
	bool needs_data = m->type == HK__COH__COH_TYPE__COH_DATA ||
			  m->type == HK__COH__COH_TYPE__COH_WRITEBACK;

	if (m->version != POOL_WIRE_VERSION || from >= p->cfg.n_nodes || from == p->cfg.self)
		return false;
	if (m->frame >= p->n_frames || (m->data.len && m->data.len != HK_PAGE_SIZE))
		return false;
	if (needs_data && !m->data.len)
		return false;
	if (to_home && pool_home(p, m->frame) != p->cfg.self)
		return false;
	if (!to_home && pool_home(p, m->frame) != from)
		return false; /* only a page's home tells others what to do with it */
	if (m->type == HK__COH__COH_TYPE__COH_ZERO &&
	    (!m->count || m->count > POOL_ZERO_BATCH || m->count > p->n_frames - m->frame ||
	     pool_home(p, m->frame + m->count - 1) != from))
		return false;
	return true;
}

static void node_inv(struct hk_pool *p, unsigned from, uint64_t frame)
{
	uint8_t fl = hk_mem_page_flags(p->mem, frame);

	if ((fl & HK_PG_SHARED) &&
	    pool_hold_defer(p, from, HK__COH__COH_TYPE__COH_INV, frame, false))
		return;

	if (fl & HK_PG_EXCL)
		p->st.bad_msgs++; /* an owner is fetched, never invalidated */
	else if (fl & HK_PG_SHARED) {
		pool_page_drop(p, frame);
		p->st.invalidations++;
	}
	/* Acknowledge even a copy already evicted: the home counts acks. */
	pool_send(p, from, HK__COH__COH_TYPE__COH_INV_ACK, frame, 0, false, NULL);
}

static void node_fetch(struct hk_pool *p, unsigned from, uint64_t frame, bool exclusive)
{
	const uint8_t *data;

	if (!(hk_mem_page_flags(p->mem, frame) & HK_PG_EXCL)) {
		/* Written back before the fetch arrived: the home has it. */
		pool_send(p, from, HK__COH__COH_TYPE__COH_FETCH_REPLY, frame, 0, false, NULL);
		return;
	}
	if (pool_hold_defer(p, from, HK__COH__COH_TYPE__COH_FETCH, frame, exclusive))
		return;
	/* Writers stop before the copy is taken, so it is the last version. */
	pool_page_protect(p, frame);
	data = pool_page_copy(p, frame);
	if (exclusive) {
		pool_page_drop(p, frame);
		p->st.invalidations++;
	}
	pool_send(p, from, HK__COH__COH_TYPE__COH_FETCH_REPLY, frame, 0, exclusive, data);
	p->st.pages_sent++;
}

void pool_run_deferred(struct hk_pool *p, unsigned from, int type, uint64_t frame,
		       bool exclusive)
{
	switch (type) {
	case HK__COH__COH_TYPE__COH_INV:
		node_inv(p, from, frame);
		break;
	case HK__COH__COH_TYPE__COH_FETCH:
		node_fetch(p, from, frame, exclusive);
		break;
	default:
		pool_home_request(p, from, frame, type == HK__COH__COH_TYPE__COH_WRITE);
		break;
	}
}

static void pool_dispatch(struct hk_pool *p, unsigned from, const Hk__Coh__CohMsg *m)
{
	const uint8_t *data = m->data.len ? m->data.data : NULL;

	switch (m->type) {
	case HK__COH__COH_TYPE__COH_READ:
	case HK__COH__COH_TYPE__COH_WRITE:
		pool_home_request(p, from, m->frame, m->type == HK__COH__COH_TYPE__COH_WRITE);
		break;
	case HK__COH__COH_TYPE__COH_EVICT:
		pool_home_evict(p, from, m->frame);
		break;
	case HK__COH__COH_TYPE__COH_WRITEBACK:
		pool_home_writeback(p, from, m->frame, data);
		break;
	case HK__COH__COH_TYPE__COH_INV_ACK:
		pool_home_inv_ack(p, from, m->frame);
		break;
	case HK__COH__COH_TYPE__COH_FETCH_REPLY:
		pool_home_fetch_reply(p, from, m->frame, data);
		break;
	case HK__COH__COH_TYPE__COH_DATA:
		pool_page_install(p, m->frame, data, m->exclusive);
		p->st.pages_recv++;
		break;
	case HK__COH__COH_TYPE__COH_ZERO:
		pool_page_zero(p, m->frame, m->count);
		break;
	case HK__COH__COH_TYPE__COH_UPGRADE:
		if (hk_mem_page_flags(p->mem, m->frame) & HK_PG_SHARED) {
			pool_page_upgrade(p, m->frame);
			p->st.upgrades++;
		} else {
			p->st.bad_msgs++;
		}
		break;
	case HK__COH__COH_TYPE__COH_INV:
		node_inv(p, from, m->frame);
		break;
	case HK__COH__COH_TYPE__COH_FETCH:
		node_fetch(p, from, m->frame, m->exclusive);
		break;
	default:
		p->st.bad_msgs++;
		break;
	}
}

void hk_mem_pool_deliver(struct hk_mem *mem, unsigned from, const void *msg, size_t len)
{
	struct hk_pool *p = mem->pool;
	Hk__Coh__CohMsg *m;

	if (!p)
		return;
	m = hk__coh__coh_msg__unpack(NULL, len, msg);
	pthread_mutex_lock(&p->lock);
	if (p->aborted || p->failed) {
		/* nothing moves any more */
	} else if (!m || m->guest != p->cfg.guest || !msg_ok(p, from, m)) {
		if (p->st.bad_msgs++ < 8)
			fprintf(stderr, "hyperkernel: pool: dropped a malformed message from node %u "
				"(%zu bytes)\n", from, len);
	} else {
		if (p->trace)
			fprintf(stderr, "pool[%u]: <- %u %s frame %llu count %u%s%s\n", p->cfg.self,
				from,
				msg_name(m->type),
				(unsigned long long)m->frame, m->count, m->exclusive ? " excl" : "",
				m->data.len ? " +data" : "");
		pool_dispatch(p, from, m);
		pool_evict(p);
	}
	pool_unlock(p);
	if (m)
		hk__coh__coh_msg__free_unpacked(m, NULL);
}

static int pool_layout(struct hk_pool *p, char *err, size_t errlen)
{
	const struct hk_pool_config *c = &p->cfg;
	unsigned __int128 total = 0, cum = 0;

	for (unsigned i = 0; i < c->n_nodes; i++) {
		if (c->node_memory[i] < HK_MEM_ALIGN) {
			snprintf(err, errlen, "pool: node %u has %llu bytes: at least 2 MiB each", i,
				 (unsigned long long)c->node_memory[i]);
			return -EINVAL;
		}
		total += c->node_memory[i];
	}
	/* Contiguous homes in proportion to memory, cut at 2 MiB: a vCPU
	 * working on one region finds it on one node (vCPU placement). */
	for (unsigned i = 0; i < c->n_nodes; i++) {
		uint64_t start = (uint64_t)(p->n_frames * cum / total);

		p->home_start[i] = start - start % POOL_DIR_CHUNK;
		cum += c->node_memory[i];
	}
	p->home_start[c->n_nodes] = p->n_frames;
	for (unsigned i = 0; i < c->n_nodes; i++)
		if (p->home_start[i + 1] <= p->home_start[i]) {
			snprintf(err, errlen, "pool: node %u would home no memory", i);
			return -EINVAL;
		}
	return 0;
}

int hk_mem_pool(struct hk_mem *mem, const struct hk_pool_config *cfg, char *err, size_t errlen)
{
	struct hk_pool *p;
	uint64_t homed;
	int ret = -EINVAL;

	if (!cfg->n_nodes || cfg->n_nodes > HK_POOL_MAX_NODES || cfg->self >= cfg->n_nodes) {
		snprintf(err, errlen, "pool: node %u of %u: bad node numbers", cfg->self,
			 cfg->n_nodes);
		return -EINVAL;
	}
	if (!cfg->transport || cfg->transport->size < sizeof(*cfg->transport) ||
	    !cfg->transport->send) {
		snprintf(err, errlen, "pool: no transport");
		return -EINVAL;
	}
	if (!mem->wp) {
		snprintf(err, errlen, "pool: pooled memory needs userfaultfd write-protect, "
				      "which this kernel does not offer for guest memory");
		return -ENOTSUP;
	}
	if (mem->pool || atomic_load(&mem->resident_pages)) {
		snprintf(err, errlen, "pool: guest memory already in use");
		return -EBUSY;
	}
	p = calloc(1, sizeof(*p));
	if (!p)
		goto nomem;
	p->mem = mem;
	p->cfg = *cfg;
	p->n_frames = mem->size / HK_PAGE_SIZE;
	pthread_mutex_init(&p->lock, NULL);
	ret = pool_layout(p, err, errlen);
	if (ret)
		goto fail;
	homed = p->home_start[cfg->self + 1] - p->home_start[cfg->self];
	p->dir_chunks = (homed + POOL_DIR_CHUNK - 1) / POOL_DIR_CHUNK;
	p->dir = calloc(p->dir_chunks, sizeof(*p->dir));
	p->budget_pages = cfg->node_memory[cfg->self] / HK_PAGE_SIZE;
	p->fifo_cap = 2 * p->budget_pages + 1024;
	p->fifo = calloc(p->fifo_cap, sizeof(*p->fifo));
	if (!p->dir || !p->fifo)
		goto nomem;
	/* HK_POOL_TRACE=1: one stderr line per fault and message (debugging). */
	p->trace = getenv("HK_POOL_TRACE") && *getenv("HK_POOL_TRACE") == '1';
	ret = pool_hold_start(p, err, errlen);
	if (ret)
		goto fail;
	p->st.home_pages = homed;
	p->st.budget_pages = p->budget_pages;
	mem->pool = p;
	if (transport_has(cfg->transport, attach))
		cfg->transport->attach(cfg->ctx, mem, cfg->guest);
	return 0;
nomem:
	ret = -ENOMEM;
	snprintf(err, errlen, "pool: out of memory");
fail:
	if (p) {
		free(p->dir);
		free(p->fifo);
		pthread_mutex_destroy(&p->lock);
	}
	free(p);
	return ret;
}

void hk_pool_detach(struct hk_mem *mem)
{
	struct hk_pool *p = mem->pool;

	if (p && transport_has(p->cfg.transport, detach))
		p->cfg.transport->detach(p->cfg.ctx, mem);
}

void hk_pool_free(struct hk_mem *mem)
{
	struct hk_pool *p = mem->pool;

	if (!p)
		return;
	pool_hold_stop(p);
	pool_pin_free(p);
	for (uint64_t c = 0; c < p->dir_chunks; c++)
		free(p->dir[c]);
	free(p->dir);
	free(p->fifo);
	for (struct pool_txn *t = p->active, *n; t; t = n) {
		n = t->next;
		free(t);
	}
	for (struct pool_txn *t = p->queued, *n; t; t = n) {
		n = t->next;
		free(t);
	}
	pthread_mutex_destroy(&p->lock);
	free(p);
	mem->pool = NULL;
}

bool hk_mem_pooled(const struct hk_mem *mem)
{
	return mem->pool != NULL;
}

bool hk_mem_pool_stopped(struct hk_mem *mem)
{
	struct hk_pool *p = mem->pool;
	bool stopped;

	if (!p)
		return false;
	pthread_mutex_lock(&p->lock);
	stopped = p->aborted || p->failed;
	pthread_mutex_unlock(&p->lock);
	return stopped;
}

int hk_mem_pool_home(const struct hk_mem *mem, uint64_t gpa)
{
	uint64_t frame = hk_mem_frame(mem, gpa);

	if (frame == UINT64_MAX)
		return -1;
	return mem->pool ? (int)pool_home(mem->pool, frame) : 0;
}

void hk_mem_pool_stats(const struct hk_mem *mem, struct hk_pool_stats *st)
{
	struct hk_pool *p = mem->pool;

	memset(st, 0, sizeof(*st));
	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	*st = p->st;
	pthread_mutex_unlock(&p->lock);
	st->resident_pages = atomic_load(&mem->resident_pages);
}
