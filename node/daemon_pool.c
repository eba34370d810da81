/*
 * One guest over the nodes of a cluster.
 *
 * The first node of hk.conf (the leader) is where hkctl starts, stops and
 * waits for the guest.  A start goes:
 *   leader -> every node  PREPARE   create the VM: pooled memory, every vCPU
 *                                   (parked unless placed here), no devices
 *   node -> leader        PREPARED  ok or the error
 *   leader                          create its own VM, load the kernel
 *   leader -> every node  RUN       start the vCPUs placed here
 * vCPU i is placed on node i mod N.  Serial output of every node goes to
 * the leader's console buffer.  When the guest ends anywhere (exit port,
 * crash, hkctl guest stop, a node lost), the node that saw it tells the
 * leader (END), the leader tells everyone (STOP).  A node keeps serving its
 * pages until its guest is replaced: a vCPU elsewhere may still be waiting
 * for one before it can see the stop.
 *
 * Messages are proto/guest.proto (class HK_MSG_GUEST) and proto/coh.proto
 * (class HK_MSG_COH, handed to hyperkernel's engine as they are).
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cluster.h"
#include "daemon.h"

#define POOL_WIRE_VERSION 1
#define POOL_JOIN_MS	  60000
#define POOL_PREPARE_MS	  30000
#define LEADER		  0u

struct hk_daemon_pool {
	struct hk_daemon *d;

	/* The memory coherence messages go to, and its guest generation.
	 * Readers are deliveries on the progress thread; the writer is the
	 * guest's creation and destruction. */
	pthread_rwlock_t mem_lock;
	struct hk_mem *mem;
	uint64_t guest;
	struct hk_vm *vm; /* mem's VM once created: a lost peer ends it */

	/* Leader: answers to a PREPARE or REBOOT.  One ask at a time: the
	 * daemon's busy state (under d->lock) admits one start or reboot.
	 * The asker waits on cv without d->lock; answers, a lost node and
	 * shutdown (cancelled) wake it. */
	pthread_mutex_t lock;
	pthread_cond_t cv;
	uint64_t preparing; /* guest asked */
	int asked;	    /* PREPARE or REBOOT: the answer counted */
	/* Which ask an answer belongs to: a late answer to an earlier one (a
	 * reboot that timed out on a slow node, then tried again) must not
	 * count for this one, nor a node's answer twice. */
	uint32_t ask, ask_seq;
	uint64_t answered; /* bit per node */
	unsigned prepared, failed;
	char prepare_err[256];
	bool cancelled; /* the daemon is shutting down: no more waits */

	struct hk_place *place;
	/* Written while a reboot rebuilds this node's VM; read by a vCPU
	 * arriving (VCPU_MOVE), which must not restore into the rebuild. */
	pthread_rwlock_t boot_lock;

	/* Watch and job threads alive (under lock); shutdown waits for them,
	 * since they use d, the cluster and the placement state. */
	unsigned jobs;
	bool closing;
	pthread_cond_t jobs_cv;
};

#define POOL_JOBS_WAIT_S 15

static bool job_enter(struct hk_daemon *d)
{
	bool ok;

	pthread_mutex_lock(&d->pool->lock);
	ok = !d->pool->closing;
	if (ok)
		d->pool->jobs++;
	pthread_mutex_unlock(&d->pool->lock);
	return ok;
}

/* The last thing a watch or job thread does. */
static void job_leave(struct hk_daemon *d)
{
	pthread_mutex_lock(&d->pool->lock);
	if (--d->pool->jobs == 0)
		pthread_cond_broadcast(&d->pool->jobs_cv);
	pthread_mutex_unlock(&d->pool->lock);
}

/* ---- sending ------------------------------------------------------------ */

static int guest_send(struct hk_daemon *d, unsigned node, const Hk__Guest__GuestMsg *m)
{
	size_t len = hk__guest__guest_msg__get_packed_size(m);
	uint8_t *buf;
	int ret;

	if (len > HK_CLUSTER_MSG_MAX)
		return -EMSGSIZE;
	buf = malloc(len);
	if (!buf)
		return -ENOMEM;
	hk__guest__guest_msg__pack(m, buf);
	ret = hk_cluster_send(d->cluster, node, HK_MSG_GUEST, buf, len);
	free(buf);
	return ret;
}

int hk_daemon_pool_send(struct hk_daemon *d, unsigned node, const Hk__Guest__GuestMsg *m)
{
	return guest_send(d, node, m);
}

static void guest_msg_init(Hk__Guest__GuestMsg *m, Hk__Guest__GuestType type, uint64_t guest)
{
	hk__guest__guest_msg__init(m);
	m->version = POOL_WIRE_VERSION;
	m->type = type;
	m->guest = guest;
}

static void broadcast(struct hk_daemon *d, const Hk__Guest__GuestMsg *m)
{
	for (unsigned n = 0; n < d->cfg->n_nodes; n++)
		if (n != d->node_id)
			guest_send(d, n, m); /* a down node is reported by the cluster */
}

