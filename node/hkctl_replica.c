/* hkctl replica show | stats | verify, and hkctl disk mkdata. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hkctl.h"

static json_t *extent_json(const Hk__Ctl__ReplicaExtent *e)
{
	return json_pack("{s:I, s:i, s:I, s:s, s:I, s:I}", "gpa", (json_int_t)e->gpa, "node",
			 (int)e->node, "frame", (json_int_t)e->frame, "disk", e->disk, "block",
			 (json_int_t)e->block, "pages", (json_int_t)e->pages);
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

int hkctl_replica_show(struct hkctl *c)
{
	Hk__Ctl__CtlRequest req = HK__CTL__CTL_REQUEST__INIT;
	Hk__Ctl__ReplicaShowRequest rs = HK__CTL__REPLICA_SHOW_REQUEST__INIT;
	Hk__Ctl__CtlResponse *rsp;
	const Hk__Ctl__ReplicaShowReply *r;
	uint64_t limit;

	if (c->val[OPT_GPA] && parse_gpa_range(c->val[OPT_GPA], &rs.gpa_start, &rs.gpa_end))
		return hkctl_die("--gpa: want START-END (e.g. 64M-128M or 0x4000000-0x8000000), "
				 "not '%s'",
				 c->val[OPT_GPA]);
	if (hkctl_opt_uint(c, OPT_LIMIT, 0, UINT32_MAX, &limit))
		return 1;
	rs.limit = limit;
	rs.disk = (char *)(c->val[OPT_DISK] ? c->val[OPT_DISK] : "");
	req.req_case = HK__CTL__CTL_REQUEST__REQ_REPLICA_SHOW;
	req.replica_show = &rs;
	if (hkctl_call(c, &req, &rsp, HKCTL_REPLY_TIMEOUT_S))
		return 1;
	r = rsp->replica_show;
	if (c->json) {
		json_t *a = json_array();

		for (size_t i = 0; i < r->n_extents; i++)
			json_array_append_new(a, extent_json(r->extents[i]));
		hkctl_print_json(json_pack("{s:o, s:b}", "extents", a, "truncated", r->truncated));
	} else {
		printf("%-18s %-6s %-14s %-8s %-14s %s\n", "GPA", "NODE", "FRAME", "DISK", "BLOCK",
		       "PAGES");
		for (size_t i = 0; i < r->n_extents; i++) {
			const Hk__Ctl__ReplicaExtent *e = r->extents[i];

			printf("0x%016" PRIx64 " %-6u %-14" PRIu64 " %-8s %-14" PRIu64 " %" PRIu64
			       "\n",
			       e->gpa, e->node, e->frame, e->disk, e->block, e->pages);
		}
		if (r->truncated)
			printf("(more extents match; raise --limit)\n");
	}
	hk__ctl__ctl_response__free_unpacked(rsp, NULL);
	return 0;
}

int hkctl_replica_stats(struct hkctl *c)
{
	Hk__Ctl__CtlRequest req = HK__CTL__CTL_REQUEST__INIT;
	Hk__Ctl__ReplicaStatsRequest rs = HK__CTL__REPLICA_STATS_REQUEST__INIT;
	Hk__Ctl__CtlResponse *rsp;
	const Hk__Ctl__ReplicaStatsReply *s;
	char b1[32], b2[32];

	req.req_case = HK__CTL__CTL_REQUEST__REQ_REPLICA_STATS;
	req.replica_stats = &rs;
	if (hkctl_call(c, &req, &rsp, HKCTL_REPLY_TIMEOUT_S))
		return 1;
	s = rsp->replica_stats;
	if (c->json) {
		hkctl_print_json(json_pack(
			"{s:b, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "enabled", s->enabled, "entries",
			(json_int_t)s->entries, "extents", (json_int_t)s->extents, "bytes_covered",
			(json_int_t)s->bytes_covered, "metadata_bytes", (json_int_t)s->metadata_bytes,
			"hits", (json_int_t)s->hits, "misses", (json_int_t)s->misses, "invalidations",
			(json_int_t)s->invalidations));
	} else {
		printf("table          %s\n", s->enabled ? "on" : "off");
		printf("entries        %" PRIu64 " pages in %" PRIu64 " extents\n", s->entries,
		       s->extents);
		printf("covered        %s\n", hk_format_size(s->bytes_covered, b1, sizeof(b1)));
		printf("metadata       %s\n", hk_format_size(s->metadata_bytes, b2, sizeof(b2)));
		printf("hits           %" PRIu64 " blocks\n", s->hits);
		printf("misses         %" PRIu64 " blocks\n", s->misses);
		printf("invalidations  %" PRIu64 " pages\n", s->invalidations);
	}
	hk__ctl__ctl_response__free_unpacked(rsp, NULL);
	return 0;
}

int hkctl_replica_verify(struct hkctl *c)
{
	Hk__Ctl__CtlRequest req = HK__CTL__CTL_REQUEST__INIT;
	Hk__Ctl__ReplicaVerifyRequest rv = HK__CTL__REPLICA_VERIFY_REQUEST__INIT;
	Hk__Ctl__CtlResponse *rsp;
	const Hk__Ctl__ReplicaVerifyReply *v;
	int ret;

	req.req_case = HK__CTL__CTL_REQUEST__REQ_REPLICA_VERIFY;
	req.replica_verify = &rv;
	/* Reads every replicated block: allow for large tables. */
	if (hkctl_call(c, &req, &rsp, 3600))
		return 1;
	v = rsp->replica_verify;
	if (c->json) {
		json_t *a = json_array();

		for (size_t i = 0; i < v->n_first_mismatches; i++)
			json_array_append_new(a, extent_json(v->first_mismatches[i]));
		hkctl_print_json(json_pack("{s:I, s:I, s:o}", "checked", (json_int_t)v->checked,
					   "mismatches", (json_int_t)v->mismatches,
					   "first_mismatches", a));
	} else {
		printf("checked     %" PRIu64 " pages\n", v->checked);
		printf("mismatches  %" PRIu64 "\n", v->mismatches);
		for (size_t i = 0; i < v->n_first_mismatches; i++)
			printf("  gpa 0x%" PRIx64 " disk %s block %" PRIu64 "\n",
			       v->first_mismatches[i]->gpa, v->first_mismatches[i]->disk,
			       v->first_mismatches[i]->block);
	}
	ret = v->mismatches ? hkctl_die("replica verify: %" PRIu64 " mismatches", v->mismatches) : 0;
	hk__ctl__ctl_response__free_unpacked(rsp, NULL);
	return ret;
}

