/*
 * vCPU placement of a pooled guest: move a vCPU to the node that holds its
 * working set when that is cheaper than moving the pages to it.
 *
 * Every POLICY_PERIOD_MS each node looks at the vCPUs running on it: the
 * engine counts, per vCPU, the faults it took by home node of the page
 * (hk_mem_pool_vcpu_faults), and a score per node decays those counts by
 * 3/4 a period.  A vCPU moves to node X when its score for X's pages is at
 * least min_faults and more than twice its score for this node's own, and
 * it has stayed here at least POLICY_STAY_MS (hysteresis: a vCPU and its
 * pages must not ping-pong).
 * `policy = vcpu` moves on a lower threshold, `page` never.
 *
 * A move: park the vCPU (it finishes any fault first), save its whole
 * state (hk_vm_vcpu_save), send GUEST_VCPU_MOVE; the receiver restores it
 * into its parked copy of that vCPU and resumes it.  If the send fails the
 * vCPU resumes here.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "daemon.h"

#define POLICY_PERIOD_MS 500
#define POLICY_STAY_MS	 2000
#define MIN_FAULTS_ADAPTIVE 64
#define MIN_FAULTS_VCPU	    16

struct hk_place {
	struct hk_daemon *d;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cv;
	bool stop, started;

	uint64_t guest;		      /* generation these fields describe */
	uint64_t local;		      /* vCPUs running on this node */
	uint64_t arrived_ns[HK_MAX_VCPUS];
	uint64_t last[HK_MAX_VCPUS][HK_POOL_MAX_NODES];
	/* Faults per period, decayed by 3/4 each period: recent behaviour
	 * counts, a slow trickle still adds up (steady state: 4x a period). */
	uint64_t score[HK_MAX_VCPUS][HK_POOL_MAX_NODES];
	_Atomic uint64_t migrations;  /* vCPUs this node sent away, this guest */
};

static unsigned min_faults(const struct hk_daemon *d)
{
	return d->cfg->policy == HK_POLICY_VCPU ? MIN_FAULTS_VCPU : MIN_FAULTS_ADAPTIVE;
}

/* Where vCPU i should run, or self. */
static unsigned place_choose(struct hk_place *pl, struct hk_mem *mem, unsigned i)
{
	struct hk_daemon *d = pl->d;
	uint64_t now[HK_POOL_MAX_NODES], best = 0;
	unsigned self = d->node_id, to = self;

	hk_mem_pool_vcpu_faults(mem, i, now);
	for (unsigned n = 0; n < d->cfg->n_nodes; n++) {
		uint64_t *sc = &pl->score[i][n];

		*sc = *sc * 3 / 4 + (now[n] - pl->last[i][n]);
		if (n != self && *sc > best) {
			best = *sc;
			to = n;
		}
	}
	memcpy(pl->last[i], now, sizeof(now));
	if (to != self && (best < min_faults(d) || best <= 2 * pl->score[i][self] ||
			   hk_now_ns() - pl->arrived_ns[i] < POLICY_STAY_MS * 1000000ull))
		to = self;
	return to;
}

/* The boot of the guest a state belongs to: a reboot makes older ones void. */
static uint32_t boot_of(struct hk_guest *g)
{
	struct hk_vm_result r;

	hk_vm_result(g->vm, &r);
	return r.boot;
}

static void place_move(struct hk_place *pl, struct hk_guest *g, unsigned i, unsigned to)
{
	struct hk_daemon *d = pl->d;
	Hk__Guest__GuestMsg m;
	uint8_t *state = NULL;
	size_t len = 0;
	char err[256];
	int ret;

	ret = hk_vm_vcpu_park(g->vm, i);
	if (ret)
		return; /* ended meanwhile */
	ret = hk_vm_vcpu_save(g->vm, i, &state, &len, err, sizeof(err));
	if (ret) {
		fprintf(stderr, "hkd[%s]: vCPU %u stays: %s\n", d->node->name, i, err);
		hk_vm_vcpu_resume(g->vm, i);
		return;
	}
	hk__guest__guest_msg__init(&m);
	m.version = 1;
	m.type = HK__GUEST__GUEST_TYPE__GUEST_VCPU_MOVE;
	m.guest = g->pool_guest;
	m.boot = boot_of(g);
	m.vcpu = i;
	m.vcpu_state.data = state;
	m.vcpu_state.len = len;
	ret = hk_daemon_pool_send(d, to, &m);
	free(state);
	if (ret) {
		fprintf(stderr, "hkd[%s]: vCPU %u stays: sending it to %s: %s\n", d->node->name, i,
			d->cfg->nodes[to].name, strerror(-ret));
		hk_vm_vcpu_resume(g->vm, i);
		return;
	}
	pthread_mutex_lock(&pl->lock);
	pl->local &= ~(1ull << i);
	pthread_mutex_unlock(&pl->lock);
	atomic_fetch_add(&pl->migrations, 1);
	fprintf(stderr, "hkd[%s]: vCPU %u moved to %s, where its pages are\n", d->node->name, i,
		d->cfg->nodes[to].name);
}