static int coh_send(void *ctx, unsigned node, const void *msg, size_t len)
{
	struct hk_daemon *d = ctx;

	return hk_cluster_send(d->cluster, node, HK_MSG_COH, msg, len);
}

/* The engine of a new guest's memory is ready: coherence messages go to it
 * from now on, also while its node is still loading the kernel. */
static void coh_attach(void *ctx, struct hk_mem *mem, uint64_t guest)
{
	struct hk_daemon *d = ctx;

	pthread_rwlock_wrlock(&d->pool->mem_lock);
	d->pool->mem = mem;
	d->pool->guest = guest;
	d->pool->vm = NULL;
	pthread_rwlock_unlock(&d->pool->mem_lock);
}

/* mem is being destroyed: wait out deliveries in progress, send no more. */
static void coh_detach(void *ctx, struct hk_mem *mem)
{
	struct hk_daemon *d = ctx;

	pthread_rwlock_wrlock(&d->pool->mem_lock);
	if (d->pool->mem == mem) {
		d->pool->mem = NULL;
		d->pool->vm = NULL;
	}
	pthread_rwlock_unlock(&d->pool->mem_lock);
}

/*
 * The engine could not send a message a vCPU depends on: the guest cannot
 * go on.  End it here with the reason (the watcher tells the leader, which
 * stops every node); the engine then releases this node's waiters.  May
 * run on the delivery thread, under mem_lock for reading already (glibc's
 * default rwlock lets a reader in again).
 */
static void coh_fail(void *ctx, struct hk_mem *mem, const char *why)
{
	struct hk_daemon *d = ctx;

	fprintf(stderr, "hkd[%s]: pooled guest: %s\n", d->node->name, why);
	pthread_rwlock_rdlock(&d->pool->mem_lock);
	if (d->pool->mem == mem && d->pool->vm)
		hk_vm_end(d->pool->vm, HK_VM_CRASHED, 0, why);
	pthread_rwlock_unlock(&d->pool->mem_lock);
}

static const struct hk_pool_transport coh_transport = {
    .size = sizeof(struct hk_pool_transport),
    .send = coh_send,
    .attach = coh_attach,
    .detach = coh_detach,
    .fail = coh_fail,
};

/* ---- the guest on this node -------------------------------------------- */

/* vCPUs that start on this node: i mod N == self. */
static uint64_t local_vcpus(const struct hk_daemon *d)
{
	uint64_t mask = 0;

	for (unsigned v = 0; v < d->cfg->vcpus; v++)
		if (v % d->cfg->n_nodes == d->node_id)
			mask |= 1ull << v;
	return mask;
}

static void pool_config(struct hk_daemon *d, uint64_t guest, struct hk_pool_config *pc,
			uint64_t *parked)
{
	unsigned n = d->cfg->n_nodes;

	*pc = (struct hk_pool_config){
	    .self = d->node_id,
	    .n_nodes = n,
	    .transport = &coh_transport,
	    .ctx = d,
	    .guest = guest,
	};
	for (unsigned i = 0; i < n; i++)
		pc->node_memory[i] = d->cfg->nodes[i].memory;
	*parked = 0;
	for (unsigned v = 0; v < d->cfg->vcpus; v++)
		if (v % n != d->node_id)
			*parked |= 1ull << v;
}

/* The VM that owns the attached memory, for on_peer. */
static void publish_vm(struct hk_daemon *d, struct hk_vm *vm)
{
	pthread_rwlock_wrlock(&d->pool->mem_lock);
	if (d->pool->mem == hk_vm_mem(vm))
		d->pool->vm = vm;
	pthread_rwlock_unlock(&d->pool->mem_lock);
}

struct watch {
	struct hk_daemon *d;
	struct hk_guest *g;
	uint64_t guest;
};

/* Waits for this node's view of the guest to end and spreads the news. */
static void *watch_thread(void *arg)
{
	struct watch *w = arg;
	struct hk_daemon *d = w->d;
	struct hk_vm_result r;
	Hk__Guest__GuestMsg m;

	hk_vm_wait(w->g->vm, -1, &r);
	if (r.rebooting) {
		/* Not an end: the reboot starts a watcher for the next boot. */
	} else if (d->node_id == LEADER) {
		guest_msg_init(&m, HK__GUEST__GUEST_TYPE__GUEST_STOP, w->guest);
		m.error = r.reason;
		m.state = r.state; /* CRASHED: memory may be gone somewhere, stop it */
		m.boot = r.boot;
		broadcast(d, &m);
	} else if (r.state != HK_VM_STOPPED) {
		guest_msg_init(&m, HK__GUEST__GUEST_TYPE__GUEST_END, w->guest);
		m.state = r.state;
		m.boot = r.boot;
		m.exit_status = r.exit_status;
		m.error = r.reason;
		guest_send(d, LEADER, &m);
	}
	hk_daemon_guest_put(d, w->g);
	free(w);
	job_leave(d);
	return NULL;
}

