/*
 * hkd's control requests: guest lifecycle, console and status for one
 * node.  Every request runs on a control-server thread; the daemon lock
 * guards which guest is current, never a running guest itself, and is
 * never held while waiting for another node: a pooled start or reboot
 * marks the daemon busy (daemon.h) and waits without it.
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon.h"

#define CONSOLE_REPLY_MAX (HK_CTL_MAX_FRAME - 4096)

#define reply_error hk_daemon_reply_error

#define guest_put  hk_daemon_guest_put
#define guest_get  hk_daemon_guest_get
#define guest_info hk_daemon_guest_info

void hk_daemon_guest_put(struct hk_daemon *d, struct hk_guest *g)
{
	bool last;

	pthread_mutex_lock(&d->lock);
	last = --g->refs == 0;
	pthread_mutex_unlock(&d->lock);
	if (!last)
		return;
	hk_vm_destroy(g->vm);
	free(g->kernel);
	free(g->cmdline);
	free(g);
}

/* Current guest with a reference held, or NULL. */
struct hk_guest *hk_daemon_guest_get(struct hk_daemon *d)
{
	struct hk_guest *g;

	pthread_mutex_lock(&d->lock);
	g = d->guest;
	if (g)
		g->refs++;
	pthread_mutex_unlock(&d->lock);
	return g;
}

static Hk__Ctl__GuestState state_to_proto(enum hk_vm_state s)
{
	switch (s) {
	case HK_VM_RUNNING:
		return HK__CTL__GUEST_STATE__GUEST_RUNNING;
	case HK_VM_EXITED:
		return HK__CTL__GUEST_STATE__GUEST_EXITED;
	case HK_VM_CRASHED:
		return HK__CTL__GUEST_STATE__GUEST_CRASHED;
	case HK_VM_STOPPED:
		return HK__CTL__GUEST_STATE__GUEST_STOPPED;
	default:
		return HK__CTL__GUEST_STATE__GUEST_NONE;
	}
}

Hk__Ctl__GuestInfo *hk_daemon_guest_info(struct hk_daemon *d, struct hk_guest *g,
					 const struct hk_vm_result *r)
{
	Hk__Ctl__GuestInfo *gi = calloc(1, sizeof(*gi));
	char line[160];

	if (!gi)
		return NULL;
	hk__ctl__guest_info__init(gi);
	if (!g)
		return gi;
	gi->state = state_to_proto(r->state);
	gi->exit_status = r->exit_status;
	gi->kernel = strdup(g->kernel);
	gi->cmdline = strdup(g->cmdline);
	gi->runtime_ms = r->runtime_ns / 1000000;
	gi->reason = strdup(r->reason);
	/* A guest that died says why on its console more often than in its
	 * exit: every waiter shows this line with the state. */
	hk_console_last_line(&d->console, line, sizeof(line));
	gi->last_console_line = strdup(line);
	return gi;
}

static void guest_info_free(Hk__Ctl__GuestInfo *gi)
{
	if (!gi)
		return;
	if (gi->kernel != protobuf_c_empty_string)
		free(gi->kernel);
	if (gi->cmdline != protobuf_c_empty_string)
		free(gi->cmdline);
	if (gi->reason != protobuf_c_empty_string)
		free(gi->reason);
	if (gi->last_console_line != protobuf_c_empty_string)
		free(gi->last_console_line);
	free(gi);
}

static void console_sink(void *ctx, const char *buf, size_t len)
{
	hk_console_append(ctx, buf, len);
}

/* d->lock held: a start or reboot of g begins; it ends with busy_end. */
static void busy_begin(struct hk_daemon *d, enum hk_daemon_busy what, struct hk_guest *g)
{
	d->busy = what;
	d->busy_guest = g;
	d->busy_since_ns = hk_now_ns();
}

/* d->lock held. */
static void busy_end(struct hk_daemon *d)
{
	d->busy = HK_DAEMON_IDLE;
	d->busy_guest = NULL;
	pthread_cond_broadcast(&d->busy_cv);
}

