/*
 * hkctl replica show | stats | verify, and hkctl disk mkdata.
 *
 * Each node keeps its own replica table (the entries of the disks it
 * serves), so the replica commands ask every [node] of the config, in
 * config order, unless --node or --socket names one daemon.  One daemon
 * asked gives the single-node output of before; several give one result
 * per node and totals.  A node that does not answer gets one line on
 * stderr naming it and why; the others are still reported and the exit
 * status is 1.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hkctl.h"

/* Entries name the node holding the frame by its index in the config. */
static const char *id_name(const struct hkctl *c, uint32_t id, char *buf, size_t len)
{
	if (c->cfg && id < c->cfg->n_nodes)
		return c->cfg->nodes[id].name;
	snprintf(buf, len, "%" PRIu32, id);
	return buf;
}

static const char *target_name(const struct hkctl_node_status *t)
{
	return *t->name ? t->name : t->sock;
}

/* One line per node that did not answer: "hkctl: node n2: cannot reach hkd at ...". */
static void report_down(const struct hkctl_node_status *t, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		if (t[i].rsp)
			continue;
		if (*t[i].name)
			hkctl_die("node %s: %s", t[i].name, t[i].err);
		else
			hkctl_die("%s", t[i].err);
	}
}

static json_t *extent_json(const struct hkctl *c, const Hk__Ctl__ReplicaExtent *e,
			   const struct hkctl_node_status *from)
{
	json_t *j = json_pack("{s:I, s:i, s:I, s:s, s:I, s:I}", "gpa", (json_int_t)e->gpa, "node",
			      (int)e->node, "frame", (json_int_t)e->frame, "disk", e->disk, "block",
			      (json_int_t)e->block, "pages", (json_int_t)e->pages);

	if (c->cfg && e->node < c->cfg->n_nodes)
		json_object_set_new(j, "node_name", json_string(c->cfg->nodes[e->node].name));
	if (*from->name)
		json_object_set_new(j, "from", json_string(from->name));
	return j;
}

/* "A-B" with sizes or numbers (0x...), B exclusive; "A-" means no end. */
static int parse_gpa_range(const char *s, uint64_t *a, uint64_t *b)
{
	const char *dash = strchr(s, '-');
	char first[64];

	if (!dash || (size_t)(dash - s) >= sizeof(first))
		return -1;
	memcpy(first, s, dash - s);
	first[dash - s] = 0;
	if (hk_parse_size(first, a) && sscanf(first, "%" SCNx64, a) != 1)
		return -1;
	*b = 0;
	if (dash[1] && hk_parse_size(dash + 1, b) && sscanf(dash + 1, "%" SCNx64, b) != 1)
		return -1;
	return *b && *b <= *a ? -1 : 0;
}

/*
 * Ask the n targets.  Returns how many did not answer, or -1 when the one
 * daemon asked did not (its error, printed, is then all there is).
 */
static int ask(struct hkctl_node_status *t, unsigned n, Hk__Ctl__CtlRequest *req,
	       Hk__Ctl__CtlResponse__RepCase want, const char *what, unsigned timeout_s)
{
	unsigned down = hkctl_ask_each(t, n, req, want, what, timeout_s);

	if (n == 1 && down) {
		report_down(t, n);
		return -1;
	}
	return (int)down;
}

static json_t *down_json(const struct hkctl_node_status *t)
{
	return json_pack("{s:s, s:b, s:s}", "node", target_name(t), "up", 0, "error", t->err);
}

/* One object per node for --json: {node, up, ...what fn makes of its reply}. */
typedef json_t *(*node_json_fn)(const struct hkctl *c, const struct hkctl_node_status *t);

static json_t *nodes_json(const struct hkctl *c, const struct hkctl_node_status *t, unsigned n,
			  node_json_fn fn)
{
	json_t *nodes = json_array();

	for (unsigned i = 0; i < n; i++) {
		json_t *e;

		if (!t[i].rsp) {
			json_array_append_new(nodes, down_json(&t[i]));
			continue;
		}
		e = json_pack("{s:s, s:b}", "node", target_name(&t[i]), "up", 1);
		json_object_update_new(e, fn(c, &t[i]));
		json_array_append_new(nodes, e);
	}
	return nodes;
}

/* ---- show --------------------------------------------------------------- */