/* locked: the caller holds d->lock (guest start on the leader). */
static int watch_start(struct hk_daemon *d, struct hk_guest *g, uint64_t guest, bool locked)
{
	struct watch *w = malloc(sizeof(*w));
	pthread_attr_t a;
	pthread_t t;
	int ret;

	if (!w)
		return -ENOMEM;
	if (!job_enter(d)) {
		free(w);
		return -ESHUTDOWN;
	}
	if (!locked)
		pthread_mutex_lock(&d->lock);
	g->refs++;
	if (!locked)
		pthread_mutex_unlock(&d->lock);
	*w = (struct watch){.d = d, .g = g, .guest = guest};
	pthread_attr_init(&a);
	pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
	ret = pthread_create(&t, &a, watch_thread, w);
	pthread_attr_destroy(&a);
	if (ret) {
		if (locked)
			g->refs--; /* not the last: the caller holds one */
		else
			hk_daemon_guest_put(d, g);
		free(w);
		job_leave(d);
		return -ret;
	}
	return 0;
}

struct hk_guest *hk_daemon_pool_guest(struct hk_daemon *d, uint64_t guest)
{
	struct hk_guest *g;

	pthread_mutex_lock(&d->lock);
	g = d->guest;
	if (g && g->pool_guest == guest)
		g->refs++;
	else
		g = NULL;
	pthread_mutex_unlock(&d->lock);
	return g;
}

/* ---- leader: hkctl guest start and reboot ------------------------------- */

static int not_leader(struct hk_daemon *d, const char *what, char *err, size_t errlen)
{
	snprintf(err, errlen, "a pooled guest is %s on %s, the first node of %s (hkctl --node %s)",
		 what, d->cfg->nodes[LEADER].name, d->cfg->path, d->cfg->nodes[LEADER].name);
	return -EINVAL;
}

int hk_daemon_pool_leads(struct hk_daemon *d, const char *what, char *err, size_t errlen)
{
	return d->node_id == LEADER ? 0 : not_leader(d, what, err, errlen);
}

/*
 * Send m (PREPARE or REBOOT of guest) to every other node and wait for each
 * answer (PREPARED / REBOOTED, on_prepared).  0, or -errno with the first
 * error or the nodes that did not answer in err.  Called without d->lock:
 * the wait can last POOL_PREPARE_MS, and on_peer (a node lost) or
 * hk_daemon_pool_cancel (shutdown) end it early.
 */
