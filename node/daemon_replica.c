/*
 * hkctl replica show | stats | verify on one node.
 *
 * verify compares every replica frame with its disk block.  It reads the
 * blocks first, then compares under the table's read lock (inside the
 * lookup callback), so a page the guest writes meanwhile loses its entry
 * either before the comparison (not compared) or after it (compared while
 * it provably was a replica): no false mismatches, no missed ones.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon.h"

#define VERIFY_CHUNK_PAGES 256u
#define VERIFY_REPORT_MAX  16u

void hk_daemon_reply_error(Hk__Ctl__CtlResponse *rsp, const char *fmt, ...)
{
	va_list ap;
	char *s;

	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		s = NULL;
	va_end(ap);
	rsp->error = s ? s : strdup("out of memory");
}

static const char *disk_name(struct hk_daemon *d, uint16_t id)
{
	return id < d->cfg->n_disks ? d->cfg->disks[id].name : "?";
}

struct collect {
	struct hk_replica_extent *v;
	size_t n, cap;
	uint64_t limit;
	bool truncated;
};

static int collect_extent(void *ctx, const struct hk_replica_extent *e)
{
	struct collect *c = ctx;

	if (c->limit && c->n == c->limit) {
		c->truncated = true;
		return 1;
	}
	if (c->n == c->cap) {
		size_t cap = c->cap ? 2 * c->cap : 256;
		void *v = realloc(c->v, cap * sizeof(*c->v));

		if (!v)
			return -ENOMEM;
		c->v = v;
		c->cap = cap;
	}
	c->v[c->n++] = *e;
	return 0;
}

static Hk__Ctl__ReplicaExtent *extent_msg(struct hk_daemon *d, const struct hk_replica_extent *e)
{
	Hk__Ctl__ReplicaExtent *m = calloc(1, sizeof(*m));

	if (!m)
		return NULL;
	hk__ctl__replica_extent__init(m);
	m->gpa = e->gpa;
	m->node = e->node;
	m->frame = e->frame;
	m->disk = strdup(disk_name(d, e->disk));
	m->block = e->block;
	m->pages = e->npages;
	return m;
}

void hk_daemon_replica_show(struct hk_daemon *d, const Hk__Ctl__ReplicaShowRequest *req,
			    Hk__Ctl__CtlResponse *rsp)
{
	struct hk_replica_filter f = {.gpa_start = req->gpa_start, .gpa_end = req->gpa_end};
	struct collect c = {.limit = req->limit};
	Hk__Ctl__ReplicaShowReply *r;

	if (req->disk && *req->disk) {
		const struct hk_disk_conf *dc = hk_config_disk(d->cfg, req->disk);

		if (!dc) {
			hk_daemon_reply_error(rsp, "replica show: no disk '%s' in %s", req->disk,
					      d->cfg->path);
			return;
		}
		f.by_disk = true;
		f.disk = (uint16_t)(dc - d->cfg->disks);
	}
	if (req->gpa_end && req->gpa_end <= req->gpa_start) {
		hk_daemon_reply_error(rsp, "replica show: empty GPA range");
		return;
	}
	/* One more than asked, to know whether the listing was cut. */
	f.limit = req->limit ? req->limit + 1 : 0;
	c.limit = req->limit;
	if (hk_replica_foreach(d->replicas, &f, collect_extent, &c) < 0) {
		hk_daemon_reply_error(rsp, "replica show: out of memory");
		free(c.v);
		return;
	}
	r = calloc(1, sizeof(*r));
	if (!r)
		goto oom;
	hk__ctl__replica_show_reply__init(r);
	r->truncated = c.truncated;
	r->extents = calloc(c.n ? c.n : 1, sizeof(*r->extents));
	if (!r->extents) {
		free(r);
		goto oom;
	}
	for (size_t i = 0; i < c.n; i++) {
		r->extents[i] = extent_msg(d, &c.v[i]);
		if (r->extents[i])
			r->n_extents++;
	}
	free(c.v);
	rsp->rep_case = HK__CTL__CTL_RESPONSE__REP_REPLICA_SHOW;
	rsp->replica_show = r;
	return;
oom:
	free(c.v);
	hk_daemon_reply_error(rsp, "replica show: out of memory");
}

void hk_daemon_replica_stats(struct hk_daemon *d, Hk__Ctl__CtlResponse *rsp)
{
	Hk__Ctl__ReplicaStatsReply *r = calloc(1, sizeof(*r));
	struct hk_replica_stats st;

	if (!r) {
		hk_daemon_reply_error(rsp, "replica stats: out of memory");
		return;
	}
	hk__ctl__replica_stats_reply__init(r);
	hk_replica_get_stats(d->replicas, &st);
	r->enabled = d->replicas_enabled;
	r->entries = st.entries;
	r->extents = st.extents;
	r->bytes_covered = st.bytes_covered;
	r->metadata_bytes = st.metadata_bytes;
	r->hits = st.hits;
	r->misses = st.misses;
	r->invalidations = st.invalidations;
	rsp->rep_case = HK__CTL__CTL_RESPONSE__REP_REPLICA_STATS;
	rsp->replica_stats = r;
}