_Static_assert(HK_WT_CONF_AUTO == (int)HK_WT_AUTO && HK_WT_CONF_UFFD == (int)HK_WT_UFFD &&
		   HK_WT_CONF_KVM == (int)HK_WT_KVM,
	       "config and hyperkernel agree on write-tracking numbers");

static void do_guest_start(struct hk_daemon *d, const Hk__Ctl__GuestStartRequest *req,
			   Hk__Ctl__CtlResponse *rsp)
{
	const char *kernel = req->kernel && *req->kernel ? req->kernel : d->cfg->kernel;
	const char *cmdline = req->cmdline && *req->cmdline ? req->cmdline : d->cfg->cmdline;
	struct hk_vm_disk disks[HK_MAX_DISKS];
	struct hk_vm_config vc = {
	    .kernel_path = kernel,
	    .cmdline = cmdline,
	    .memory = hk_config_guest_memory(d->cfg),
	    .vcpus = d->cfg->vcpus,
	    .console = console_sink,
	    .console_ctx = &d->console,
	    .node_id = d->node_id,
	    .write_tracking = (enum hk_write_tracking)d->cfg->write_tracking,
	};
	struct hk_guest *g, *old = NULL;
	struct hk_pool_config pc;
	struct hk_vm_result r;
	char err[256];
	int ret;

	if (!*kernel) {
		reply_error(rsp, "guest start: no kernel given and none in [guest] of %s",
			    d->cfg->path);
		return;
	}
	/* Before anything below stops this node's share of a running guest */
	if (d->cluster && hk_daemon_pool_leads(d, "started", err, sizeof(err))) {
		reply_error(rsp, "guest start: %s", err);
		return;
	}
	g = calloc(1, sizeof(*g));
	if (!g) {
		reply_error(rsp, "guest start: out of memory");
		return;
	}
	hk_daemon_vm_disks(d, g, &vc, disks);
	g->refs = 1;
	g->kernel = strdup(kernel);
	g->cmdline = strdup(cmdline);
	if (!g->kernel || !g->cmdline) {
		reply_error(rsp, "guest start: out of memory");
		goto fail;
	}

	/* Hold the lock across creation so two starts cannot race; creating
	 * memory and loading the kernel take milliseconds, not seconds.  Only
	 * the wait for the other nodes of a cluster runs without it. */
	pthread_mutex_lock(&d->lock);
	if (d->shutting_down) {
		pthread_mutex_unlock(&d->lock);
		reply_error(rsp, "guest start: daemon is shutting down");
		goto fail;
	}
	if (d->busy) {
		pthread_mutex_unlock(&d->lock);
		reply_error(rsp, "guest start: " HK_DAEMON_BUSY_MSG);
		goto fail;
	}
	if (d->guest) {
		hk_vm_result(d->guest->vm, &r);
		if (r.state == HK_VM_RUNNING || r.state == HK_VM_CREATED) {
			pthread_mutex_unlock(&d->lock);
			reply_error(
			    rsp,
			    "guest start: a guest is already running (hkctl guest stop first)");
			goto fail;
		}
	}
	hk_console_reset(&d->console);
	/* A new guest has new memory: the old frames' entries mean nothing.
	 * (Only a reboot keeps them.) */
	if (d->guest)
		hk_vm_stop(d->guest->vm, "replaced by a new guest");
	hk_replica_clear(d->replicas);
	d->kept_pages = 0;
	if (d->cluster) {
		/* Every other node makes its share first (daemon_pool.c), which
		 * can take up to 30 s: wait without the lock, busy keeps other
		 * starts, reboots and stops out, and d->guest (the old guest,
		 * stopped above) stays as it is until this start ends. */
		busy_begin(d, HK_DAEMON_STARTING, g);
		pthread_mutex_unlock(&d->lock);
		ret = hk_daemon_pool_prepare(d, kernel, cmdline, &pc, &vc.start_parked, err,
					     sizeof(err));
		pthread_mutex_lock(&d->lock);
		if (ret) {
			busy_end(d);
			pthread_mutex_unlock(&d->lock);
			reply_error(rsp, "guest start: %s", err);
			goto fail;
		}
		vc.pool = &pc;
		g->pool_guest = pc.guest;
		g->daemon = d;
	}
	/* Read now: hkctl replica set may have run during the wait. */
	vc.replicas = d->replicas_enabled ? d->replicas : NULL;
	ret = hk_vm_create(&vc, &g->vm, err, sizeof(err));
	if (ret == 0 && d->cluster) {
		/* From here the other nodes and a watcher thread know this
		 * guest: a failure ends it (the watcher tells everyone) and it
		 * stays the current guest, released by the last reference. */
		ret = hk_daemon_pool_run(d, g, err, sizeof(err));
		if (ret == 0)
			ret = hk_vm_start(g->vm);
		if (ret)
			hk_vm_end(g->vm, HK_VM_CRASHED, 0, err);
	} else if (ret == 0) {
		ret = hk_vm_start(g->vm);
	}
	if (ret && !(d->cluster && g->vm)) {
		if (d->cluster) /* every other node made its share: drop it */
			hk_daemon_pool_abandon(d, pc.guest, "guest start failed on the first node",
					       true);
		busy_end(d);
		pthread_mutex_unlock(&d->lock);
		reply_error(rsp, "guest start: %s", ret == -EALREADY ? "already started" : err);
		goto fail;
	}
	old = d->guest;
	d->guest = g;
	g->refs++; /* ours until the reply is built: a next start may replace it */
	busy_end(d);
	pthread_mutex_unlock(&d->lock);
	if (old)
		guest_put(d, old);
	if (ret) {
		reply_error(rsp, "guest start: %s", err);
		guest_put(d, g);
		return;
	}

	fprintf(stderr, "hkd[%s]: guest started: %s \"%s\"\n", d->node->name, kernel, cmdline);
	hk_vm_result(g->vm, &r);
	rsp->rep_case = HK__CTL__CTL_RESPONSE__REP_GUEST;
	rsp->guest = guest_info(d, g, &r);
	guest_put(d, g);
	return;
fail:
	if (g->vm)
		hk_vm_destroy(g->vm);
	free(g->kernel);
	free(g->cmdline);
	free(g);
}