static int ask_all(struct hk_daemon *d, Hk__Guest__GuestMsg *m, const char *doing, char *err,
		   size_t errlen)
{
	struct hk_daemon_pool *p = d->pool;
	unsigned peers = d->cfg->n_nodes - 1;
	struct timespec until;
	int ret = 0;

	pthread_mutex_lock(&p->lock);
	p->preparing = m->guest;
	p->asked = m->type;
	p->ask = ++p->ask_seq ? p->ask_seq : ++p->ask_seq; /* never 0: an unset field */
	m->ask = p->ask;
	p->answered = 0;
	p->prepared = p->failed = 0;
	p->prepare_err[0] = 0;
	if (p->cancelled) {
		snprintf(err, errlen, "daemon is shutting down");
		ret = -ESHUTDOWN;
	}
	pthread_mutex_unlock(&p->lock);

	for (unsigned n = 1; !ret && n < d->cfg->n_nodes; n++) {
		ret = guest_send(d, n, m);
		if (ret) {
			snprintf(err, errlen, "node %s: %s", d->cfg->nodes[n].name,
				 ret == -ENOTCONN ? "is down" : strerror(-ret));
			break;
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_sec += POOL_PREPARE_MS / 1000;
	pthread_mutex_lock(&p->lock);
	while (!ret && !p->cancelled && p->prepared + p->failed < peers &&
	       pthread_cond_timedwait(&p->cv, &p->lock, &until) != ETIMEDOUT)
		;
	if (ret) {
		/* err says which node */
	} else if (p->failed) {
		snprintf(err, errlen, "%s", p->prepare_err);
		ret = -EIO;
	} else if (p->cancelled && p->prepared < peers) {
		snprintf(err, errlen, "daemon is shutting down");
		ret = -ESHUTDOWN;
	} else if (p->prepared < peers) {
		snprintf(err, errlen, "%u of %u nodes did not %s the guest within %d s",
			 peers - p->prepared, peers, doing, POOL_PREPARE_MS / 1000);
		ret = -ETIMEDOUT;
	}
	p->preparing = 0;
	pthread_mutex_unlock(&p->lock);
	return ret;
}

int hk_daemon_pool_prepare(struct hk_daemon *d, const char *kernel, const char *cmdline,
			   struct hk_pool_config *pc, uint64_t *parked, char *err, size_t errlen)
{
	uint64_t guest = (uint64_t)time(NULL) << 20 | (hk_now_ns() & 0xfffff);
	Hk__Guest__GuestMsg m;
	int ret;

	if (d->node_id != LEADER)
		return not_leader(d, "started", err, errlen);
	pool_config(d, guest, pc, parked);
	guest_msg_init(&m, HK__GUEST__GUEST_TYPE__GUEST_PREPARE, guest);
	m.kernel = (char *)kernel;
	m.cmdline = (char *)cmdline;
	m.memory = hk_config_guest_memory(d->cfg);
	m.vcpus = d->cfg->vcpus;
	ret = ask_all(d, &m, "prepare", err, errlen);
	if (ret)
		hk_daemon_pool_abandon(d, guest, "guest start failed", true);
	return ret;
}

void hk_daemon_pool_abandon(struct hk_daemon *d, uint64_t guest, const char *why, bool drop)
{
	Hk__Guest__GuestMsg m;

	guest_msg_init(&m, HK__GUEST__GUEST_TYPE__GUEST_STOP, guest);
	m.error = (char *)why;
	/* CRASHED: the nodes stop the guest's memory too (stop_thread) */
	if (drop)
		m.state = HK_VM_CRASHED;
	broadcast(d, &m);
}

void hk_daemon_pool_cancel(struct hk_daemon *d)
{
	if (!d->pool)
		return;
	pthread_mutex_lock(&d->pool->lock);
	d->pool->cancelled = true;
	pthread_cond_broadcast(&d->pool->cv);
	pthread_mutex_unlock(&d->pool->lock);
}

/*
 * Guest reboot over every node.  The leader's vCPUs stop first, then every
 * other node stops its vCPUs and rebuilds its VM (REBOOT / REBOOTED): only
 * then does the leader load the kernel again, so no vCPU of the old boot
 * writes over the new one.  Pooled memory stays as it is
 * (hk_vm_reboot_prepare), replica pages with it.  Then RUN, as at a start.
 * A failure ends the guest on every node.
 *
 * Called without d->lock, with d->busy REBOOTING and a reference on g: the
 * wait for the other nodes runs without it (hkctl status answers), the
 * rebuild and the run under it (status reads the VM's devices under it).
 * Locks: boot_lock, then d->lock (the order of reboot_thread too).
 */
int hk_daemon_pool_reboot(struct hk_daemon *d, struct hk_guest *g, uint64_t *kept, char *err,
			  size_t errlen)
{
	Hk__Guest__GuestMsg m;
	int ret;

	if (d->node_id != LEADER)
		return not_leader(d, "rebooted", err, errlen);
	if (hk_mem_pool_stopped(hk_vm_mem(g->vm))) {
		snprintf(err, errlen,
			 "this guest's pooled memory was stopped (a node was lost, "
			 "or the guest was stopped): start a new guest");
		return -ESTALE;
	}
	hk_place_guest(d->pool->place, 0, 0); /* no more moves of this boot */
	pthread_rwlock_wrlock(&d->pool->boot_lock);
	hk_vm_halt(g->vm, "rebooting", true);
	guest_msg_init(&m, HK__GUEST__GUEST_TYPE__GUEST_REBOOT, g->pool_guest);
	ret = ask_all(d, &m, "reboot", err, errlen);
	pthread_mutex_lock(&d->lock);
	/* busy keeps starts out and the leader never takes a PREPARE, so g
	 * is still current; a broken promise must not rebuild a stale VM. */
	if (!ret && d->guest != g) {
		snprintf(err, errlen, "the guest was replaced during the reboot");
		ret = -ESTALE;
	}
	if (!ret) {
		/* hkctl replica set may have run during the wait: it applies. */
		hk_vm_set_replicas(g->vm, d->replicas_enabled ? d->replicas : NULL);
		ret = hk_vm_reboot_prepare(g->vm, kept, err, errlen);
	}
	pthread_rwlock_unlock(&d->pool->boot_lock);
	if (!ret)
		ret = hk_daemon_pool_run(d, g, err, errlen);
	if (!ret)
		ret = hk_vm_start(g->vm);
	if (ret) {
		hk_vm_reboot_failed(g->vm, err);
		hk_daemon_pool_abandon(d, g->pool_guest, err, false);
	}
	pthread_mutex_unlock(&d->lock);
	return ret;
}

/* d->lock held (guest start and reboot on the leader). */
int hk_daemon_pool_run(struct hk_daemon *d, struct hk_guest *g, char *err, size_t errlen)
{
	Hk__Guest__GuestMsg m;
	int ret;

	publish_vm(d, g->vm);
	hk_place_guest(d->pool->place, g->pool_guest, local_vcpus(d));
	ret = watch_start(d, g, g->pool_guest, true);
	if (ret) {
		snprintf(err, errlen, "cannot start the guest watcher: %s", strerror(-ret));
		return ret;
	}
	guest_msg_init(&m, HK__GUEST__GUEST_TYPE__GUEST_RUN, g->pool_guest);
	for (unsigned n = 1; n < d->cfg->n_nodes; n++) {
		ret = guest_send(d, n, &m);
		if (ret) {
			snprintf(err, errlen, "node %s: %s", d->cfg->nodes[n].name,
				 ret == -ENOTCONN ? "is down" : strerror(-ret));
			return ret;
		}
	}
	return 0;
}

/* ---- other nodes ---------------------------------------------------------- */

static void forward_console(void *ctx, const char *buf, size_t len)
{
	struct hk_guest *g = ctx;
	Hk__Guest__GuestMsg m;

	guest_msg_init(&m, HK__GUEST__GUEST_TYPE__GUEST_CONSOLE, g->pool_guest);
	m.console.data = (uint8_t *)buf;
	m.console.len = len;
	guest_send(g->daemon, LEADER, &m);
}

struct job {
	struct hk_daemon *d;
	Hk__Guest__GuestMsg *m; /* owned */
};

/* A job thread's last step: its message and itself go, the daemon may stop. */
static void *job_end(struct job *j)
{
	struct hk_daemon *d = j->d;

	hk__guest__guest_msg__free_unpacked(j->m, NULL);
	free(j);
	job_leave(d);
	return NULL;
}

/* PREPARE, on its own thread: creating a VM reads the kernel file. */
static void *prepare_thread(void *arg)
{
	struct job *j = arg;
	struct hk_daemon *d = j->d;
	struct hk_guest *g = calloc(1, sizeof(*g)), *old;
	struct hk_pool_config pc;
	struct hk_vm_config vc = {0};
	struct hk_vm_disk disks[HK_MAX_DISKS];
	Hk__Guest__GuestMsg r;
	char err[256] = "";
	int ret = -ENOMEM;

	guest_msg_init(&r, HK__GUEST__GUEST_TYPE__GUEST_PREPARED, j->m->guest);
	r.ask = j->m->ask;
	if (!g)
		goto reply;
	g->refs = 1;
	g->daemon = d;
	g->pool_guest = j->m->guest;
	g->kernel = strdup(j->m->kernel);
	g->cmdline = strdup(j->m->cmdline);
	pool_config(d, j->m->guest, &pc, &vc.start_parked);
	vc.kernel_path = j->m->kernel;
	vc.cmdline = j->m->cmdline;
	vc.memory = j->m->memory;
	vc.vcpus = j->m->vcpus;
	vc.console = forward_console;
	vc.console_ctx = g;
	vc.node_id = d->node_id;
	vc.pool = &pc;
	hk_daemon_vm_disks(d, g, &vc, disks);
	if (vc.memory != hk_config_guest_memory(d->cfg) || vc.vcpus != d->cfg->vcpus) {
		snprintf(err, sizeof(err),
			 "guest layout (memory, vCPUs) differs from this node's "
			 "hk.conf");
		ret = -EINVAL;
		goto reply;
	}
	pthread_mutex_lock(&d->lock);
	if (d->guest)
		hk_vm_stop(d->guest->vm, "replaced by a new guest");
	/* New memory: the old frames' entries mean nothing (as on the leader). */
	hk_replica_clear(d->replicas);
	d->kept_pages = 0;
	vc.replicas = d->replicas_enabled ? d->replicas : NULL;
	ret = hk_vm_create(&vc, &g->vm, err, sizeof(err));
	if (ret) {
		pthread_mutex_unlock(&d->lock);
		goto reply;
	}
	old = d->guest;
	d->guest = g;
	publish_vm(d, g->vm);
	g = NULL;
	hk_console_reset(&d->console);
	pthread_mutex_unlock(&d->lock);
	if (old)
		hk_daemon_guest_put(d, old);
reply:
	if (ret) {
		char line[320];

		snprintf(line, sizeof(line), "node %s: %s", d->node->name, err);
		r.error = line;
		fprintf(stderr, "hkd[%s]: pooled guest: %s\n", d->node->name, err);
		guest_send(d, LEADER, &r);
	} else {
		guest_send(d, LEADER, &r);
	}
	if (g) {
		if (g->vm)
			hk_vm_destroy(g->vm);
		free(g->kernel);
		free(g->cmdline);
		free(g);
	}
	return job_end(j);
}

static void *run_thread(void *arg)
{
	struct job *j = arg;
	struct hk_daemon *d = j->d;
	struct hk_guest *g = hk_daemon_pool_guest(d, j->m->guest);

	/* Not into a rebuild a REBOOT is making (the leader sends RUN only
	 * after every node answered; this keeps a stray RUN out too). */
	pthread_rwlock_rdlock(&d->pool->boot_lock);
	if (g) {
		int ret = watch_start(d, g, j->m->guest, false);

		hk_place_guest(d->pool->place, j->m->guest, local_vcpus(d));

		if (!ret)
			ret = hk_vm_start(g->vm);
		if (ret)
			hk_vm_end(g->vm, HK_VM_CRASHED, 0, "cannot start the vCPUs placed here");
		fprintf(stderr, "hkd[%s]: pooled guest running\n", d->node->name);
		hk_daemon_guest_put(d, g);
	}
	pthread_rwlock_unlock(&d->pool->boot_lock);
	return job_end(j);
}

/*
 * STOP and END join vCPU threads: never on the progress thread, whose
 * deliveries those vCPUs may be waiting for.  The boot is read and acted on
 * under boot_lock, so news about a boot a reboot is replacing (the leader
 * waits for REBOOTED without d->lock) cannot end the new boot.
 */
static void *stop_thread(void *arg)
{
	struct job *j = arg;
	struct hk_daemon *d = j->d;
	struct hk_guest *g = hk_daemon_pool_guest(d, j->m->guest);

	struct hk_vm_result now;

	pthread_rwlock_rdlock(&d->pool->boot_lock);
	if (g)
		hk_vm_result(g->vm, &now);
	if (g && j->m->boot && j->m->boot != now.boot) {
		/* About a boot a reboot has replaced: nothing to end. */
	} else if (g) {
		const char *why = *j->m->error ? j->m->error : "stopped by the leader";

		if (j->m->type == HK__GUEST__GUEST_TYPE__GUEST_END)
			hk_vm_end(g->vm, (enum hk_vm_state)j->m->state, j->m->exit_status,
				  j->m->error);
		else if (j->m->state == HK_VM_CRASHED)
			/* A lost node or a failed send may be behind it: a vCPU
			 * waiting for a page that will not come is released. */
			hk_vm_stop(g->vm, why);
		else /* pages keep moving: the guest may be rebooted */
			hk_vm_halt(g->vm, why, false);
	}
	pthread_rwlock_unlock(&d->pool->boot_lock);
	if (g)
		hk_daemon_guest_put(d, g);
	return job_end(j);
}

/* REBOOT: stop the vCPUs placed here and rebuild the VM (no kernel load:
 * that is the leader's), then tell the leader. */
static void *reboot_thread(void *arg)
{
	struct job *j = arg;
	struct hk_daemon *d = j->d;
	struct hk_guest *g = hk_daemon_pool_guest(d, j->m->guest);
	Hk__Guest__GuestMsg r;
	char err[256] = "", line[320];
	int ret = -ESRCH;

	guest_msg_init(&r, HK__GUEST__GUEST_TYPE__GUEST_REBOOTED, j->m->guest);
	r.ask = j->m->ask;
	if (!g) {
		snprintf(err, sizeof(err), "no such guest here");
	} else {
		/* No vCPU moves in from here on (placement off, arrivals of
		 * the old boot dropped once the VM is rebuilt). */
		hk_place_guest(d->pool->place, 0, 0);
		pthread_rwlock_wrlock(&d->pool->boot_lock);
		pthread_mutex_lock(&d->lock);
		hk_vm_set_replicas(g->vm, d->replicas_enabled ? d->replicas : NULL);
		ret = hk_vm_reboot_prepare(g->vm, &d->kept_pages, err, sizeof(err));
		pthread_mutex_unlock(&d->lock);
		pthread_rwlock_unlock(&d->pool->boot_lock);
	}
	if (ret) {
		snprintf(line, sizeof(line), "node %s: %s", d->node->name, err);
		r.error = line;
		fprintf(stderr, "hkd[%s]: pooled guest reboot: %s\n", d->node->name, err);
	} else {
		fprintf(stderr,
			"hkd[%s]: pooled guest rebuilt for a reboot, %llu replica pages "
			"here\n",
			d->node->name, (unsigned long long)d->kept_pages);
	}
	guest_send(d, LEADER, &r);
	if (g)
		hk_daemon_guest_put(d, g);
	return job_end(j);
}

/* VCPU_MOVE: restoring waits for KVM, not for the progress thread. */
static void *move_thread(void *arg)
{
	struct job *j = arg;
	struct hk_daemon *d = j->d;
	struct hk_guest *g = hk_daemon_pool_guest(d, j->m->guest);
	char err[256];

	pthread_rwlock_rdlock(&d->pool->boot_lock);
	if (g) {
		struct hk_vm_result now;

		hk_vm_result(g->vm, &now);
		if (j->m->boot != now.boot) {
			fprintf(stderr, "hkd[%s]: vCPU %u of boot %u dropped: the guest rebooted\n",
				d->node->name, j->m->vcpu, j->m->boot);
		} else if (hk_place_arrive(d->pool->place, g, j->m->vcpu, j->m->vcpu_state.data,
					   j->m->vcpu_state.len, err, sizeof(err))) {
			char reason[400];

			snprintf(reason, sizeof(reason), "vCPU %u could not move to %s: %s",
				 j->m->vcpu, d->node->name, err);
			fprintf(stderr, "hkd[%s]: %s\n", d->node->name, reason);
			hk_vm_end(g->vm, HK_VM_CRASHED, 0, reason);
		} else {
			fprintf(stderr, "hkd[%s]: vCPU %u arrived\n", d->node->name, j->m->vcpu);
		}
		hk_daemon_guest_put(d, g);
	}
	pthread_rwlock_unlock(&d->pool->boot_lock);
	return job_end(j);
}

static void spawn(struct hk_daemon *d, Hk__Guest__GuestMsg *m, void *(*fn)(void *))
{
	struct job *j = malloc(sizeof(*j));
	pthread_attr_t a;
	pthread_t t;

	if (!j || !job_enter(d)) { /* out of memory, or shutting down */
		hk__guest__guest_msg__free_unpacked(m, NULL);
		free(j);
		return;
	}
	*j = (struct job){.d = d, .m = m};
	pthread_attr_init(&a);
	pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&t, &a, fn, j)) {
		fprintf(stderr, "hkd[%s]: cannot start a guest job thread\n", d->node->name);
		hk__guest__guest_msg__free_unpacked(m, NULL);
		free(j);
		job_leave(d);
	}
	pthread_attr_destroy(&a);
}