static void place_round(struct hk_place *pl)
{
	struct hk_daemon *d = pl->d;
	struct hk_guest *g = hk_daemon_guest_get(d);
	struct hk_vm_result r;
	uint64_t local;

	if (!g)
		return;
	hk_vm_result(g->vm, &r);
	pthread_mutex_lock(&pl->lock);
	local = g->pool_guest == pl->guest ? pl->local : 0;
	pthread_mutex_unlock(&pl->lock);
	if (r.state == HK_VM_RUNNING && hk_mem_pooled(hk_vm_mem(g->vm)))
		for (unsigned i = 0; i < hk_vm_vcpus(g->vm); i++) {
			unsigned to;

			if (!(local & (1ull << i)))
				continue;
			to = place_choose(pl, hk_vm_mem(g->vm), i);
			if (to != d->node_id)
				place_move(pl, g, i, to);
		}
	hk_daemon_guest_put(d, g);
}

static void *place_thread(void *arg)
{
	struct hk_place *pl = arg;

	pthread_mutex_lock(&pl->lock);
	while (!pl->stop) {
		struct timespec until;

		clock_gettime(CLOCK_MONOTONIC, &until);
		until.tv_nsec += POLICY_PERIOD_MS * 1000000l;
		until.tv_sec += until.tv_nsec / 1000000000l;
		until.tv_nsec %= 1000000000l;
		pthread_cond_timedwait(&pl->cv, &pl->lock, &until);
		if (pl->stop)
			break;
		pthread_mutex_unlock(&pl->lock);
		place_round(pl);
		pthread_mutex_lock(&pl->lock);
	}
	pthread_mutex_unlock(&pl->lock);
	return NULL;
}

int hk_place_start(struct hk_daemon *d, struct hk_place **out)
{
	struct hk_place *pl = calloc(1, sizeof(*pl));
	pthread_condattr_t ca;
	int ret;

	if (!pl)
		return -ENOMEM;
	pl->d = d;
	pthread_mutex_init(&pl->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&pl->cv, &ca);
	pthread_condattr_destroy(&ca);
	if (d->cfg->policy != HK_POLICY_PAGE) {
		ret = pthread_create(&pl->thread, NULL, place_thread, pl);
		if (ret) {
			free(pl);
			return -ret;
		}
		pl->started = true;
	}
	*out = pl;
	return 0;
}

void hk_place_stop(struct hk_place *pl)
{
	if (!pl)
		return;
	if (pl->started) {
		pthread_mutex_lock(&pl->lock);
		pl->stop = true;
		pthread_cond_signal(&pl->cv);
		pthread_mutex_unlock(&pl->lock);
		pthread_join(pl->thread, NULL);
	}
	pthread_cond_destroy(&pl->cv);
	pthread_mutex_destroy(&pl->lock);
	free(pl);
}

void hk_place_guest(struct hk_place *pl, uint64_t guest, uint64_t local)
{
	pthread_mutex_lock(&pl->lock);
	pl->guest = guest;
	pl->local = local;
	memset(pl->last, 0, sizeof(pl->last));
	memset(pl->score, 0, sizeof(pl->score));
	for (unsigned i = 0; i < HK_MAX_VCPUS; i++)
		pl->arrived_ns[i] = hk_now_ns();
	atomic_store(&pl->migrations, 0);
	pthread_mutex_unlock(&pl->lock);
}

int hk_place_arrive(struct hk_place *pl, struct hk_guest *g, unsigned i, const uint8_t *state,
		    size_t len, char *err, size_t errlen)
{
	uint64_t now[HK_POOL_MAX_NODES];
	int ret;

	if (i >= hk_vm_vcpus(g->vm)) {
		snprintf(err, errlen, "vCPU %u: the guest has %u", i, hk_vm_vcpus(g->vm));
		return -EINVAL;
	}
	pthread_mutex_lock(&pl->lock);
	ret = g->pool_guest == pl->guest && (pl->local & (1ull << i)) ? -EBUSY : 0;
	pthread_mutex_unlock(&pl->lock);
	if (ret) {
		snprintf(err, errlen, "vCPU %u already runs here", i);
		return ret;
	}
	ret = hk_vm_vcpu_restore(g->vm, i, state, len, err, errlen);
	if (ret)
		return ret;
	hk_mem_pool_vcpu_faults(hk_vm_mem(g->vm), i, now);
	pthread_mutex_lock(&pl->lock);
	if (g->pool_guest == pl->guest) {
		pl->local |= 1ull << i;
		pl->arrived_ns[i] = hk_now_ns();
		memcpy(pl->last[i], now, sizeof(now)); /* judge it on what it does here */
		memset(pl->score[i], 0, sizeof(pl->score[i]));
	}
	pthread_mutex_unlock(&pl->lock);
	return hk_vm_vcpu_resume(g->vm, i);
}

uint64_t hk_place_migrations(struct hk_place *pl)
{
	return pl ? atomic_load(&pl->migrations) : 0;
}