static void do_guest_stop(struct hk_daemon *d, Hk__Ctl__CtlResponse *rsp)
{
	struct hk_vm_result r;
	struct hk_guest *g;

	/* A start or reboot in progress owns the guest until it ends (at
	 * most the 30 s wait for the other nodes): stop it after that. */
	pthread_mutex_lock(&d->lock);
	if (d->busy) {
		pthread_mutex_unlock(&d->lock);
		reply_error(rsp, "guest stop: " HK_DAEMON_BUSY_MSG " (stop it when that ends)");
		return;
	}
	g = d->guest;
	if (g)
		g->refs++;
	pthread_mutex_unlock(&d->lock);
	if (!g) {
		reply_error(rsp, "guest stop: no guest has been started");
		return;
	}
	if (d->cluster) /* pages keep moving: other nodes' vCPUs finish their waits */
		hk_vm_halt(g->vm, "stopped by hkctl", false);
	else
		hk_vm_stop(g->vm, "stopped by hkctl");
	hk_vm_result(g->vm, &r);
	fprintf(stderr, "hkd[%s]: guest stopped\n", d->node->name);
	rsp->rep_case = HK__CTL__CTL_RESPONSE__REP_GUEST;
	rsp->guest = guest_info(d, g, &r);
	guest_put(d, g);
}

