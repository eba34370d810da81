/*
 * hkctl status and hkctl nodes on one node: what this daemon knows about
 * itself, its guest (or its share of a pooled guest) and the cluster.
 * Both run on a control-server thread and only take snapshots: the
 * daemon lock for the current guest, the cluster's and pool's own locks
 * for their counters.  The daemon lock is never held across a wait for
 * another node, so status answers while a pooled start or reboot waits.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cluster.h"
#include "daemon.h"

static void status_disks(struct hk_daemon *d, Hk__Ctl__StatusReply *s)
{
	s->disks = calloc(d->n_disks ? d->n_disks : 1, sizeof(*s->disks));
	for (unsigned i = 0; s->disks && i < d->n_disks; i++) {
		Hk__Ctl__DiskInfo *di = calloc(1, sizeof(*di));

		if (!di)
			break;
		hk__ctl__disk_info__init(di);
		di->name = strdup(d->disks[i].conf->name);
		di->path = strdup(d->disks[i].conf->path);
		di->size = hk_disk_size(d->disks[i].disk);
		di->id = d->disks[i].id;
		di->direct = hk_disk_uses_direct(d->disks[i].disk);
		di->backend = strdup(hk_disk_backend(d->disks[i].disk));
		s->disks[s->n_disks++] = di;
	}
}

/* This node's share of a pooled guest; all zeros (pooled false) without one. */
static void status_pool(struct hk_daemon *d, Hk__Ctl__StatusReply *s)
{
	struct hk_pool_stats ps = {0};
	uint64_t migrations = 0;

	if (!d->cluster)
		return;
	hk_daemon_pool_stats(d, &ps, &migrations);
	/* A pooled guest always has a budget here (and usually home pages);
	 * without one the pool reports zeros and the VM's own count stands. */
	s->pooled = ps.budget_pages || ps.home_pages;
	if (s->pooled)
		s->resident_pages = ps.resident_pages;
	s->remote_faults = ps.remote_faults;
	s->local_faults = ps.local_faults;
	s->invalidations = ps.invalidations;
	s->vcpu_migrations = migrations;
	s->evictions = ps.evictions;
	s->pages_sent = ps.pages_sent;
	s->pages_recv = ps.pages_recv;
	s->home_pages = ps.home_pages;
	s->budget_pages = ps.budget_pages;
	hk_daemon_dev_stats(d, &s->device_forwards, &s->device_served);
}

/*
 * A start or reboot in progress (d->lock held): the guest as status shows
 * it.  A start has no VM yet: state none with the new kernel; a reboot's
 * VM is stopped for it.  The reason says what it waits for.
 */
static Hk__Ctl__GuestInfo *busy_info(struct hk_daemon *d, struct hk_guest *g,
				     const struct hk_vm_result *r)
{
	bool starting = d->busy == HK_DAEMON_STARTING;
	Hk__Ctl__GuestInfo *gi = hk_daemon_guest_info(d, starting ? NULL : g, r);
	char reason[160];

	if (!gi)
		return NULL;
	snprintf(reason, sizeof(reason), "%s: waiting for every node to %s its share (%.1f s)",
		 starting ? "starting" : "rebooting", starting ? "prepare" : "rebuild",
		 (hk_now_ns() - d->busy_since_ns) / 1e9);
	if (gi->reason && gi->reason != protobuf_c_empty_string)
		free(gi->reason);
	gi->reason = strdup(reason);
	if (starting) {
		gi->kernel = strdup(d->busy_guest->kernel);
		gi->cmdline = strdup(d->busy_guest->cmdline);
	}
	return gi;
}

/* KVM's counters from the snapshot (n < 0: none, why says so). */
static void status_kvm(Hk__Ctl__StatusReply *s, const struct hk_kvm_stat *ks, int n,
		       const char *why)
{
	if (n <= 0) {
		s->kvm_stats_absent =
		    strdup(n ? why : "this kernel has none of the KVM stats hk shows");
		return;
	}
	s->kvm_stats = calloc(n, sizeof(*s->kvm_stats));
	for (int i = 0; s->kvm_stats && i < n; i++) {
		Hk__Ctl__KvmStat *k = calloc(1, sizeof(*k));

		if (!k)
			break;
		hk__ctl__kvm_stat__init(k);
		k->name = strdup(ks[i].name);
		k->value = ks[i].value;
		k->vcpu = ks[i].vcpu;
		s->kvm_stats[s->n_kvm_stats++] = k;
	}
}

