/*
 * Disks of a pooled guest, wherever the vCPU runs.
 *
 * Each disk is served by the node hk.conf attaches it to.  Every node's VM
 * has a register window per disk in hk.conf order; a window whose disk is
 * elsewhere forwards each access here (hk_vm_remote_ops): the vCPU thread
 * sends DEV_MMIO to the disk's node and waits for DEV_MMIO_REPLY.  On the
 * disk's node one worker thread does the accesses in arrival order: a
 * queue notify makes the device walk the virtqueue and move data through
 * pooled memory, which may fault pages in, so never on the progress thread
 * that delivers those pages.
 *
 * A waiting vCPU gives up when its guest ends (a stop, a lost node): reads
 * are then left all ones, as on an empty bus.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cluster.h"
#include "daemon.h"
#include "dev.pb-c.h"

#define DEV_WIRE_VERSION 1
#define DEV_POLL_MS	 200 /* how often a waiting vCPU looks at its guest */

struct dev_wait {
	struct dev_wait *next;
	uint64_t seq;
	unsigned node; /* the only node an answer is taken from */
	bool done;
	char error[120];
	uint64_t data;
};

struct dev_job {
	struct dev_job *next;
	unsigned from;
	Hk__Dev__DevMsg *m;
};

struct hk_daemon_dev {
	struct hk_daemon *d;
	int disk_node[HK_MAX_DISKS]; /* node index serving each [disk] */

	pthread_mutex_t lock;
	pthread_cond_t cv; /* replies (asker side) and jobs (server side) */
	struct dev_wait *waiting;
	uint64_t next_seq;
	struct dev_job *jobs, **jobs_tail;
	bool stop;
	pthread_t worker;
	bool worker_started;

	_Atomic uint64_t forwards, served;
};

static void msg_init(Hk__Dev__DevMsg *m, Hk__Dev__DevType type, uint64_t guest)
{
	hk__dev__dev_msg__init(m);
	m->version = DEV_WIRE_VERSION;
	m->type = type;
	m->guest = guest;
}

static int dev_send(struct hk_daemon *d, unsigned node, const Hk__Dev__DevMsg *m)
{
	uint8_t buf[256];
	size_t n = hk__dev__dev_msg__get_packed_size(m);

	if (n > sizeof(buf))
		return -EMSGSIZE;
	hk__dev__dev_msg__pack(m, buf);
	return hk_cluster_send(d->cluster, node, HK_MSG_DEV, buf, n);
}

static bool guest_over(struct hk_guest *g)
{
	struct hk_vm_result r;

	hk_vm_result(g->vm, &r);
	return r.state != HK_VM_RUNNING && r.state != HK_VM_CREATED;
}

/* ---- asking: a vCPU here touched a disk served elsewhere ------------------ */

static void remote_mmio(void *ctx, unsigned slot, uint64_t off, bool write, uint8_t *data,
			unsigned len)
{
	struct hk_guest *g = ctx;
	struct hk_daemon *d = g->daemon;
	struct hk_daemon_dev *dv = d->dev;
	struct dev_wait w = {0};
	Hk__Dev__DevMsg m;
	int ret;

	if (slot >= d->cfg->n_disks || len > 8)
		return;
	msg_init(&m, HK__DEV__DEV_TYPE__DEV_MMIO, g->pool_guest);
	m.slot = slot;
	m.offset = off;
	m.write = write;
	m.len = len;
	if (write)
		memcpy(&m.data, data, len);

	pthread_mutex_lock(&dv->lock);
	w.seq = m.seq = ++dv->next_seq;
	w.node = (unsigned)dv->disk_node[slot];
	w.next = dv->waiting;
	dv->waiting = &w;
	pthread_mutex_unlock(&dv->lock);

	ret = dev_send(d, (unsigned)dv->disk_node[slot], &m);
	atomic_fetch_add(&dv->forwards, 1);

	pthread_mutex_lock(&dv->lock);
	if (ret)
		snprintf(w.error, sizeof(w.error), "cannot send: %s", strerror(-ret));
	while (!ret && !w.done) {
		struct timespec until;

		clock_gettime(CLOCK_MONOTONIC, &until);
		until.tv_nsec += DEV_POLL_MS * 1000000L;
		until.tv_sec += until.tv_nsec / 1000000000L;
		until.tv_nsec %= 1000000000L;
		if (pthread_cond_timedwait(&dv->cv, &dv->lock, &until) == ETIMEDOUT &&
		    !w.done) {
			pthread_mutex_unlock(&dv->lock);
			bool over = guest_over(g);
			pthread_mutex_lock(&dv->lock);
			if (over && !w.done) {
				snprintf(w.error, sizeof(w.error), "the guest ended");
				break;
			}
		}
	}
	for (struct dev_wait **p = &dv->waiting; *p; p = &(*p)->next)
		if (*p == &w) {
			*p = w.next;
			break;
		}
	pthread_mutex_unlock(&dv->lock);

	if (*w.error) {
		if (strcmp(w.error, "the guest ended"))
			fprintf(stderr, "hkd[%s]: disk %s on %s: register 0x%llx: %s\n",
				d->node->name, d->cfg->disks[slot].name,
				d->cfg->nodes[dv->disk_node[slot]].name, (unsigned long long)off,
				w.error);
		return;
	}
	if (!write)
		memcpy(data, &w.data, len);
}