static void do_guest_reboot(struct hk_daemon *d, Hk__Ctl__CtlResponse *rsp)
{
	struct hk_vm_result r;
	struct hk_guest *g;
	uint64_t kept;
	char err[256];
	int ret;

	if (d->cluster && hk_daemon_pool_leads(d, "rebooted", err, sizeof(err))) {
		reply_error(rsp, "guest reboot: %s", err);
		return;
	}
	pthread_mutex_lock(&d->lock);
	if (d->shutting_down) {
		pthread_mutex_unlock(&d->lock);
		reply_error(rsp, "guest reboot: daemon is shutting down");
		return;
	}
	if (d->busy) {
		pthread_mutex_unlock(&d->lock);
		reply_error(rsp, "guest reboot: " HK_DAEMON_BUSY_MSG);
		return;
	}
	g = d->guest;
	if (!g) {
		pthread_mutex_unlock(&d->lock);
		reply_error(rsp, "guest reboot: no guest has been started");
		return;
	}
	g->refs++;
	kept = d->kept_pages; /* stays if the reboot fails before counting */
	hk_console_reset(&d->console);
	if (d->cluster) {
		/* Every node rebuilds first: up to 30 s, waited for without
		 * the lock (hk_daemon_pool_reboot takes it for the rebuild). */
		busy_begin(d, HK_DAEMON_REBOOTING, g);
		pthread_mutex_unlock(&d->lock);
		ret = hk_daemon_pool_reboot(d, g, &kept, err, sizeof(err));
		pthread_mutex_lock(&d->lock);
		busy_end(d);
	} else {
		/* One node waits for nobody: milliseconds, under the lock. */
		hk_vm_set_replicas(g->vm, d->replicas_enabled ? d->replicas : NULL);
		ret = hk_vm_reboot(g->vm, &kept, err, sizeof(err));
	}
	d->kept_pages = kept;
	pthread_mutex_unlock(&d->lock);
	if (ret) {
		reply_error(rsp, "guest reboot: %s", err);
		guest_put(d, g);
		return;
	}
	fprintf(stderr, "hkd[%s]: guest rebooted, %llu replica frames kept\n", d->node->name,
		(unsigned long long)kept);
	hk_vm_result(g->vm, &r);
	rsp->rep_case = HK__CTL__CTL_RESPONSE__REP_GUEST;
	rsp->guest = guest_info(d, g, &r);
	guest_put(d, g);
}

/* A guest runs, or a start or reboot is making one run. */
static bool guest_running(struct hk_daemon *d)
{
	struct hk_vm_result r = {0};
	struct hk_guest *g;
	bool busy;

	pthread_mutex_lock(&d->lock);
	busy = d->busy != HK_DAEMON_IDLE;
	g = d->guest;
	if (g)
		g->refs++;
	pthread_mutex_unlock(&d->lock);
	if (g) {
		hk_vm_result(g->vm, &r);
		guest_put(d, g);
	}
	return busy || r.state == HK_VM_RUNNING;
}

static void do_replica_set(struct hk_daemon *d, const Hk__Ctl__ReplicaSetRequest *req,
			   Hk__Ctl__CtlResponse *rsp)
{
	pthread_mutex_lock(&d->lock);
	d->replicas_enabled = req->enabled;
	/* Off means no entries at all: the next boot gives their frames back. */
	if (req->clear || !req->enabled)
		hk_replica_clear(d->replicas);
	pthread_mutex_unlock(&d->lock);
	hk_daemon_replica_stats(d, rsp);
}

/*
 * With KVM's dirty log a guest write to a replica page drops its entry only
 * when someone harvests: do it before the table is shown, counted or
 * verified, so nobody sees an entry the guest already broke.
 */
static void replica_sync(struct hk_daemon *d)
{
	struct hk_guest *g = guest_get(d);

	if (g) {
		hk_mem_harvest_all(hk_vm_mem(g->vm));
		guest_put(d, g);
	}
}

static void do_replica_verify(struct hk_daemon *d, Hk__Ctl__CtlResponse *rsp)
{
	struct hk_guest *g = guest_get(d);

	if (g)
		hk_mem_harvest_all(hk_vm_mem(g->vm));
	hk_daemon_replica_verify(d, g ? hk_vm_mem(g->vm) : NULL, rsp);
	if (g)
		guest_put(d, g);
}