static void show_json(const struct hkctl *c, const struct hkctl_node_status *t, unsigned n)
{
	json_t *a = json_array(), *nodes = json_array(), *j;
	uint64_t extents = 0, pages = 0;
	unsigned up = 0;
	bool truncated = false;

	for (unsigned i = 0; i < n; i++) {
		const Hk__Ctl__ReplicaShowReply *r;
		uint64_t p = 0;

		if (!t[i].rsp) {
			json_array_append_new(nodes, down_json(&t[i]));
			continue;
		}
		r = t[i].rsp->replica_show;
		for (size_t k = 0; k < r->n_extents; k++) {
			json_array_append_new(a, extent_json(c, r->extents[k], &t[i]));
			p += r->extents[k]->pages;
		}
		json_array_append_new(nodes, json_pack("{s:s, s:b, s:I, s:I, s:b}", "node",
						       target_name(&t[i]), "up", 1, "extents",
						       (json_int_t)r->n_extents, "pages",
						       (json_int_t)p, "truncated", r->truncated));
		truncated |= r->truncated;
		extents += r->n_extents;
		pages += p;
		up++;
	}
	j = json_pack("{s:o, s:b}", "extents", a, "truncated", truncated);
	if (n > 1) {
		json_object_set_new(j, "nodes", nodes);
		json_object_set_new(j, "totals",
				    json_pack("{s:i, s:i, s:I, s:I}", "nodes", (int)n, "nodes_up",
					      (int)up, "extents", (json_int_t)extents, "pages",
					      (json_int_t)pages));
	} else {
		json_decref(nodes);
	}
	hkctl_print_json(j);
}

static void show_table(const struct hkctl *c, const struct hkctl_node_status *t, unsigned n)
{
	uint64_t extents = 0, pages = 0;
	unsigned up = 0;

	/* Several nodes: FROM is the node whose table lists the extent. */
	if (n > 1)
		printf("%-10s ", "FROM");
	printf("%-18s %-10s %-14s %-8s %-14s %s\n", "GPA", "NODE", "FRAME", "DISK", "BLOCK",
	       "PAGES");
	for (unsigned i = 0; i < n; i++) {
		const Hk__Ctl__ReplicaShowReply *r;

		if (!t[i].rsp)
			continue;
		r = t[i].rsp->replica_show;
		for (size_t k = 0; k < r->n_extents; k++) {
			const Hk__Ctl__ReplicaExtent *e = r->extents[k];
			char id[16];

			if (n > 1)
				printf("%-10s ", target_name(&t[i]));
			printf("0x%016" PRIx64 " %-10s %-14" PRIu64 " %-8s %-14" PRIu64 " %" PRIu64
			       "\n",
			       e->gpa, id_name(c, e->node, id, sizeof(id)), e->frame, e->disk,
			       e->block, e->pages);
			pages += e->pages;
		}
		extents += r->n_extents;
		up++;
		if (r->truncated && n > 1)
			printf("(%s: more extents match; raise --limit)\n", target_name(&t[i]));
		else if (r->truncated)
			printf("(more extents match; raise --limit)\n");
	}
	if (n > 1)
		printf("total: %" PRIu64 " extents, %" PRIu64 " pages from %u/%u nodes\n", extents,
		       pages, up, n);
}

int hkctl_replica_show(struct hkctl *c)
{
	static struct hkctl_node_status t[HK_MAX_NODES];
	Hk__Ctl__CtlRequest req = HK__CTL__CTL_REQUEST__INIT;
	Hk__Ctl__ReplicaShowRequest rs = HK__CTL__REPLICA_SHOW_REQUEST__INIT;
	uint64_t limit;
	unsigned n;
	int down;

	if (c->val[OPT_GPA] && parse_gpa_range(c->val[OPT_GPA], &rs.gpa_start, &rs.gpa_end))
		return hkctl_die("--gpa: want START-END (e.g. 64M-128M or 0x4000000-0x8000000), "
				 "not '%s'",
				 c->val[OPT_GPA]);
	if (hkctl_opt_uint(c, OPT_LIMIT, 0, UINT32_MAX, &limit))
		return 1;
	/* Checked here, once: otherwise every node would refuse it on its own line. */
	if (c->val[OPT_DISK] && c->cfg && !hk_config_disk(c->cfg, c->val[OPT_DISK]))
		return hkctl_die("--disk: %s has no [disk %s]", c->cfg->path, c->val[OPT_DISK]);
	rs.limit = limit;
	rs.disk = (char *)(c->val[OPT_DISK] ? c->val[OPT_DISK] : "");
	req.req_case = HK__CTL__CTL_REQUEST__REQ_REPLICA_SHOW;
	req.replica_show = &rs;
	n = hkctl_status_targets(c, t);
	down = ask(t, n, &req, HK__CTL__CTL_RESPONSE__REP_REPLICA_SHOW, "replica show",
		   HKCTL_REPLY_TIMEOUT_S);
	if (down < 0)
		return 1;
	if (c->json)
		show_json(c, t, n);
	else
		show_table(c, t, n);
	report_down(t, n);
	hkctl_status_release(t, n);
	return down ? 1 : 0;
}