static const struct hk_vm_remote_ops remote_ops = {
	.size = sizeof(struct hk_vm_remote_ops),
	.mmio = remote_mmio,
};

unsigned hk_daemon_vm_disks(struct hk_daemon *d, struct hk_guest *g, struct hk_vm_config *vc,
			    struct hk_vm_disk *out)
{
	unsigned n = 0;

	for (unsigned i = 0; i < d->cfg->n_disks; i++) {
		struct hk_daemon_disk *dd = hk_daemon_disk(d, d->cfg->disks[i].name);

		if (dd)
			out[n++] = (struct hk_vm_disk){dd->disk, dd->id};
		else if (d->cluster)
			out[n++] = (struct hk_vm_disk){NULL, (uint16_t)i};
	}
	vc->disks = out;
	vc->n_disks = n;
	if (d->cluster) {
		vc->remote = &remote_ops;
		vc->remote_ctx = g;
	}
	return n;
}

/* ---- serving: accesses to the disks attached here ------------------------- */

static void serve(struct hk_daemon *d, unsigned from, const Hk__Dev__DevMsg *m)
{
	struct hk_daemon_dev *dv = d->dev;
	struct hk_guest *g = hk_daemon_pool_guest(d, m->guest);
	Hk__Dev__DevMsg r;
	uint8_t data[8];
	char err[120] = "";
	int ret;

	msg_init(&r, HK__DEV__DEV_TYPE__DEV_MMIO_REPLY, m->guest);
	r.seq = m->seq;
	r.slot = m->slot;
	if (!g) {
		snprintf(err, sizeof(err), "no such guest here (generation %llu)",
			 (unsigned long long)m->guest);
	} else if (m->slot >= d->cfg->n_disks || dv->disk_node[m->slot] != (int)d->node_id) {
		snprintf(err, sizeof(err), "disk slot %u is not attached to %s", m->slot,
			 d->node->name);
	} else {
		memcpy(data, &m->data, sizeof(data));
		ret = hk_vm_device_access(g->vm, m->slot, m->offset, m->write, data, m->len);
		if (ret)
			snprintf(err, sizeof(err), "%s", ret == -EINVAL ? "bad offset or width"
								 : "device not ready");
		else if (!m->write)
			memcpy(&r.data, data, sizeof(data));
	}
	if (g)
		hk_daemon_guest_put(d, g);
	if (*err) {
		fprintf(stderr, "hkd[%s]: refused a device access from %s: %s\n", d->node->name,
			d->cfg->nodes[from].name, err);
	}
	r.error = err;
	ret = dev_send(d, from, &r);
	if (ret)
		fprintf(stderr, "hkd[%s]: cannot answer a device access of %s: %s\n",
			d->node->name, d->cfg->nodes[from].name, strerror(-ret));
	else if (!*err)
		atomic_fetch_add(&dv->served, 1);
}

static void *worker(void *arg)
{
	struct hk_daemon *d = arg;
	struct hk_daemon_dev *dv = d->dev;

	pthread_mutex_lock(&dv->lock);
	for (;;) {
		struct dev_job *j = dv->jobs;

		if (!j) {
			if (dv->stop)
				break;
			pthread_cond_wait(&dv->cv, &dv->lock);
			continue;
		}
		dv->jobs = j->next;
		if (!dv->jobs)
			dv->jobs_tail = &dv->jobs;
		pthread_mutex_unlock(&dv->lock);
		if (!dv->stop)
			serve(d, j->from, j->m);
		hk__dev__dev_msg__free_unpacked(j->m, NULL);
		free(j);
		pthread_mutex_lock(&dv->lock);
	}
	pthread_mutex_unlock(&dv->lock);
	return NULL;
}