static void do_disk_mkdata(struct hk_daemon *d, const Hk__Ctl__DiskMkdataRequest *req,
			   Hk__Ctl__CtlResponse *rsp)
{
	struct hk_daemon_disk *dd = hk_daemon_disk(d, req->disk);
	Hk__Ctl__DiskMkdataReply *r;
	uint64_t records = 0;
	bool reused = false;
	char err[256];

	if (!dd) {
		reply_error(rsp, "disk mkdata: node %s serves no disk '%s'", d->node->name,
			    req->disk);
		return;
	}
	if (guest_running(d)) {
		reply_error(rsp, "disk mkdata: a guest is running (hkctl guest stop first)");
		return;
	}
	/* Every block may change: no replica of this disk survives. */
	hk_replica_drop_blocks_bytes(d->replicas, dd->id, 0, hk_disk_size(dd->disk));
	if (hk_daemon_mkdata(dd, req->size, req->seed, req->force, &records, &reused, err,
			     sizeof(err))) {
		reply_error(rsp, "%s", err);
		return;
	}
	r = calloc(1, sizeof(*r));
	if (!r) {
		reply_error(rsp, "disk mkdata: out of memory");
		return;
	}
	hk__ctl__disk_mkdata_reply__init(r);
	r->records = records;
	r->bytes = (records + 1) * HK_PAGE_SIZE;
	r->reused = reused;
	rsp->rep_case = HK__CTL__CTL_RESPONSE__REP_DISK_MKDATA;
	rsp->disk_mkdata = r;
}

static void do_guest_wait(struct hk_daemon *d, const Hk__Ctl__GuestWaitRequest *req,
			  Hk__Ctl__CtlResponse *rsp)
{
	struct hk_guest *g = guest_get(d);
	struct hk_vm_result r;
	Hk__Ctl__WaitReply *w;
	int ret;

	if (!g) {
		reply_error(rsp, "guest wait: no guest has been started");
		return;
	}
	ret = hk_vm_wait(g->vm, req->timeout_ms ? (int)req->timeout_ms : -1, &r);
	w = calloc(1, sizeof(*w));
	if (!w) {
		reply_error(rsp, "guest wait: out of memory");
		goto out;
	}
	hk__ctl__wait_reply__init(w);
	w->timed_out = ret == -ETIMEDOUT;
	w->guest = guest_info(d, g, &r);
	rsp->rep_case = HK__CTL__CTL_RESPONSE__REP_WAIT;
	rsp->wait = w;
out:
	guest_put(d, g);
}

static void do_guest_console(struct hk_daemon *d, const Hk__Ctl__GuestConsoleRequest *req,
			     Hk__Ctl__CtlResponse *rsp)
{
	Hk__Ctl__ConsoleReply *c = calloc(1, sizeof(*c));
	uint64_t start, total;
	uint8_t *data;
	size_t n;

	if (!c) {
		reply_error(rsp, "guest console: out of memory");
		return;
	}
	hk__ctl__console_reply__init(c);
	n = hk_console_read(&d->console, req->offset, CONSOLE_REPLY_MAX, &data, &start, &total);
	c->data.data = data;
	c->data.len = n;
	c->offset = start;
	c->total = total;
	rsp->rep_case = HK__CTL__CTL_RESPONSE__REP_CONSOLE;
	rsp->console = c;
}

static void daemon_handle(void *ctx, const Hk__Ctl__CtlRequest *req, Hk__Ctl__CtlResponse *rsp)
{
	struct hk_daemon *d = ctx;

	switch (req->req_case) {
	case HK__CTL__CTL_REQUEST__REQ_STATUS:
		hk_daemon_status(d, rsp);
		break;
	case HK__CTL__CTL_REQUEST__REQ_NODES:
		hk_daemon_nodes(d, rsp);
		break;
	case HK__CTL__CTL_REQUEST__REQ_GUEST_START:
		do_guest_start(d, req->guest_start, rsp);
		break;
	case HK__CTL__CTL_REQUEST__REQ_GUEST_STOP:
		do_guest_stop(d, rsp);
		break;
	case HK__CTL__CTL_REQUEST__REQ_GUEST_CONSOLE:
		do_guest_console(d, req->guest_console, rsp);
		break;
	case HK__CTL__CTL_REQUEST__REQ_GUEST_WAIT:
		do_guest_wait(d, req->guest_wait, rsp);
		break;
	case HK__CTL__CTL_REQUEST__REQ_GUEST_REBOOT:
		do_guest_reboot(d, rsp);
		break;
	case HK__CTL__CTL_REQUEST__REQ_REPLICA_SHOW:
		replica_sync(d);
		hk_daemon_replica_show(d, req->replica_show, rsp);
		break;
	case HK__CTL__CTL_REQUEST__REQ_REPLICA_STATS:
		replica_sync(d);
		hk_daemon_replica_stats(d, rsp);
		break;
	case HK__CTL__CTL_REQUEST__REQ_REPLICA_VERIFY:
		do_replica_verify(d, rsp);
		break;
	case HK__CTL__CTL_REQUEST__REQ_REPLICA_SET:
		do_replica_set(d, req->replica_set, rsp);
		break;
	case HK__CTL__CTL_REQUEST__REQ_DISK_MKDATA:
		do_disk_mkdata(d, req->disk_mkdata, rsp);
		break;
	default:
		reply_error(rsp, "unknown request %d", (int)req->req_case);
		break;
	}
}