int hkctl_disk_mkdata(struct hkctl *c)
{
	Hk__Ctl__CtlRequest req = HK__CTL__CTL_REQUEST__INIT;
	Hk__Ctl__DiskMkdataRequest mk = HK__CTL__DISK_MKDATA_REQUEST__INIT;
	Hk__Ctl__CtlResponse *rsp;
	const Hk__Ctl__DiskMkdataReply *r;
	char buf[32];

	if (!c->val[OPT_DISK] || !c->val[OPT_SIZE])
		return hkctl_die("disk mkdata: --disk D and --size SIZE are required");
	if (hkctl_opt_size(c, OPT_SIZE, 0, &mk.size) || hkctl_opt_uint(c, OPT_SEED, 1, UINT64_MAX,
								       &mk.seed))
		return 1;
	mk.disk = (char *)c->val[OPT_DISK];
	mk.force = c->force;
	req.req_case = HK__CTL__CTL_REQUEST__REQ_DISK_MKDATA;
	req.disk_mkdata = &mk;
	if (!c->json)
		fprintf(stderr, "hkctl: writing %s data set to disk %s ...\n",
			hk_format_size(mk.size, buf, sizeof(buf)), mk.disk);
	if (hkctl_call(c, &req, &rsp, 3600))
		return 1;
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