/* Progress thread: queue an access, or wake the vCPU a reply is for. */
static void on_dev(void *ctx, unsigned from, const void *buf, size_t len)
{
	struct hk_daemon *d = ctx;
	struct hk_daemon_dev *dv = d->dev;
	Hk__Dev__DevMsg *m = hk__dev__dev_msg__unpack(NULL, len, buf);

	if (!m || m->version != DEV_WIRE_VERSION || m->len > 8 || m->slot >= d->cfg->n_disks ||
	    (m->type != HK__DEV__DEV_TYPE__DEV_MMIO &&
	     m->type != HK__DEV__DEV_TYPE__DEV_MMIO_REPLY)) {
		fprintf(stderr, "hkd[%s]: dropped a malformed device message from %s\n",
			d->node->name, d->cfg->nodes[from].name);
		goto drop;
	}
	pthread_mutex_lock(&dv->lock);
	if (m->type == HK__DEV__DEV_TYPE__DEV_MMIO) {
		struct dev_job *j = malloc(sizeof(*j));

		if (!j) {
			pthread_mutex_unlock(&dv->lock);
			goto drop; /* the asker gives up when its guest ends */
		}
		*j = (struct dev_job){NULL, from, m};
		*dv->jobs_tail = j;
		dv->jobs_tail = &j->next;
		pthread_cond_broadcast(&dv->cv);
		pthread_mutex_unlock(&dv->lock);
		return;
	}
	for (struct dev_wait *w = dv->waiting; w; w = w->next) {
		if (w->seq != m->seq || from != w->node)
			continue; /* only the disk's node answers for it */
		w->data = m->data;
		snprintf(w->error, sizeof(w->error), "%s", m->error);
		w->done = true;
		pthread_cond_broadcast(&dv->cv);
		break;
	}
	pthread_mutex_unlock(&dv->lock);
drop:
	if (m)
		hk__dev__dev_msg__free_unpacked(m, NULL);
}

int hk_daemon_dev_start(struct hk_daemon *d, char *err, size_t errlen)
{
	struct hk_daemon_dev *dv = calloc(1, sizeof(*dv));
	pthread_condattr_t ca;
	int ret;

	if (!dv) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	dv->d = d;
	for (unsigned i = 0; i < d->cfg->n_disks; i++)
		dv->disk_node[i] =
			(int)(hk_config_node(d->cfg, d->cfg->disks[i].node) - d->cfg->nodes);
	dv->jobs_tail = &dv->jobs;
	pthread_mutex_init(&dv->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&dv->cv, &ca);
	pthread_condattr_destroy(&ca);
	d->dev = dv;
	ret = pthread_create(&dv->worker, NULL, worker, d);
	if (ret) {
		snprintf(err, errlen, "cannot start the device thread: %s", strerror(ret));
		return -ret;
	}
	dv->worker_started = true;
	hk_cluster_on(d->cluster, HK_MSG_DEV, on_dev, d);
	return 0;
}

/* The guest was stopped: the worker ends (it sends through the cluster, so
 * before the cluster goes).  Accesses arriving later are queued, unserved. */
void hk_daemon_dev_stop(struct hk_daemon *d)
{
	struct hk_daemon_dev *dv = d->dev;

	if (!dv)
		return;
	pthread_mutex_lock(&dv->lock);
	dv->stop = true;
	pthread_cond_broadcast(&dv->cv);
	pthread_mutex_unlock(&dv->lock);
	if (dv->worker_started)
		pthread_join(dv->worker, NULL);
	dv->worker_started = false;
}

/* After the cluster stopped delivering. */
void hk_daemon_dev_free(struct hk_daemon *d)
{
	struct hk_daemon_dev *dv = d->dev;

	if (!dv)
		return;
	hk_daemon_dev_stop(d);
	while (dv->jobs) {
		struct dev_job *j = dv->jobs;

		dv->jobs = j->next;
		hk__dev__dev_msg__free_unpacked(j->m, NULL);
		free(j);
	}
	pthread_cond_destroy(&dv->cv);
	pthread_mutex_destroy(&dv->lock);
	free(dv);
	d->dev = NULL;
}

void hk_daemon_dev_stats(struct hk_daemon *d, uint64_t *forwards, uint64_t *served)
{
	*forwards = d->dev ? atomic_load(&d->dev->forwards) : 0;
	*served = d->dev ? atomic_load(&d->dev->served) : 0;
}