/* ---- receiving ------------------------------------------------------------ */

static void on_coh(void *ctx, unsigned from, const void *buf, size_t len)
{
	struct hk_daemon *d = ctx;

	pthread_rwlock_rdlock(&d->pool->mem_lock);
	if (d->pool->mem)
		hk_mem_pool_deliver(d->pool->mem, from, buf, len);
	pthread_rwlock_unlock(&d->pool->mem_lock);
}

static void on_prepared(struct hk_daemon *d, unsigned from, const Hk__Guest__GuestMsg *m)
{
	struct hk_daemon_pool *p = d->pool;

	pthread_mutex_lock(&p->lock);
	if (m->guest == p->preparing && m->ask == p->ask && from < 64 &&
	    !(p->answered & 1ull << from) &&
	    (m->type == HK__GUEST__GUEST_TYPE__GUEST_PREPARED) ==
		(p->asked == HK__GUEST__GUEST_TYPE__GUEST_PREPARE)) {
		p->answered |= 1ull << from;
		if (*m->error) {
			p->failed++;
			snprintf(p->prepare_err, sizeof(p->prepare_err), "%s", m->error);
		} else {
			p->prepared++;
		}
		pthread_cond_broadcast(&p->cv);
	}
	pthread_mutex_unlock(&p->lock);
}