static void free_str(char *s)
{
	if (s && s != protobuf_c_empty_string)
		free(s);
}

static void daemon_rsp_free(void *ctx, Hk__Ctl__CtlResponse *rsp)
{
	free_str(rsp->error);
	switch (rsp->rep_case) {
	case HK__CTL__CTL_RESPONSE__REP_STATUS:
		free_str(rsp->status->node);
		free_str(rsp->status->cluster);
		guest_info_free(rsp->status->guest);
		for (size_t i = 0; i < rsp->status->n_disks; i++) {
			free_str(rsp->status->disks[i]->name);
			free_str(rsp->status->disks[i]->path);
			free_str(rsp->status->disks[i]->backend);
			free(rsp->status->disks[i]);
		}
		free(rsp->status->disks);
		for (size_t i = 0; i < rsp->status->n_kvm_stats; i++) {
			free_str(rsp->status->kvm_stats[i]->name);
			free(rsp->status->kvm_stats[i]);
		}
		free(rsp->status->kvm_stats);
		free_str(rsp->status->kvm_stats_absent);
		free(rsp->status);
		break;
	case HK__CTL__CTL_RESPONSE__REP_REPLICA_SHOW:
		for (size_t i = 0; i < rsp->replica_show->n_extents; i++) {
			free_str(rsp->replica_show->extents[i]->disk);
			free(rsp->replica_show->extents[i]);
		}
		free(rsp->replica_show->extents);
		free(rsp->replica_show);
		break;
	case HK__CTL__CTL_RESPONSE__REP_REPLICA_VERIFY:
		for (size_t i = 0; i < rsp->replica_verify->n_first_mismatches; i++) {
			free_str(rsp->replica_verify->first_mismatches[i]->disk);
			free(rsp->replica_verify->first_mismatches[i]);
		}
		free(rsp->replica_verify->first_mismatches);
		free(rsp->replica_verify);
		break;
	case HK__CTL__CTL_RESPONSE__REP_REPLICA_STATS:
		free(rsp->replica_stats);
		break;
	case HK__CTL__CTL_RESPONSE__REP_DISK_MKDATA:
		free(rsp->disk_mkdata);
		break;
	case HK__CTL__CTL_RESPONSE__REP_NODES:
		hk_daemon_nodes_free(rsp->nodes);
		break;
	case HK__CTL__CTL_RESPONSE__REP_GUEST:
		guest_info_free(rsp->guest);
		break;
	case HK__CTL__CTL_RESPONSE__REP_CONSOLE:
		free(rsp->console->data.data);
		free(rsp->console);
		break;
	case HK__CTL__CTL_RESPONSE__REP_WAIT:
		guest_info_free(rsp->wait->guest);
		free(rsp->wait);
		break;
	default:
		break;
	}
}

/*
 * Called by the control server once no new request can arrive: refuse
 * further starts and stop the guest, which wakes every control thread in
 * guest wait so the server can join it.  A start or reboot waiting for
 * the other nodes gives up at once (hk_daemon_pool_cancel); the guest is
 * stopped once it has ended, so that it is not rebuilt under the stop.
 */