/* ---- stats -------------------------------------------------------------- */

/* The counters `totals` sums, in output order. */
#define STATS_COUNTERS(X)                                                                          \
	X(entries)                                                                                 \
	X(extents)                                                                                 \
	X(bytes_covered)                                                                           \
	X(metadata_bytes)                                                                          \
	X(hits)                                                                                    \
	X(misses)                                                                                  \
	X(invalidations)

struct stats_totals {
#define X(f) uint64_t f;
	STATS_COUNTERS(X)
#undef X
	unsigned up;
};

static void stats_sum(const struct hkctl_node_status *t, unsigned n, struct stats_totals *tot)
{
	memset(tot, 0, sizeof(*tot));
	for (unsigned i = 0; i < n; i++) {
		if (!t[i].rsp)
			continue;
		tot->up++;
#define X(f) tot->f += t[i].rsp->replica_stats->f;
		STATS_COUNTERS(X)
#undef X
	}
}

/* The object a single node's replica stats --json has always printed. */
static json_t *stats_json(const Hk__Ctl__ReplicaStatsReply *s)
{
	json_t *o = json_object();

	json_object_set_new(o, "enabled", json_boolean(s->enabled));
#define X(f) json_object_set_new(o, #f, json_integer((json_int_t)s->f));
	STATS_COUNTERS(X)
#undef X
	return o;
}

static json_t *stats_node_json(const struct hkctl *c, const struct hkctl_node_status *t)
{
	(void)c;
	return stats_json(t->rsp->replica_stats);
}

static void stats_print_one(const Hk__Ctl__ReplicaStatsReply *s)
{
	char b1[32], b2[32];

	printf("table          %s\n", s->enabled ? "on" : "off");
	printf("entries        %" PRIu64 " pages in %" PRIu64 " extents\n", s->entries, s->extents);
	printf("covered        %s\n", hk_format_size(s->bytes_covered, b1, sizeof(b1)));
	printf("metadata       %s\n", hk_format_size(s->metadata_bytes, b2, sizeof(b2)));
	printf("hits           %" PRIu64 " blocks\n", s->hits);
	printf("misses         %" PRIu64 " blocks\n", s->misses);
	printf("invalidations  %" PRIu64 " pages\n", s->invalidations);
}

#define STATS_ROW "%-10s %-5s %-5s %10s %10s %10s %10s %10s %10s %10s\n"

static void stats_row(const char *name, const char *state, const char *table,
		      const struct stats_totals *v)
{
	char f[7][32];

	snprintf(f[0], sizeof(f[0]), "%" PRIu64, v->entries);
	snprintf(f[1], sizeof(f[1]), "%" PRIu64, v->extents);
	hk_format_size(v->bytes_covered, f[2], sizeof(f[2]));
	hk_format_size(v->metadata_bytes, f[3], sizeof(f[3]));
	snprintf(f[4], sizeof(f[4]), "%" PRIu64, v->hits);
	snprintf(f[5], sizeof(f[5]), "%" PRIu64, v->misses);
	snprintf(f[6], sizeof(f[6]), "%" PRIu64, v->invalidations);
	printf(STATS_ROW, name, state, table, f[0], f[1], f[2], f[3], f[4], f[5], f[6]);
}

static void stats_table(const struct hkctl_node_status *t, unsigned n,
			const struct stats_totals *tot)
{
	char up[24];

	printf(STATS_ROW, "NODE", "STATE", "TABLE", "ENTRIES", "EXTENTS", "COVERED", "METADATA",
	       "HITS", "MISSES", "INVAL");
	for (unsigned i = 0; i < n; i++) {
		const Hk__Ctl__ReplicaStatsReply *s;
		struct stats_totals one;

		if (!t[i].rsp) {
			printf("%-10s %-5s %s\n", target_name(&t[i]), "down", t[i].err);
			continue;
		}
		s = t[i].rsp->replica_stats;
#define X(f) one.f = s->f;
		STATS_COUNTERS(X)
#undef X
		stats_row(target_name(&t[i]), "up", s->enabled ? "on" : "off", &one);
	}
	snprintf(up, sizeof(up), "%u/%u", tot->up, n);
	stats_row("total", up, "", tot);
}