static void on_guest(void *ctx, unsigned from, const void *buf, size_t len)
{
	struct hk_daemon *d = ctx;
	Hk__Guest__GuestMsg *m = hk__guest__guest_msg__unpack(NULL, len, buf);
	bool from_leader = from == LEADER, leader = d->node_id == LEADER;

	if (!m || m->version != POOL_WIRE_VERSION) {
		fprintf(stderr, "hkd[%s]: dropped a malformed guest message from %s\n",
			d->node->name, d->cfg->nodes[from].name);
		goto out;
	}
	switch (m->type) {
	case HK__GUEST__GUEST_TYPE__GUEST_PREPARE:
		if (!from_leader || leader)
			break;
		spawn(d, m, prepare_thread);
		return;
	case HK__GUEST__GUEST_TYPE__GUEST_RUN:
		if (!from_leader || leader)
			break;
		spawn(d, m, run_thread);
		return;
	case HK__GUEST__GUEST_TYPE__GUEST_STOP:
		if (!from_leader || leader)
			break;
		spawn(d, m, stop_thread);
		return;
	case HK__GUEST__GUEST_TYPE__GUEST_END:
		if (!leader ||
		    (m->state != HK_VM_EXITED && m->state != HK_VM_CRASHED)) /* an outcome only */
			break;
		fprintf(stderr, "hkd[%s]: guest ended on %s: %s\n", d->node->name,
			d->cfg->nodes[from].name, m->error);
		spawn(d, m, stop_thread);
		return;
	case HK__GUEST__GUEST_TYPE__GUEST_VCPU_MOVE:
		spawn(d, m, move_thread);
		return;
	case HK__GUEST__GUEST_TYPE__GUEST_PREPARED:
	case HK__GUEST__GUEST_TYPE__GUEST_REBOOTED:
		if (leader)
			on_prepared(d, from, m);
		break;
	case HK__GUEST__GUEST_TYPE__GUEST_REBOOT:
		if (!from_leader || leader)
			break;
		spawn(d, m, reboot_thread);
		return;
	case HK__GUEST__GUEST_TYPE__GUEST_CONSOLE:
		if (leader && d->pool->guest == m->guest)
			hk_console_append(&d->console, (const char *)m->console.data,
					  m->console.len);
		break;
	default:
		break;
	}
out:
	if (m)
		hk__guest__guest_msg__free_unpacked(m, NULL);
}

