/*
 * hkctl status: every node of the cluster, or the one daemon named by
 * --node or --socket.
 *
 * The top-level JSON keys are those of one node's status (the first node
 * that answers, in config order), exactly as on a single node, so scripts
 * written for one node keep working; `nodes` (one object per node) and
 * `totals` (the pooled counters summed over the nodes that answered) are
 * added beside them.  A node that does not answer is listed with its
 * error and makes the exit status 1; the others are still shown.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hkctl.h"

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

unsigned hkctl_status_targets(struct hkctl *c, struct hkctl_node_status *out)
{
	unsigned n = 0;

	if (c->val[OPT_SOCKET] || c->val[OPT_NODE] || !c->cfg) {
		memset(out, 0, sizeof(*out));
		if (c->val[OPT_NODE])
			snprintf(out->name, sizeof(out->name), "%s", c->val[OPT_NODE]);
		snprintf(out->sock, sizeof(out->sock), "%s", c->sock);
		return 1;
	}
	for (unsigned i = 0; i < c->cfg->n_nodes && i < HK_MAX_NODES; i++, n++) {
		memset(&out[n], 0, sizeof(out[n]));
		snprintf(out[n].name, sizeof(out[n].name), "%s", c->cfg->nodes[i].name);
		snprintf(out[n].sock, sizeof(out[n].sock), "%s", c->cfg->nodes[i].control);
	}
	return n;
}

/*
 * One node after another: status and replica stats are cheap snapshots,
 * so only a daemon that hangs costs time, and timeout_s bounds that.
 */
unsigned hkctl_ask_each(struct hkctl_node_status *t, unsigned n, Hk__Ctl__CtlRequest *req,
			Hk__Ctl__CtlResponse__RepCase want, const char *what, unsigned timeout_s)
{
	unsigned down = 0;

	for (unsigned i = 0; i < n; i++) {
		if (t[i].rsp)
			hk__ctl__ctl_response__free_unpacked(t[i].rsp, NULL);
		t[i].rsp = NULL;
		t[i].err[0] = 0;
		if (hkctl_call_at(t[i].sock, req, &t[i].rsp, timeout_s, t[i].err,
				  sizeof(t[i].err)) == 0 &&
		    t[i].rsp->rep_case != want) {
			snprintf(t[i].err, sizeof(t[i].err),
				 "hkd at %s sent an unexpected reply to %s", t[i].sock, what);
			hk__ctl__ctl_response__free_unpacked(t[i].rsp, NULL);
			t[i].rsp = NULL;
		}
		t[i].at_ns = now_ns();
		if (!t[i].rsp)
			down++;
	}
	return down;
}

unsigned hkctl_status_query(struct hkctl_node_status *t, unsigned n, unsigned timeout_s)
{
	Hk__Ctl__CtlRequest req = HK__CTL__CTL_REQUEST__INIT;
	Hk__Ctl__StatusRequest sr = HK__CTL__STATUS_REQUEST__INIT;

	req.req_case = HK__CTL__CTL_REQUEST__REQ_STATUS;
	req.status = &sr;
	return hkctl_ask_each(t, n, &req, HK__CTL__CTL_RESPONSE__REP_STATUS, "status", timeout_s);
}

void hkctl_status_release(struct hkctl_node_status *t, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		if (t[i].rsp)
			hk__ctl__ctl_response__free_unpacked(t[i].rsp, NULL);
		t[i].rsp = NULL;
	}
}

/* The counters `totals` sums; each node object carries them too. */
#define POOL_COUNTERS(X)                                                                           \
	X(resident_pages)                                                                          \
	X(remote_faults)                                                                           \
	X(local_faults)                                                                            \
	X(invalidations)                                                                           \
	X(vcpu_migrations)                                                                         \
	X(evictions)                                                                               \
	X(pages_sent)                                                                              \
	X(pages_recv)                                                                              \
	X(home_pages)                                                                              \
	X(budget_pages)                                                                            \
	X(device_forwards)                                                                         \
	X(device_served)

struct pool_totals {
#define X(f) uint64_t f;
	POOL_COUNTERS(X)
#undef X
	unsigned up, nodes;
};

static const char *node_name(const struct hkctl_node_status *t)
{
	if (t->rsp)
		return t->rsp->status->node;
	return *t->name ? t->name : t->sock;
}