void hk_daemon_status(struct hk_daemon *d, Hk__Ctl__CtlResponse *rsp)
{
	Hk__Ctl__StatusReply *s = calloc(1, sizeof(*s));
	Hk__Ctl__GuestInfo *busy = NULL;
	struct hk_vm_result r = {0};
	struct hk_vm_stats st;
	struct hk_kvm_stat ks[HK_KVM_STATS_SHOWN];
	char ks_why[160] = "no guest";
	int n_ks = -ENOTSUP;
	struct hk_guest *g;
	uint64_t kept;
	bool enabled, starting;

	/* One snapshot under d->lock: the current guest, a start or reboot
	 * in progress, and the VM's counters (a reboot's rebuild frees the
	 * devices they are read from, and runs under d->lock). */
	pthread_mutex_lock(&d->lock);
	g = d->guest;
	if (g) {
		g->refs++;
		hk_vm_result(g->vm, &r);
		hk_vm_get_stats(g->vm, &st);
		/* the stats fds are closed and reopened by a reboot's rebuild */
		n_ks = hk_vm_kvm_stats(g->vm, ks, HK_KVM_STATS_SHOWN, ks_why, sizeof(ks_why));
	}
	if (d->busy != HK_DAEMON_IDLE && s)
		busy = busy_info(d, g, &r);
	/* a start shows the guest it makes, not the old one's counters */
	starting = d->busy == HK_DAEMON_STARTING;
	kept = d->kept_pages;
	enabled = d->replicas_enabled;
	pthread_mutex_unlock(&d->lock);

	if (!s) {
		hk_daemon_reply_error(rsp, "status: out of memory");
		goto out;
	}
	hk__ctl__status_reply__init(s);
	s->node = strdup(d->node->name);
	s->cluster = strdup(d->cfg->cluster_name);
	s->vcpus = d->cfg->vcpus;
	s->guest_memory = hk_config_guest_memory(d->cfg);
	s->pid = (uint32_t)getpid();
	s->uptime_ms = (hk_now_ns() - d->start_ns) / 1000000;
	s->console_bytes = hk_console_total(&d->console);
	s->replicas_enabled = enabled;
	s->kept_pages = kept;
	status_disks(d, s);
	if (g && !starting) {
		s->resident_pages = st.mem.resident_pages;
		s->uffd_faults = st.mem.faults;
		s->vcpu_exits = st.vcpu_exits;
		s->wp_faults = st.mem.wp_faults;
		s->bytes_from_disk = st.bytes_from_disk;
		s->bytes_from_replicas = st.bytes_from_replicas;
		s->tsc_khz = hk_vm_tsc_khz(g->vm);
		/* A static name: daemon_rsp_free leaves it alone. */
		s->write_tracking = (char *)hk_mem_tracking(hk_vm_mem(g->vm));
		s->tracking_harvests = st.mem.harvests;
		s->tracking_false_alarms = st.mem.false_alarms;
	}
	if (starting)
		snprintf(ks_why, sizeof(ks_why), "a guest is starting");
	status_kvm(s, ks, starting ? -ENOTSUP : n_ks, ks_why);
	status_pool(d, s);
	s->guest = busy ? busy : hk_daemon_guest_info(d, g, &r);
	rsp->rep_case = HK__CTL__CTL_RESPONSE__REP_STATUS;
	rsp->status = s;
out:
	if (g)
		hk_daemon_guest_put(d, g);
}

static Hk__Ctl__NodeInfo *node_info(const struct hk_cluster_peer *p, uint64_t now)
{
	Hk__Ctl__NodeInfo *n = calloc(1, sizeof(*n));
	char *name = strdup(p->name), *address = strdup(p->address);

	if (!n || !name || !address) {
		free(n);
		free(name);
		free(address);
		return NULL;
	}
	hk__ctl__node_info__init(n);
	n->name = name;
	n->address = address;
	n->self = p->self;
	n->up = p->up;
	if (p->self)
		n->last_heard_ms = 0;
	else if (!p->last_heard_ns)
		n->last_heard_ms = -1;
	else
		n->last_heard_ms = now > p->last_heard_ns ? (now - p->last_heard_ns) / 1000000 : 0;
	n->rtt_us = p->rtt_ns / 1000;
	n->msgs_sent = p->msgs_sent;
	n->msgs_recv = p->msgs_recv;
	n->bytes_sent = p->bytes_sent;
	n->bytes_recv = p->bytes_recv;
	n->dropped = p->dropped;
	return n;
}

/*
 * Without a cluster (one [node], or a daemon that has not joined) this
 * node knows only itself: it is up, every other configured node is
 * reported down and never heard from.
 */
static unsigned peers_from_config(struct hk_daemon *d, struct hk_cluster_peer *out)
{
	for (unsigned i = 0; i < d->cfg->n_nodes; i++) {
		struct hk_cluster_peer *p = &out[i];

		memset(p, 0, sizeof(*p));
		snprintf(p->name, sizeof(p->name), "%s", d->cfg->nodes[i].name);
		snprintf(p->address, sizeof(p->address), "%s", d->cfg->nodes[i].address);
		p->self = p->up = i == d->node_id;
	}
	return d->cfg->n_nodes;
}

void hk_daemon_nodes(struct hk_daemon *d, Hk__Ctl__CtlResponse *rsp)
{
	struct hk_cluster_peer peers[HK_MAX_NODES];
	Hk__Ctl__NodesReply *r = calloc(1, sizeof(*r));
	uint64_t now = hk_now_ns();
	unsigned n;

	if (!r)
		goto oom;
	hk__ctl__nodes_reply__init(r);
	n = d->cluster ? hk_cluster_peers(d->cluster, peers, HK_MAX_NODES)
		       : peers_from_config(d, peers);
	r->cluster = strdup(d->cfg->cluster_name);
	r->provider = strdup(d->cluster ? hk_cluster_provider(d->cluster) : "");
	r->nodes = calloc(n ? n : 1, sizeof(*r->nodes));
	if (!r->cluster || !r->provider || !r->nodes)
		goto oom;
	for (unsigned i = 0; i < n; i++) {
		r->nodes[i] = node_info(&peers[i], now);
		if (!r->nodes[i])
			goto oom;
		r->n_nodes++;
	}
	rsp->rep_case = HK__CTL__CTL_RESPONSE__REP_NODES;
	rsp->nodes = r;
	return;
oom:
	hk_daemon_nodes_free(r);
	hk_daemon_reply_error(rsp, "nodes: out of memory");
}

static void free_str(char *s)
{
	if (s && s != protobuf_c_empty_string)
		free(s);
}

void hk_daemon_nodes_free(Hk__Ctl__NodesReply *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < r->n_nodes; i++) {
		free_str(r->nodes[i]->name);
		free_str(r->nodes[i]->address);
		free(r->nodes[i]);
	}
	free(r->nodes);
	free_str(r->cluster);
	free_str(r->provider);
	free(r);
}