struct verify {
	struct hk_daemon *d;
	struct hk_mem *mem;
	const struct hk_replica_extent *e; /* the extent being checked */
	const uint8_t *blocks;             /* its blocks, read from disk */
	uint64_t block0;
	uint64_t checked, mismatches;
	Hk__Ctl__ReplicaVerifyReply *r;
};

static int verify_run(void *ctx, const struct hk_replica_run *run)
{
	struct verify *v = ctx;

	if (!run->hit)
		return 0; /* the entry went away since we listed it */
	for (uint64_t i = 0; i < run->nblocks; i++) {
		uint64_t gpa = run->gpa + i * HK_PAGE_SIZE;
		const uint8_t *mem = v->mem ? hk_mem_gpa(v->mem, gpa, HK_PAGE_SIZE) : NULL;
		const uint8_t *disk = v->blocks + (run->block + i - v->block0) * HK_PAGE_SIZE;

		v->checked++;
		if (mem && !memcmp(mem, disk, HK_PAGE_SIZE))
			continue;
		v->mismatches++;
		if (v->r->n_first_mismatches < VERIFY_REPORT_MAX) {
			struct hk_replica_extent one = {gpa, run->frame + i, run->block + i, 1,
							run->node, v->e->disk};

			v->r->first_mismatches[v->r->n_first_mismatches] = extent_msg(v->d, &one);
			if (v->r->first_mismatches[v->r->n_first_mismatches])
				v->r->n_first_mismatches++;
		}
	}
	return 0;
}

static struct hk_daemon_disk *disk_by_id(struct hk_daemon *d, uint16_t id)
{
	for (unsigned i = 0; i < d->n_disks; i++)
		if (d->disks[i].id == id)
			return &d->disks[i];
	return NULL;
}

void hk_daemon_replica_verify(struct hk_daemon *d, struct hk_mem *mem, Hk__Ctl__CtlResponse *rsp)
{
	struct hk_replica_filter f = {0};
	struct collect c = {0};
	struct verify v = {.d = d, .mem = mem};
	uint8_t *buf = NULL;
	int ret = 0;

	v.r = calloc(1, sizeof(*v.r));
	if (!v.r || posix_memalign((void **)&buf, 4096, VERIFY_CHUNK_PAGES * HK_PAGE_SIZE) ||
	    hk_replica_foreach(d->replicas, &f, collect_extent, &c) < 0)
		goto oom;
	hk__ctl__replica_verify_reply__init(v.r);
	v.r->first_mismatches = calloc(VERIFY_REPORT_MAX, sizeof(*v.r->first_mismatches));
	if (!v.r->first_mismatches)
		goto oom;

	for (size_t i = 0; i < c.n && !ret; i++) {
		const struct hk_replica_extent *e = &c.v[i];
		struct hk_daemon_disk *dd = disk_by_id(d, e->disk);

		if (!dd || e->node != d->node_id)
			continue; /* P3: served or held elsewhere */
		v.e = e;
		for (uint64_t p = 0; p < e->npages && !ret; p += VERIFY_CHUNK_PAGES) {
			uint64_t n = e->npages - p < VERIFY_CHUNK_PAGES ? e->npages - p
									: VERIFY_CHUNK_PAGES;

			ret = hk_disk_pread(dd->disk, buf, n * HK_PAGE_SIZE,
					    (e->block + p) * HK_PAGE_SIZE);
			if (ret)
				break;
			v.blocks = buf;
			v.block0 = e->block + p;
			hk_replica_lookup_blocks(d->replicas, e->disk, e->block + p, n, verify_run,
						 &v);
		}
	}
	free(c.v);
	free(buf);
	if (ret) {
		hk_daemon_reply_error(rsp, "replica verify: reading the disk: %s", strerror(-ret));
		free(v.r->first_mismatches);
		free(v.r);
		return;
	}
	v.r->checked = v.checked;
	v.r->mismatches = v.mismatches;
	rsp->rep_case = HK__CTL__CTL_RESPONSE__REP_REPLICA_VERIFY;
	rsp->replica_verify = v.r;
	return;
oom:
	free(c.v);
	free(buf);
	if (v.r)
		free(v.r->first_mismatches);
	free(v.r);
	hk_daemon_reply_error(rsp, "replica verify: out of memory");
}