/*
 * KVM's counters into o: "kvm_stats" {name: value}, or "kvm_stats_absent"
 * with the reason when this node has none.  A stat this kernel lacks is
 * not a key at all, so a script can tell "absent" from "zero".
 */
static void kvm_json(json_t *o, const Hk__Ctl__StatusReply *s)
{
	json_t *k;

	if (!s->n_kvm_stats) {
		json_object_set_new(o, "kvm_stats_absent",
				    json_string(*s->kvm_stats_absent ? s->kvm_stats_absent
								     : "not reported by this hkd"));
		return;
	}
	k = json_object();
	for (size_t i = 0; i < s->n_kvm_stats; i++)
		json_object_set_new(k, s->kvm_stats[i]->name,
				    json_integer((json_int_t)s->kvm_stats[i]->value));
	json_object_set_new(o, "kvm_stats", k);
}

static json_t *node_json(const struct hkctl_node_status *t)
{
	const Hk__Ctl__StatusReply *s;
	json_t *o = json_object();

	json_object_set_new(o, "node", json_string(node_name(t)));
	json_object_set_new(o, "up", json_boolean(t->rsp != NULL));
	if (!t->rsp) {
		json_object_set_new(o, "error", json_string(t->err));
		return o;
	}
	s = t->rsp->status;
	json_object_set_new(o, "pid", json_integer(s->pid));
	json_object_set_new(o, "uptime_ms", json_integer((json_int_t)s->uptime_ms));
	json_object_set_new(o, "guest",
			    json_string(hkctl_state_name(
				s->guest ? s->guest->state : HK__CTL__GUEST_STATE__GUEST_NONE)));
	json_object_set_new(o, "pooled", json_boolean(s->pooled));
#define X(f) json_object_set_new(o, #f, json_integer((json_int_t)s->f));
	POOL_COUNTERS(X)
#undef X
	json_object_set_new(o, "uffd_faults", json_integer((json_int_t)s->uffd_faults));
	json_object_set_new(o, "vcpu_exits", json_integer((json_int_t)s->vcpu_exits));
	kvm_json(o, s);
	return o;
}

static void sum(const struct hkctl_node_status *t, unsigned n, struct pool_totals *tot)
{
	memset(tot, 0, sizeof(*tot));
	tot->nodes = n;
	for (unsigned i = 0; i < n; i++) {
		if (!t[i].rsp)
			continue;
		tot->up++;
#define X(f) tot->f += t[i].rsp->status->f;
		POOL_COUNTERS(X)
#undef X
	}
}

static json_t *totals_json(const struct pool_totals *tot)
{
	json_t *o = json_object();

	json_object_set_new(o, "nodes", json_integer(tot->nodes));
	json_object_set_new(o, "nodes_up", json_integer(tot->up));
#define X(f) json_object_set_new(o, #f, json_integer((json_int_t)tot->f));
	POOL_COUNTERS(X)
#undef X
	return o;
}

/* One node's status, the object a single-node hkctl status has always printed. */
static json_t *status_json(const Hk__Ctl__StatusReply *s)
{
	json_t *vcpus = json_array(), *disks = json_array(), *j;

	for (unsigned i = 0; i < s->vcpus; i++)
		json_array_append_new(vcpus, json_pack("{s:i, s:s}", "index", i, "node", s->node));
	for (size_t i = 0; i < s->n_disks; i++) {
		const Hk__Ctl__DiskInfo *di = s->disks[i];

		json_array_append_new(
		    disks, json_pack("{s:s, s:s, s:I, s:i, s:b, s:s}", "name", di->name, "path",
				     di->path, "size", (json_int_t)di->size, "id", (int)di->id,
				     "direct", di->direct, "backend", di->backend));
	}
	j = json_pack("{s:s, s:s, s:i, s:I, s:i, s:o, s:I, s:o, s:I, s:I, s:I, s:I}", "node",
		      s->node, "cluster", s->cluster, "pid", (int)s->pid, "uptime_ms",
		      (json_int_t)s->uptime_ms, "vcpus", (int)s->vcpus, "vcpu_list", vcpus,
		      "guest_memory", (json_int_t)s->guest_memory, "guest",
		      hkctl_guest_json(s->guest), "resident_pages", (json_int_t)s->resident_pages,
		      "uffd_faults", (json_int_t)s->uffd_faults, "vcpu_exits",
		      (json_int_t)s->vcpu_exits, "console_bytes", (json_int_t)s->console_bytes);
	json_object_set_new(j, "disks", disks);
	json_object_set_new(j, "replicas_enabled", json_boolean(s->replicas_enabled));
	json_object_set_new(j, "tsc_khz", json_integer((json_int_t)s->tsc_khz));
	json_object_set_new(j, "bytes_from_disk", json_integer((json_int_t)s->bytes_from_disk));
	json_object_set_new(j, "bytes_from_replicas",
			    json_integer((json_int_t)s->bytes_from_replicas));
	json_object_set_new(j, "wp_faults", json_integer((json_int_t)s->wp_faults));
	json_object_set_new(j, "kept_pages", json_integer((json_int_t)s->kept_pages));
	json_object_set_new(j, "write_tracking", json_string(s->write_tracking));
	json_object_set_new(j, "tracking_harvests", json_integer((json_int_t)s->tracking_harvests));
	json_object_set_new(j, "tracking_false_alarms",
			    json_integer((json_int_t)s->tracking_false_alarms));
	kvm_json(j, s);
	return j;
}