int hkctl_replica_stats(struct hkctl *c)
{
	static struct hkctl_node_status t[HK_MAX_NODES];
	Hk__Ctl__CtlRequest req = HK__CTL__CTL_REQUEST__INIT;
	Hk__Ctl__ReplicaStatsRequest rs = HK__CTL__REPLICA_STATS_REQUEST__INIT;
	struct stats_totals tot;
	unsigned n;
	int down;

	req.req_case = HK__CTL__CTL_REQUEST__REQ_REPLICA_STATS;
	req.replica_stats = &rs;
	/* A snapshot: like status, a node that hangs must not hold up the rest. */
	n = hkctl_status_targets(c, t);
	down = ask(t, n, &req, HK__CTL__CTL_RESPONSE__REP_REPLICA_STATS, "replica stats",
		   n > 1 ? HKCTL_NODE_TIMEOUT_S : HKCTL_REPLY_TIMEOUT_S);
	if (down < 0)
		return 1;
	stats_sum(t, n, &tot);
	if (n == 1 && c->json) {
		hkctl_print_json(stats_json(t[0].rsp->replica_stats));
	} else if (n == 1) {
		stats_print_one(t[0].rsp->replica_stats);
	} else if (c->json) {
		json_t *nodes = nodes_json(c, t, n, stats_node_json), *o = json_object();

		json_object_set_new(o, "nodes", json_integer(n));
		json_object_set_new(o, "nodes_up", json_integer(tot.up));
#define X(f) json_object_set_new(o, #f, json_integer((json_int_t)tot.f));
		STATS_COUNTERS(X)
#undef X
		hkctl_print_json(json_pack("{s:o, s:o}", "nodes", nodes, "totals", o));
	} else {
		stats_table(t, n, &tot);
	}
	report_down(t, n);
	hkctl_status_release(t, n);
	return down ? 1 : 0;
}

/* ---- verify ------------------------------------------------------------- */

static json_t *verify_json(const struct hkctl *c, const struct hkctl_node_status *t)
{
	const Hk__Ctl__ReplicaVerifyReply *v = t->rsp->replica_verify;
	json_t *a = json_array();

	for (size_t i = 0; i < v->n_first_mismatches; i++)
		json_array_append_new(a, extent_json(c, v->first_mismatches[i], t));
	return json_pack("{s:I, s:I, s:o}", "checked", (json_int_t)v->checked, "mismatches",
			 (json_int_t)v->mismatches, "first_mismatches", a);
}

static void verify_print_mismatches(const struct hkctl *c, const struct hkctl_node_status *t,
				    const char *indent)
{
	const Hk__Ctl__ReplicaVerifyReply *v = t->rsp->replica_verify;

	for (size_t i = 0; i < v->n_first_mismatches; i++) {
		const Hk__Ctl__ReplicaExtent *e = v->first_mismatches[i];
		char id[16];

		printf("%sgpa 0x%" PRIx64 " node %s disk %s block %" PRIu64 "\n", indent, e->gpa,
		       id_name(c, e->node, id, sizeof(id)), e->disk, e->block);
	}
}

#define VERIFY_ROW "%-10s %-5s %12s %12s\n"

static void verify_table(const struct hkctl *c, const struct hkctl_node_status *t, unsigned n,
			 uint64_t checked, uint64_t mismatches, unsigned up)
{
	char f[3][24];

	printf(VERIFY_ROW, "NODE", "STATE", "CHECKED", "MISMATCHES");
	for (unsigned i = 0; i < n; i++) {
		const Hk__Ctl__ReplicaVerifyReply *v;

		if (!t[i].rsp) {
			printf("%-10s %-5s %s\n", target_name(&t[i]), "down", t[i].err);
			continue;
		}
		v = t[i].rsp->replica_verify;
		snprintf(f[0], sizeof(f[0]), "%" PRIu64, v->checked);
		snprintf(f[1], sizeof(f[1]), "%" PRIu64, v->mismatches);
		printf(VERIFY_ROW, target_name(&t[i]), "up", f[0], f[1]);
		verify_print_mismatches(c, &t[i], "  ");
	}
	snprintf(f[0], sizeof(f[0]), "%" PRIu64, checked);
	snprintf(f[1], sizeof(f[1]), "%" PRIu64, mismatches);
	snprintf(f[2], sizeof(f[2]), "%u/%u", up, n);
	printf(VERIFY_ROW, "total", f[2], f[0], f[1]);
}