/*
 * A lost node takes its pages with it: the guest cannot go on.  End it
 * here with the reason; vCPUs waiting for that node's pages are released
 * by the engine's abort, and the leader stops everyone else.
 */
static void on_peer(void *ctx, unsigned node, bool up, const char *why)
{
	struct hk_daemon *d = ctx;
	char reason[200];

	if (up)
		return;
	fprintf(stderr, "hkd[%s]: node %s is down: %s\n", d->node->name, d->cfg->nodes[node].name,
		why);
	/*
	 * On the progress thread: take no daemon lock (a guest start may
	 * hold it for seconds) and nothing that waits.  The read lock keeps
	 * the guest's memory and VM alive (detach waits for it).  End the
	 * guest first, so its outcome is this reason and not what a vCPU does
	 * with the zeros the abort hands it.
	 */
	snprintf(reason, sizeof(reason), "node %s is down: %s", d->cfg->nodes[node].name, why);
	/* A start or reboot waiting for every node's answer: one will not come. */
	pthread_mutex_lock(&d->pool->lock);
	if (d->pool->preparing) {
		d->pool->failed++;
		snprintf(d->pool->prepare_err, sizeof(d->pool->prepare_err), "%s", reason);
		pthread_cond_broadcast(&d->pool->cv);
	}
	pthread_mutex_unlock(&d->pool->lock);
	pthread_rwlock_rdlock(&d->pool->mem_lock);
	if (d->pool->vm)
		hk_vm_end(d->pool->vm, HK_VM_CRASHED, 0, reason);
	if (d->pool->mem)
		hk_mem_pool_abort(d->pool->mem, reason);
	pthread_rwlock_unlock(&d->pool->mem_lock);
}