/* One line of name=value for the VM's stats, one for the vCPUs' (summed). */
static void print_kvm(const Hk__Ctl__StatusReply *s)
{
	if (!s->n_kvm_stats) {
		printf("kvm stats     absent: %s\n",
		       *s->kvm_stats_absent ? s->kvm_stats_absent : "not reported by this hkd");
		return;
	}
	for (int vcpu = 0; vcpu < 2; vcpu++) {
		bool any = false;

		for (size_t i = 0; i < s->n_kvm_stats; i++) {
			if (s->kvm_stats[i]->vcpu != vcpu)
				continue;
			if (!any)
				printf("%-13s", vcpu ? "kvm vcpus" : "kvm vm");
			any = true;
			printf(" %s=%" PRIu64, s->kvm_stats[i]->name, s->kvm_stats[i]->value);
		}
		if (any)
			putchar('\n');
	}
}

static void print_one(const Hk__Ctl__StatusReply *s)
{
	char buf[32], buf2[32];

	printf("node          %s (cluster %s, pid %u, up %.1f s)\n", s->node, s->cluster, s->pid,
	       s->uptime_ms / 1000.0);
	printf("vcpus         %u\n", s->vcpus);
	printf("guest memory  %s\n", hk_format_size(s->guest_memory, buf, sizeof(buf)));
	hkctl_print_guest(s->guest);
	printf("resident      %llu pages (%s)\n", (unsigned long long)s->resident_pages,
	       hk_format_size(s->resident_pages * 4096, buf, sizeof(buf)));
	printf("uffd faults   %llu\n", (unsigned long long)s->uffd_faults);
	printf("vcpu exits    %llu\n", (unsigned long long)s->vcpu_exits);
	print_kvm(s);
	printf("console       %llu bytes\n", (unsigned long long)s->console_bytes);
	printf("replicas      %s; guest reads %s from disk, %s from replicas\n",
	       s->replicas_enabled ? "on" : "off",
	       hk_format_size(s->bytes_from_disk, buf, sizeof(buf)),
	       hk_format_size(s->bytes_from_replicas, buf2, sizeof(buf2)));
	if (*s->write_tracking)
		printf("tracking      %s; %llu harvests, %llu false alarms\n", s->write_tracking,
		       (unsigned long long)s->tracking_harvests,
		       (unsigned long long)s->tracking_false_alarms);
	for (size_t i = 0; i < s->n_disks; i++)
		printf("disk %-8s %s, %s, %s%s\n", s->disks[i]->name, s->disks[i]->path,
		       hk_format_size(s->disks[i]->size, buf, sizeof(buf)), s->disks[i]->backend,
		       s->disks[i]->direct ? ", O_DIRECT" : "");
	if (s->pooled)
		printf("pool          %" PRIu64 " remote faults, %" PRIu64 " local, %" PRIu64
		       " invalidations, %" PRIu64 " vCPU migrations, %" PRIu64 " evictions\n",
		       s->remote_faults, s->local_faults, s->invalidations, s->vcpu_migrations,
		       s->evictions);
	if (s->device_forwards || s->device_served)
		printf("devices       %" PRIu64 " register accesses sent to other nodes, %" PRIu64
		       " served here for them\n",
		       s->device_forwards, s->device_served);
}

#define ROW_FMT "%-10s %-5s %-8s %10s %12s %12s %10s %10s %10s\n"