static void daemon_shutdown(void *ctx)
{
	struct hk_daemon *d = ctx;
	struct hk_guest *g;

	pthread_mutex_lock(&d->lock);
	d->shutting_down = true; /* no busy begins from here on */
	pthread_mutex_unlock(&d->lock);
	hk_daemon_pool_cancel(d);
	pthread_mutex_lock(&d->lock);
	while (d->busy != HK_DAEMON_IDLE)
		pthread_cond_wait(&d->busy_cv, &d->lock);
	pthread_mutex_unlock(&d->lock);
	g = guest_get(d);
	if (g) {
		hk_vm_stop(g->vm, "daemon shutting down");
		guest_put(d, g);
	}
}

const struct hk_ctl_ops hk_daemon_ctl_ops = {
    .size = sizeof(struct hk_ctl_ops),
    .handle = daemon_handle,
    .rsp_free = daemon_rsp_free,
    .shutdown = daemon_shutdown,
};

int hk_daemon_run(const struct hk_config *cfg, const char *node_name)
{
	struct hk_daemon *d;
	sigset_t set;
	int sig, ret;

	d = calloc(1, sizeof(*d));
	if (!d) {
		fprintf(stderr, "hkd: out of memory\n");
		return 1;
	}
	d->cfg = cfg;
	d->node = hk_config_node(cfg, node_name);
	if (!d->node) {
		fprintf(stderr, "hkd: %s has no [node %s]\n", cfg->path, node_name);
		free(d);
		return 2;
	}
	d->start_ns = hk_now_ns();
	d->node_id = (uint16_t)(d->node - cfg->nodes);
	pthread_mutex_init(&d->lock, NULL);
	pthread_cond_init(&d->busy_cv, NULL);
	hk_console_init(&d->console);
	d->replicas_enabled = cfg->replicas;
	if (hk_replica_create(&d->replicas)) {
		fprintf(stderr, "hkd: out of memory for the replica table\n");
		free(d);
		return 2;
	}
	{
		char err[512];

		if (hk_daemon_open_disks(d, err, sizeof(err))) {
			fprintf(stderr, "hkd: %s\n", err);
			hk_daemon_close_disks(d);
			hk_replica_destroy(d->replicas);
			free(d);
			return 2;
		}
	}

	/* Block the signals we wait for before any thread exists, so they all
	 * inherit the mask and sigwait below is the only taker. */
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);

	/* Join before serving: once `hkctl status` answers, the cluster is
	 * formed (deploy/cluster.sh waits for exactly that). */
	if (cfg->n_nodes > 1) {
		char err[512];

		ret = hk_daemon_pool_start(d, err, sizeof(err));
		if (ret) {
			fprintf(stderr, "hkd[%s]: %s\n", d->node->name, err);
			hk_daemon_pool_stop(d);
			hk_daemon_close_disks(d);
			hk_replica_destroy(d->replicas);
			free(d);
			return 2;
		}
	}
	ret = hk_ctl_server_start(d->node->control, &hk_daemon_ctl_ops, d, &d->ctl);
	if (ret) {
		fprintf(stderr, "hkd: control socket %s: %s\n", d->node->control, strerror(-ret));
		free(d);
		return 2;
	}
	fprintf(stderr, "hkd[%s]: cluster %s, %u vCPUs, %llu MiB guest memory, control %s\n",
		d->node->name, cfg->cluster_name, cfg->vcpus,
		(unsigned long long)(hk_config_guest_memory(cfg) >> 20), d->node->control);

	while (sigwait(&set, &sig) != 0)
		;
	fprintf(stderr, "hkd[%s]: %s, shutting down\n", d->node->name, strsignal(sig));

	/* The server calls daemon_shutdown() between refusing new requests
	 * and joining its threads: see there. */
	hk_ctl_server_stop(d->ctl);
	if (d->guest)
		hk_vm_stop(d->guest->vm, "daemon shutting down");
	/* Leave the cluster before the guest memory goes: peers learn we left
	 * and no delivery can reach freed memory. */
	hk_daemon_pool_stop(d);
	if (d->guest)
		guest_put(d, d->guest);
	hk_daemon_close_disks(d);
	hk_replica_destroy(d->replicas);
	free(d);
	return 0;
}