int hkctl_replica_verify(struct hkctl *c)
{
	static struct hkctl_node_status t[HK_MAX_NODES];
	Hk__Ctl__CtlRequest req = HK__CTL__CTL_REQUEST__INIT;
	Hk__Ctl__ReplicaVerifyRequest rv = HK__CTL__REPLICA_VERIFY_REQUEST__INIT;
	uint64_t checked = 0, mismatches = 0;
	char bad[256] = "";
	size_t len = 0;
	unsigned n, up = 0;
	int down;

	req.req_case = HK__CTL__CTL_REQUEST__REQ_REPLICA_VERIFY;
	req.replica_verify = &rv;
	/* Reads every replicated block: allow for large tables.  One node
	 * after another, so the nodes do not compete for one host's disks. */
	n = hkctl_status_targets(c, t);
	down = ask(t, n, &req, HK__CTL__CTL_RESPONSE__REP_REPLICA_VERIFY, "replica verify", 3600);
	if (down < 0)
		return 1;
	for (unsigned i = 0; i < n; i++) {
		const Hk__Ctl__ReplicaVerifyReply *v;

		if (!t[i].rsp)
			continue;
		v = t[i].rsp->replica_verify;
		up++;
		checked += v->checked;
		mismatches += v->mismatches;
		if (v->mismatches && len < sizeof(bad))
			len += snprintf(bad + len, sizeof(bad) - len, "%s%s", len ? ", " : "",
					target_name(&t[i]));
	}
	if (n == 1 && c->json) {
		hkctl_print_json(verify_json(c, &t[0]));
	} else if (n == 1) {
		printf("checked     %" PRIu64 " pages\n", checked);
		printf("mismatches  %" PRIu64 "\n", mismatches);
		verify_print_mismatches(c, &t[0], "  ");
	} else if (c->json) {
		json_t *nodes = nodes_json(c, t, n, verify_json);

		hkctl_print_json(json_pack(
		    "{s:o, s:{s:i, s:i, s:I, s:I}, s:b}", "nodes", nodes, "totals", "nodes", (int)n,
		    "nodes_up", (int)up, "checked", (json_int_t)checked, "mismatches",
		    (json_int_t)mismatches, "verified", !down && !mismatches));
	} else {
		verify_table(c, t, n, checked, mismatches, up);
	}
	report_down(t, n);
	if (mismatches && n > 1)
		hkctl_die("replica verify: %" PRIu64 " mismatches (%s)", mismatches, bad);
	else if (mismatches)
		hkctl_die("replica verify: %" PRIu64 " mismatches", mismatches);
	hkctl_status_release(t, n);
	return down || mismatches ? 1 : 0;
}

int hkctl_disk_mkdata(struct hkctl *c)
{
	Hk__Ctl__CtlRequest req = HK__CTL__CTL_REQUEST__INIT;
	Hk__Ctl__DiskMkdataRequest mk = HK__CTL__DISK_MKDATA_REQUEST__INIT;
	Hk__Ctl__CtlResponse *rsp;
	const Hk__Ctl__DiskMkdataReply *r;
	char buf[32], sock[sizeof(c->sock)], err[768];

	if (!c->val[OPT_DISK] || !c->val[OPT_SIZE])
		return hkctl_die("disk mkdata: --disk D and --size SIZE are required");
	if (hkctl_opt_size(c, OPT_SIZE, 0, &mk.size) ||
	    hkctl_opt_uint(c, OPT_SEED, 1, UINT64_MAX, &mk.seed) ||
	    hkctl_disk_socket(c, c->val[OPT_DISK], sock, sizeof(sock)))
		return 1;
	mk.disk = (char *)c->val[OPT_DISK];
	mk.force = c->force;
	req.req_case = HK__CTL__CTL_REQUEST__REQ_DISK_MKDATA;
	req.disk_mkdata = &mk;
	if (!c->json)
		fprintf(stderr, "hkctl: writing %s data set to disk %s ...\n",
			hk_format_size(mk.size, buf, sizeof(buf)), mk.disk);
	/* The disk's own node writes it: another node only forwards its window. */
	if (hkctl_call_at(sock, &req, &rsp, 3600, err, sizeof(err)))
		return hkctl_die("%s", err);
	r = rsp->disk_mkdata;
	if (c->json)
		hkctl_print_json(json_pack("{s:s, s:I, s:I, s:b}", "disk", mk.disk, "records",
					   (json_int_t)r->records, "bytes", (json_int_t)r->bytes,
					   "reused", r->reused));
	else
		printf("disk %s: %" PRIu64 " records (%s)%s\n", mk.disk, r->records,
		       hk_format_size(r->bytes, buf, sizeof(buf)),
		       r->reused ? ", already there" : "");
	hk__ctl__ctl_response__free_unpacked(rsp, NULL);
	return 0;
}