static void print_table(const struct hkctl_node_status *t, unsigned n,
			const struct pool_totals *tot)
{
	char f[7][24];

	printf(ROW_FMT, "NODE", "STATE", "GUEST", "RESIDENT", "REMOTE-FLT", "LOCAL-FLT", "INVAL",
	       "MIGRATIONS", "EVICTIONS");
	for (unsigned i = 0; i < n; i++) {
		const Hk__Ctl__StatusReply *s;

		if (!t[i].rsp) {
			printf("%-10s %-5s %s\n", node_name(&t[i]), "down", t[i].err);
			continue;
		}
		s = t[i].rsp->status;
		snprintf(f[0], sizeof(f[0]), "%" PRIu64, s->resident_pages);
		snprintf(f[1], sizeof(f[1]), "%" PRIu64, s->remote_faults);
		snprintf(f[2], sizeof(f[2]), "%" PRIu64, s->local_faults);
		snprintf(f[3], sizeof(f[3]), "%" PRIu64, s->invalidations);
		snprintf(f[4], sizeof(f[4]), "%" PRIu64, s->vcpu_migrations);
		snprintf(f[5], sizeof(f[5]), "%" PRIu64, s->evictions);
		printf(
		    ROW_FMT, s->node, "up",
		    hkctl_state_name(s->guest ? s->guest->state : HK__CTL__GUEST_STATE__GUEST_NONE),
		    f[0], f[1], f[2], f[3], f[4], f[5]);
	}
	snprintf(f[0], sizeof(f[0]), "%" PRIu64, tot->resident_pages);
	snprintf(f[1], sizeof(f[1]), "%" PRIu64, tot->remote_faults);
	snprintf(f[2], sizeof(f[2]), "%" PRIu64, tot->local_faults);
	snprintf(f[3], sizeof(f[3]), "%" PRIu64, tot->invalidations);
	snprintf(f[4], sizeof(f[4]), "%" PRIu64, tot->vcpu_migrations);
	snprintf(f[5], sizeof(f[5]), "%" PRIu64, tot->evictions);
	snprintf(f[6], sizeof(f[6]), "%u/%u", tot->up, tot->nodes);
	printf(ROW_FMT, "total", f[6], "", f[0], f[1], f[2], f[3], f[4], f[5]);
}

int hkctl_status(struct hkctl *c)
{
	static struct hkctl_node_status t[HK_MAX_NODES];
	const struct hkctl_node_status *first = NULL;
	struct pool_totals tot;
	unsigned n = hkctl_status_targets(c, t), down;

	down = hkctl_status_query(t, n, n > 1 ? HKCTL_NODE_TIMEOUT_S : HKCTL_REPLY_TIMEOUT_S);
	/* One daemon asked and it did not answer: the error is all there is. */
	if (n == 1 && down)
		return hkctl_die("%s", t[0].err);
	for (unsigned i = 0; i < n && !first; i++)
		if (t[i].rsp)
			first = &t[i];
	sum(t, n, &tot);
	if (c->json) {
		json_t *j = first ? status_json(first->rsp->status) : json_object(),
		       *nodes = json_array();

		for (unsigned i = 0; i < n; i++)
			json_array_append_new(nodes, node_json(&t[i]));
		json_object_set_new(j, "nodes", nodes);
		json_object_set_new(j, "totals", totals_json(&tot));
		hkctl_print_json(j);
	} else if (n == 1) {
		print_one(first->rsp->status);
	} else {
		char buf[32];

		if (first) {
			const Hk__Ctl__StatusReply *s = first->rsp->status;

			printf("cluster       %s, %u nodes (%u up)\n", s->cluster, n, tot.up);
			printf("vcpus         %u\n", s->vcpus);
			printf("guest memory  %s\n",
			       hk_format_size(s->guest_memory, buf, sizeof(buf)));
			hkctl_print_guest(s->guest);
		}
		putchar('\n');
		print_table(t, n, &tot);
	}
	if (down) {
		char names[256] = "";
		size_t len = 0;

		for (unsigned i = 0; i < n && len < sizeof(names); i++)
			if (!t[i].rsp)
				len += snprintf(names + len, sizeof(names) - len, "%s%s",
						len ? ", " : "", node_name(&t[i]));
		hkctl_die("%u of %u nodes did not answer: %s", down, n, names);
	}
	hkctl_status_release(t, n);
	return down ? 1 : 0;
}
