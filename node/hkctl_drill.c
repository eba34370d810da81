/*
 * hkctl drill restart --mode guest: the fast-restart drill, end to end.
 *
 *   1. make the kvdb data set on the disk if it is not there;
 *   2. boot kvdb with the storage-replica table on, let it load, serve
 *      and write back; note its final state checksum;
 *   3. reboot the guest: frames holding replicas are kept; kvdb loads
 *      again and must find exactly the state it left (its "loaded state"
 *      equals the checksum before the reboot); time the reload;
 *   4. hkctl replica verify: every replica frame equals its block;
 *   5. baseline: table off (entries and frames dropped; the disk is
 *      O_DIRECT, so the data really comes from the disk), reboot, check
 *      and time again.
 *
 * Progress goes to stderr; the result to stdout (human or --json).
 */
#include <errno.h>
#include <stdarg.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "hkctl.h"

#define DRILL_STEPS 6
#define DRILL_KVM_STATS 32

/* One of KVM's counters, summed over the nodes that reported it. */
struct kvm_sum {
	char name[48];
	uint64_t value;
};

struct run {
	bool ok;
	uint64_t loaded_state, final_state;
	uint64_t load_cycles;
	double serving_wall_ms; /* host clock: (re)boot request to "kvdb: serving" */
	uint64_t bytes_from_disk, bytes_from_replicas, tsc_khz, kept_pages;
	/* KVM's counters at the end of the run.  Each run is one boot and
	 * every boot is a new KVM VM whose counters start at zero, so these
	 * are the run's own: its exits, its mapping installs (pf_fixed). */
	struct kvm_sum kvm[DRILL_KVM_STATS];
	unsigned n_kvm;
	char kvm_absent[160]; /* why there are none */
	char why[512];
};

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void progress(struct hkctl *c, int step, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void progress(struct hkctl *c, int step, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "drill [%d/%d] ", step, DRILL_STEPS);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static Hk__Ctl__CtlResponse *request(struct hkctl *c, Hk__Ctl__CtlRequest *req, unsigned tmo)
{
	Hk__Ctl__CtlResponse *rsp = NULL;

	return hkctl_call(c, req, &rsp, tmo) ? NULL : rsp;
}

static Hk__Ctl__CtlResponse *status(struct hkctl *c)
{
	Hk__Ctl__CtlRequest req = HK__CTL__CTL_REQUEST__INIT;
	Hk__Ctl__StatusRequest sr = HK__CTL__STATUS_REQUEST__INIT;

	req.req_case = HK__CTL__CTL_REQUEST__REQ_STATUS;
	req.status = &sr;
	return request(c, &req, HKCTL_REPLY_TIMEOUT_S);
}

static char *console(struct hkctl *c)
{
	Hk__Ctl__CtlRequest req = HK__CTL__CTL_REQUEST__INIT;
	Hk__Ctl__GuestConsoleRequest gc = HK__CTL__GUEST_CONSOLE_REQUEST__INIT;
	Hk__Ctl__CtlResponse *rsp;
	char *s;

	req.req_case = HK__CTL__CTL_REQUEST__REQ_GUEST_CONSOLE;
	req.guest_console = &gc;
	rsp = request(c, &req, HKCTL_REPLY_TIMEOUT_S);
	if (!rsp)
		return NULL;
	s = strndup((const char *)rsp->console->data.data, rsp->console->data.len);
	hk__ctl__ctl_response__free_unpacked(rsp, NULL);
	return s;
}

static int simple(struct hkctl *c, Hk__Ctl__CtlRequest *req)
{
	Hk__Ctl__CtlResponse *rsp = request(c, req, HKCTL_REPLY_TIMEOUT_S);

	if (!rsp)
		return 1;
	hk__ctl__ctl_response__free_unpacked(rsp, NULL);
	return 0;
}

/*
 * Send req to every node of the config (a pooled guest's disks, and so its
 * replica tables, may be on any of them), even with --node, which picks
 * the node the drill talks to.  t is filled (release it); returns how many
 * did not answer, each named on stderr.
 */
static unsigned each_node(struct hkctl *c, struct hkctl_node_status *t, unsigned *n,
			  Hk__Ctl__CtlRequest *req, Hk__Ctl__CtlResponse__RepCase want,
			  const char *what, unsigned timeout_s)
{
	const char *node = c->val[OPT_NODE];
	unsigned down;

	c->val[OPT_NODE] = NULL;
	*n = hkctl_status_targets(c, t);
	c->val[OPT_NODE] = node;
	down = hkctl_ask_each(t, *n, req, want, what, timeout_s);
	for (unsigned i = 0; i < *n; i++)
		if (!t[i].rsp) {
			if (*t[i].name)
				hkctl_die("drill restart: %s: node %s: %s", what, t[i].name,
					  t[i].err);
			else
				hkctl_die("%s", t[i].err);
		}
	return down;
}

/* On every node: each has the table of the disks it serves. */
static int replica_set(struct hkctl *c, bool enabled, bool clear)
{
	static struct hkctl_node_status t[HK_MAX_NODES];
	Hk__Ctl__CtlRequest req = HK__CTL__CTL_REQUEST__INIT;
	Hk__Ctl__ReplicaSetRequest rs = HK__CTL__REPLICA_SET_REQUEST__INIT;
	unsigned n, down;

	rs.enabled = enabled;
	rs.clear = clear;
	req.req_case = HK__CTL__CTL_REQUEST__REQ_REPLICA_SET;
	req.replica_set = &rs;
	down = each_node(c, t, &n, &req, HK__CTL__CTL_RESPONSE__REP_REPLICA_STATS, "replica set",
			 HKCTL_REPLY_TIMEOUT_S);
	hkctl_status_release(t, n);
	return down ? 1 : 0;
}

/* Every node's status into t (release it); how many did not answer. */
static unsigned status_each(struct hkctl *c, struct hkctl_node_status *t, unsigned *n)
{
	Hk__Ctl__CtlRequest req = HK__CTL__CTL_REQUEST__INIT;
	Hk__Ctl__StatusRequest sr = HK__CTL__STATUS_REQUEST__INIT;

	req.req_case = HK__CTL__CTL_REQUEST__REQ_STATUS;
	req.status = &sr;
	return each_node(c, t, n, &req, HK__CTL__CTL_RESPONSE__REP_STATUS, "status",
			 HKCTL_REPLY_TIMEOUT_S);
}

static void kvm_add(struct run *r, const Hk__Ctl__StatusReply *s)
{
	if (!s->n_kvm_stats && !*r->kvm_absent)
		snprintf(r->kvm_absent, sizeof(r->kvm_absent), "%s: %s", s->node,
			 *s->kvm_stats_absent ? s->kvm_stats_absent : "not reported");
	for (size_t i = 0; i < s->n_kvm_stats; i++) {
		const Hk__Ctl__KvmStat *k = s->kvm_stats[i];
		unsigned j = 0;

		while (j < r->n_kvm && strcmp(r->kvm[j].name, k->name))
			j++;
		if (j == r->n_kvm) {
			if (j == DRILL_KVM_STATS)
				continue;
			snprintf(r->kvm[j].name, sizeof(r->kvm[j].name), "%s", k->name);
			r->n_kvm++;
		}
		r->kvm[j].value += k->value;
	}
}

/* A KVM counter of the run, or -1 when no node had it. */
static long long kvm_stat(const struct run *r, const char *name)
{
	for (unsigned i = 0; i < r->n_kvm; i++)
		if (!strcmp(r->kvm[i].name, name))
			return (long long)r->kvm[i].value;
	return -1;
}

/* The guest's disk and KVM counters and kept pages, summed over every node. */
static int sum_status(struct hkctl *c, struct run *r)
{
	static struct hkctl_node_status t[HK_MAX_NODES];
	unsigned n, down = status_each(c, t, &n);

	r->bytes_from_disk = r->bytes_from_replicas = r->kept_pages = 0;
	for (unsigned i = 0; i < n; i++) {
		const Hk__Ctl__StatusReply *s = t[i].rsp ? t[i].rsp->status : NULL;

		if (!s)
			continue;
		r->bytes_from_disk += s->bytes_from_disk;
		r->bytes_from_replicas += s->bytes_from_replicas;
		r->kept_pages += s->kept_pages;
		kvm_add(r, s);
		if (!r->tsc_khz)
			r->tsc_khz = s->tsc_khz;
	}
	hkctl_status_release(t, n);
	return down ? 1 : 0;
}

static bool parse_hex(const char *con, const char *prefix, uint64_t *out)
{
	const char *p = strstr(con, prefix);

	return p && sscanf(p + strlen(prefix), "%" SCNx64, out) == 1;
}

/*
 * Guest wait for at most ms; NULL (said on stderr) if hkd did not answer.
 * A wait, not a sleep, paces the drill's console poll: it returns the
 * moment the guest ends, so a guest that died is noticed at once instead
 * of at the drill's deadline (--timeout, 30 minutes by default).
 */
static Hk__Ctl__CtlResponse *guest_wait(struct hkctl *c, uint32_t ms)
{
	Hk__Ctl__CtlRequest req = HK__CTL__CTL_REQUEST__INIT;
	Hk__Ctl__GuestWaitRequest gw = HK__CTL__GUEST_WAIT_REQUEST__INIT;

	gw.timeout_ms = ms ? ms : 1;
	req.req_case = HK__CTL__CTL_REQUEST__REQ_GUEST_WAIT;
	req.guest_wait = &gw;
	return request(c, &req, ms / 1000 + HKCTL_REPLY_TIMEOUT_S);
}

/*
 * Start (cmdline != NULL) or reboot the guest, watch the console until
 * kvdb serves, wait for it to finish, and collect what the run showed.
 */
static int drill_run(struct hkctl *c, const char *cmdline, double timeout_s, struct run *r)
{
	Hk__Ctl__CtlRequest req = HK__CTL__CTL_REQUEST__INIT;
	Hk__Ctl__GuestStartRequest gs = HK__CTL__GUEST_START_REQUEST__INIT;
	Hk__Ctl__GuestRebootRequest gr = HK__CTL__GUEST_REBOOT_REQUEST__INIT;
	Hk__Ctl__CtlResponse *rsp;
	double t0, deadline;
	char *con = NULL, end[400];
	const char *p;
	bool timed_out = true;
	int state;

	memset(r, 0, sizeof(*r));
	if (cmdline) {
		gs.cmdline = (char *)cmdline;
		req.req_case = HK__CTL__CTL_REQUEST__REQ_GUEST_START;
		req.guest_start = &gs;
	} else {
		req.req_case = HK__CTL__CTL_REQUEST__REQ_GUEST_REBOOT;
		req.guest_reboot = &gr;
	}
	t0 = now_ms();
	if (simple(c, &req))
		return 1;
	deadline = t0 + timeout_s * 1e3;

	/* Poll the console for "kvdb: serving": the reload as the host sees it. */
	while (now_ms() < deadline) {
		free(con);
		con = console(c);
		if (!con)
			return 1;
		if (strstr(con, "kvdb: serving")) {
			r->serving_wall_ms = now_ms() - t0;
			break;
		}
		if (strstr(con, "kvdb: ") && (strstr(con, "corrupt") || strstr(con, "failed")))
			break;
		rsp = guest_wait(c, 20);
		if (!rsp) {
			free(con);
			return 1;
		}
		timed_out = rsp->wait->timed_out;
		hk__ctl__ctl_response__free_unpacked(rsp, NULL);
		if (!timed_out)
			break; /* ended before serving: the wait below says how */
	}
	free(con);

	rsp = guest_wait(c, (uint32_t)(deadline > now_ms() ? deadline - now_ms() : 1));
	if (!rsp)
		return 1;
	state = rsp->wait->timed_out ? -1 : rsp->wait->guest->exit_status;
	if (rsp->wait->timed_out)
		snprintf(end, sizeof(end), "still running after %.0f s", timeout_s);
	else
		hkctl_guest_end(rsp->wait->guest, end, sizeof(end));
	hk__ctl__ctl_response__free_unpacked(rsp, NULL);
	con = console(c);
	if (!con)
		return 1;

	if (state != 1) {
		snprintf(r->why, sizeof(r->why), "kvdb did not finish cleanly: the guest %s", end);
	} else if (!parse_hex(con, "kvdb: loaded state 0x", &r->loaded_state) ||
		   !parse_hex(con, "kvdb checksum 0x", &r->final_state) ||
		   !(p = strstr(con, "kvdb: loaded ")) ||
		   sscanf(p, "kvdb: loaded %*u records in %" SCNu64, &r->load_cycles) != 1) {
		snprintf(r->why, sizeof(r->why), "kvdb output not understood");
	} else {
		r->ok = true;
	}
	free(con);
	return sum_status(c, r);
}

/* The disk named (or the first one any node serves): its name (strdup),
 * guest index and whether the serving node bypasses the page cache. */
static int find_disk(struct hkctl *c, const char **disk, uint64_t *index, bool *direct)
{
	static struct hkctl_node_status t[HK_MAX_NODES];
	const Hk__Ctl__DiskInfo *found = NULL;
	unsigned n, down = status_each(c, t, &n);

	for (unsigned i = 0; i < n && !found; i++) {
		const Hk__Ctl__StatusReply *s = t[i].rsp ? t[i].rsp->status : NULL;

		for (size_t k = 0; s && k < s->n_disks && !found; k++)
			if (!*disk || !strcmp(*disk, s->disks[k]->name))
				found = s->disks[k];
	}
	if (found) {
		*disk = strdup(found->name);
		*index = found->id;
		*direct = found->direct;
	}
	hkctl_status_release(t, n);
	if (down)
		return 1;
	if (!found && *disk)
		return hkctl_die("drill restart: no node serves a disk '%s'", *disk);
	if (!found)
		return hkctl_die("drill restart: no node serves a disk ([disk NAME] in the config)");
	return 0;
}

static double cycles_ms(const struct run *r)
{
	return r->tsc_khz ? (double)r->load_cycles / (double)r->tsc_khz : 0;
}

/* stderr: what KVM installed for the run (pf_fixed: faults KVM resolved
 * by installing a mapping) and what is mapped at its end. */
static void kvm_progress(const struct run *r)
{
	if (!r->n_kvm) {
		fprintf(stderr, "      KVM stats absent: %s\n", r->kvm_absent);
		return;
	}
	fprintf(stderr, "      KVM: %lld mapping installs, %lld 4K + %lld 2M mapped, %lld exits\n",
		kvm_stat(r, "pf_fixed"), kvm_stat(r, "pages_4k"), kvm_stat(r, "pages_2m"),
		kvm_stat(r, "exits"));
}

static json_t *kvm_run_json(const struct run *r)
{
	json_t *o = json_object();

	for (unsigned i = 0; i < r->n_kvm; i++)
		json_object_set_new(o, r->kvm[i].name, json_integer((json_int_t)r->kvm[i].value));
	return o;
}

/*
 * "mapping_installs" (pf_fixed of each run) and "kvm_stats" (every counter
 * of each run), or "kvm_stats_absent" when a run had none.
 */
static void kvm_json(json_t *j, const struct run *first, const struct run *again,
		     const struct run *base)
{
	const struct run *runs[] = {first, again, base};
	const char *names[] = {"first_load", "reload", "baseline"};
	json_t *inst, *all;

	for (unsigned i = 0; i < 3; i++)
		if (!runs[i]->n_kvm) {
			json_object_set_new(j, "kvm_stats_absent",
					    json_string(runs[i]->kvm_absent));
			return;
		}
	inst = json_object();
	all = json_object();
	for (unsigned i = 0; i < 3; i++) {
		long long v = kvm_stat(runs[i], "pf_fixed");

		if (v >= 0)
			json_object_set_new(inst, names[i], json_integer(v));
		json_object_set_new(all, names[i], kvm_run_json(runs[i]));
	}
	json_object_set_new(j, "mapping_installs", inst);
	json_object_set_new(j, "kvm_stats", all);
}

/*
 * Step 4 on every node of the config: each keeps the replicas of the disks
 * it serves, which need not be the node the drill talks to (--node picks
 * only that one).  A node that does not answer fails the drill.
 */
static int verify_all(struct hkctl *c, uint64_t *checked, uint64_t *mismatches)
{
	static struct hkctl_node_status t[HK_MAX_NODES];
	Hk__Ctl__CtlRequest req = HK__CTL__CTL_REQUEST__INIT;
	Hk__Ctl__ReplicaVerifyRequest rv = HK__CTL__REPLICA_VERIFY_REQUEST__INIT;
	unsigned n, down;

	req.req_case = HK__CTL__CTL_REQUEST__REQ_REPLICA_VERIFY;
	req.replica_verify = &rv;
	down = each_node(c, t, &n, &req, HK__CTL__CTL_RESPONSE__REP_REPLICA_VERIFY,
			 "replica verify", 3600);
	for (unsigned i = 0; i < n; i++) {
		const Hk__Ctl__ReplicaVerifyReply *v;

		if (!t[i].rsp)
			continue;
		v = t[i].rsp->replica_verify;
		*checked += v->checked;
		*mismatches += v->mismatches;
		if (n > 1)
			fprintf(stderr, "      %s: %" PRIu64 " pages checked, %" PRIu64 " mismatches\n",
				t[i].name, v->checked, v->mismatches);
	}
	hkctl_status_release(t, n);
	if (down)
		return 1;
	fprintf(stderr, "      %" PRIu64 " pages checked, %" PRIu64 " mismatches%s\n", *checked,
		*mismatches, n > 1 ? " (all nodes)" : "");
	return 0;
}

int hkctl_drill_restart(struct hkctl *c)
{
	const char *mode = c->val[OPT_MODE] ? c->val[OPT_MODE] : "guest";
	uint64_t size, seed, ops, disk_index = 0;
	Hk__Ctl__CtlResponse *st;
	const char *disk = c->val[OPT_DISK];
	struct run first, again, base;
	double timeout;
	bool has_timeout, verified;
	uint64_t checked = 0, mismatches = 0;
	char cmdline[128], b1[32];
	int ret = 1;

	if (strcmp(mode, "guest"))
		return hkctl_die("drill restart: mode '%s' is not built yet (have: guest)", mode);
	if (hkctl_opt_size(c, OPT_DATA_SIZE, 512ull << 20, &size) ||
	    hkctl_opt_uint(c, OPT_SEED, 1, UINT64_MAX, &seed) ||
	    hkctl_opt_uint(c, OPT_OPS, 10000, 100000000, &ops) ||
	    hkctl_opt_seconds(c, OPT_TIMEOUT, &timeout, &has_timeout))
		return 1;
	if (!has_timeout)
		timeout = 1800;

	bool direct = false, running;

	/* The disk may be served by any node (pooled guest): its id is its
	 * place in the config, which is what the guest numbers it by. */
	if (find_disk(c, &disk, &disk_index, &direct))
		return 1;
	st = status(c);
	if (!st) {
		free((char *)disk);
		return 1;
	}
	running = st->status->guest &&
		  st->status->guest->state == HK__CTL__GUEST_STATE__GUEST_RUNNING;
	hk__ctl__ctl_response__free_unpacked(st, NULL);
	if (running) {
		Hk__Ctl__CtlRequest req = HK__CTL__CTL_REQUEST__INIT;
		Hk__Ctl__GuestStopRequest gst = HK__CTL__GUEST_STOP_REQUEST__INIT;

		fprintf(stderr, "drill: stopping the running guest\n");
		req.req_case = HK__CTL__CTL_REQUEST__REQ_GUEST_STOP;
		req.guest_stop = &gst;
		if (simple(c, &req))
			goto out;
	}

	progress(c, 1, "data set: %s on disk %s (seed %" PRIu64 ")",
		 hk_format_size(size, b1, sizeof(b1)), disk, seed);
	{
		Hk__Ctl__CtlRequest req = HK__CTL__CTL_REQUEST__INIT;
		Hk__Ctl__DiskMkdataRequest mk = HK__CTL__DISK_MKDATA_REQUEST__INIT;
		Hk__Ctl__CtlResponse *rsp;
		char sock[sizeof(c->sock)], err[768];

		mk.disk = (char *)disk;
		mk.size = size;
		mk.seed = seed;
		req.req_case = HK__CTL__CTL_REQUEST__REQ_DISK_MKDATA;
		req.disk_mkdata = &mk;
		/* Written by the node the disk is attached to, which may not be
		 * the one this drill talks to. */
		if (hkctl_disk_socket(c, disk, sock, sizeof(sock)))
			goto out;
		if (hkctl_call_at(sock, &req, &rsp, 3600, err, sizeof(err))) {
			hkctl_die("%s", err);
			goto out;
		}
		fprintf(stderr, "      %" PRIu64 " records%s\n", rsp->disk_mkdata->records,
			rsp->disk_mkdata->reused ? ", already there" : ", written");
		hk__ctl__ctl_response__free_unpacked(rsp, NULL);
	}

	snprintf(cmdline, sizeof(cmdline), "kvdb disk=%" PRIu64 " ops=%" PRIu64 " seed=%" PRIu64,
		 disk_index, ops, seed);
	progress(c, 2, "boot kvdb with the replica table on: first load from disk");
	if (replica_set(c, true, true) || drill_run(c, cmdline, timeout, &first))
		goto out;
	if (!first.ok) {
		ret = hkctl_die("drill restart: first boot: %s", first.why);
		goto out;
	}
	fprintf(stderr, "      loaded in %.0f ms, state after serving 0x%016" PRIx64 "\n",
		cycles_ms(&first), first.final_state);
	kvm_progress(&first);

	progress(c, 3, "guest reboot, replica frames kept: reload");
	if (drill_run(c, NULL, timeout, &again))
		goto out;
	if (!again.ok) {
		ret = hkctl_die("drill restart: after reboot: %s", again.why);
		goto out;
	}
	fprintf(stderr, "      %" PRIu64 " frames kept; reloaded in %.0f ms; %s from disk, ",
		again.kept_pages, cycles_ms(&again),
		hk_format_size(again.bytes_from_disk, b1, sizeof(b1)));
	fprintf(stderr, "%s from replicas\n",
		hk_format_size(again.bytes_from_replicas, b1, sizeof(b1)));
	kvm_progress(&again);

	progress(c, 4, "replica verify: every replica frame against its block");
	if (verify_all(c, &checked, &mismatches))
		goto out;

	progress(c, 5, "baseline: table off, reboot, reload from disk%s",
		 direct ? " (O_DIRECT)" : " (page cache: NOT bypassed)");
	if (replica_set(c, false, true) || drill_run(c, NULL, timeout, &base))
		goto out;
	if (!base.ok) {
		ret = hkctl_die("drill restart: baseline: %s", base.why);
		goto out;
	}
	fprintf(stderr, "      reloaded in %.0f ms; %s from disk\n", cycles_ms(&base),
		hk_format_size(base.bytes_from_disk, b1, sizeof(b1)));
	kvm_progress(&base);

	progress(c, 6, "table back on");
	if (replica_set(c, true, false))
		goto out;

	verified = again.loaded_state == first.final_state &&
		   base.loaded_state == again.final_state && mismatches == 0;
	if (c->json) {
		json_t *j = json_pack(
			"{s:s, s:s, s:I, s:f, s:f, s:f, s:I, s:I, s:I, s:b}", "mode", mode, "disk", disk,
			"data_size", (json_int_t)size, "reload_ms", cycles_ms(&again),
			"baseline_reload_ms", cycles_ms(&base), "speedup",
			cycles_ms(&again) > 0 ? cycles_ms(&base) / cycles_ms(&again) : 0.0,
			"bytes_from_disk", (json_int_t)again.bytes_from_disk, "bytes_from_replicas",
			(json_int_t)again.bytes_from_replicas, "baseline_bytes_from_disk",
			(json_int_t)base.bytes_from_disk, "verified", verified);

		/* The baseline keeps nothing, so its reload is a first load
		 * from disk: baseline_first_load_ms against first_load_ms is
		 * what filling the replica table costs a first load. */
		json_object_set_new(j, "first_load_ms", json_real(cycles_ms(&first)));
		json_object_set_new(j, "baseline_first_load_ms", json_real(cycles_ms(&base)));
		kvm_json(j, &first, &again, &base);
		json_object_set_new(j, "reboot_to_serving_ms", json_real(again.serving_wall_ms));
		json_object_set_new(j, "baseline_reboot_to_serving_ms",
				    json_real(base.serving_wall_ms));
		json_object_set_new(j, "kept_pages", json_integer((json_int_t)again.kept_pages));
		json_object_set_new(j, "replica_verify",
				    json_pack("{s:I, s:I}", "checked", (json_int_t)checked,
					      "mismatches", (json_int_t)mismatches));
		json_object_set_new(j, "tsc_khz", json_integer((json_int_t)again.tsc_khz));
		json_object_set_new(j, "o_direct", json_boolean(direct));
		hkctl_print_json(j);
	} else {
		printf("drill restart --mode guest: %s\n", verified ? "verified" : "NOT VERIFIED");
		printf("  reload with replicas  %.0f ms (%s from disk, %s from replicas)\n",
		       cycles_ms(&again), hk_format_size(again.bytes_from_disk, b1, sizeof(b1)),
		       hk_format_size(again.bytes_from_replicas, cmdline, sizeof(cmdline)));
		printf("  first load            %.0f ms (replica table on)\n", cycles_ms(&first));
		printf("  baseline reload       %.0f ms (%s from disk)\n", cycles_ms(&base),
		       hk_format_size(base.bytes_from_disk, b1, sizeof(b1)));
		if (first.n_kvm && again.n_kvm && base.n_kvm)
			printf(
			    "  mapping installs      first load %lld, reload %lld, baseline %lld "
			    "(KVM pf_fixed)\n",
			    kvm_stat(&first, "pf_fixed"), kvm_stat(&again, "pf_fixed"),
			    kvm_stat(&base, "pf_fixed"));
		if (cycles_ms(&again) > 0)
			printf("  speedup               %.1fx\n", cycles_ms(&base) / cycles_ms(&again));
		printf("  replica verify        %" PRIu64 " pages, %" PRIu64 " mismatches\n", checked,
		       mismatches);
	}
	ret = verified ? 0 : hkctl_die("drill restart: the guest's state changed across the restart");
out:
	free((char *)disk);
	return ret;
}