/* ---- start and stop -------------------------------------------------------- */

int hk_daemon_pool_start(struct hk_daemon *d, char *err, size_t errlen)
{
	struct hk_daemon_pool *p = calloc(1, sizeof(*p));
	int ret;

	if (!p) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	p->d = d;
	pthread_rwlock_init(&p->mem_lock, NULL);
	pthread_rwlock_init(&p->boot_lock, NULL);
	pthread_mutex_init(&p->lock, NULL);
	{
		pthread_condattr_t ca; /* deadlines are CLOCK_MONOTONIC */

		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&p->cv, &ca);
		pthread_cond_init(&p->jobs_cv, &ca);
		pthread_condattr_destroy(&ca);
	}
	d->pool = p;
	ret = hk_cluster_create(d->cfg, d->node_id, &d->cluster, err, errlen);
	if (ret)
		return ret;
	hk_cluster_on(d->cluster, HK_MSG_COH, on_coh, d);
	hk_cluster_on(d->cluster, HK_MSG_GUEST, on_guest, d);
	hk_cluster_on_peer(d->cluster, on_peer, d);
	ret = hk_daemon_dev_start(d, err, errlen);
	if (ret)
		return ret;
	fprintf(stderr, "hkd[%s]: joining cluster %s (%u nodes, %s)\n", d->node->name,
		d->cfg->cluster_name, d->cfg->n_nodes, hk_cluster_provider(d->cluster));
	ret = hk_cluster_join(d->cluster, POOL_JOIN_MS, err, errlen);
	if (ret)
		return ret;
	fprintf(stderr, "hkd[%s]: cluster %s formed: %u nodes\n", d->node->name,
		d->cfg->cluster_name, d->cfg->n_nodes);
	ret = hk_place_start(d, &p->place);
	if (ret)
		snprintf(err, errlen, "cannot start vCPU placement: %s", strerror(-ret));
	return ret;
}

void hk_daemon_pool_stop(struct hk_daemon *d)
{
	if (d->pool) {
		struct hk_daemon_pool *p = d->pool;
		struct timespec until;

		/* No new job; the running ones finish (the guest was stopped,
		 * so watchers return) before what they use goes away. */
		clock_gettime(CLOCK_MONOTONIC, &until);
		until.tv_sec += POOL_JOBS_WAIT_S;
		pthread_mutex_lock(&p->lock);
		p->closing = true;
		while (p->jobs &&
		       pthread_cond_timedwait(&p->jobs_cv, &p->lock, &until) != ETIMEDOUT)
			;
		if (p->jobs)
			fprintf(stderr, "hkd[%s]: %u guest job threads still running at shutdown\n",
				d->node->name, p->jobs);
		pthread_mutex_unlock(&p->lock);
		hk_place_stop(p->place);
		p->place = NULL;
	}
	hk_daemon_dev_stop(d);
	hk_cluster_destroy(d->cluster);
	d->cluster = NULL;
	hk_daemon_dev_free(d);
	if (d->pool) {
		pthread_rwlock_destroy(&d->pool->mem_lock);
		pthread_rwlock_destroy(&d->pool->boot_lock);
		pthread_mutex_destroy(&d->pool->lock);
		pthread_cond_destroy(&d->pool->cv);
		pthread_cond_destroy(&d->pool->jobs_cv);
		free(d->pool);
		d->pool = NULL;
	}
}

void hk_daemon_pool_stats(struct hk_daemon *d, struct hk_pool_stats *st, uint64_t *vcpu_migrations)
{
	memset(st, 0, sizeof(*st));
	*vcpu_migrations = 0;
	if (!d->pool)
		return;
	pthread_rwlock_rdlock(&d->pool->mem_lock);
	if (d->pool->mem)
		hk_mem_pool_stats(d->pool->mem, st);
	pthread_rwlock_unlock(&d->pool->mem_lock);
	*vcpu_migrations = hk_place_migrations(d->pool->place);
}
