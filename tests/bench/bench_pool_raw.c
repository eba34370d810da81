/*
 * Floor (b) of the remote page-fault benchmark: raw hk_fabric (libfabric
 * RDM, tagged messages) between the same two processes and provider as
 * the cluster, with nothing of node/cluster.c or the coherence engine in
 * the path.  One thread per side owns its endpoint (manual progress).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_pool.h"
#include "hyperkernel.h"

#define PAGE HK_PAGE_SIZE

/* Buffer i of the endpoint's registered area. */
static uint8_t *buf_at(struct raw_ep *r, unsigned i)
{
	return r->bufs + (size_t)i * PAGE;
}

static const struct hk_fabric_mr *mr_of(struct raw_ep *r)
{
	return r->have_mr ? &r->mr : NULL;
}

int raw_open(struct raw_ep *r, const char *provider, const char *node, const char *svc, char *err,
	     size_t errlen)
{
	struct hk_fabric_opts o = {
	    .size = sizeof(o),
	    .provider = provider,
	    .src_node = node,
	    .src_service = svc,
	    .wait = true, /* raw_ping may sleep in hk_fabric_wait, as the cluster does */
	};
	size_t len = (RAW_WINDOW_MAX + 2) * PAGE;
	int ret;

	memset(r, 0, sizeof(*r));
	r->bufs = aligned_alloc(PAGE, len);
	if (!r->bufs) {
		snprintf(err, errlen, "raw: out of memory");
		return -ENOMEM;
	}
	memset(r->bufs, 0x5a, len);
	ret = hk_fabric_open_opts(&o, &r->f, err, errlen);
	if (ret)
		return ret;
	if (hk_fabric_needs_local_mr(r->f)) {
		ret = hk_fabric_mr_reg(r->f, r->bufs, len, &r->mr, err, errlen);
		if (ret)
			return ret;
		r->have_mr = true;
	}
	return 0;
}

int raw_connect(struct raw_ep *r, const char *node, const char *svc, char *err, size_t errlen)
{
	return hk_fabric_insert_addr(r->f, node, svc, &r->peer, err, errlen);
}

void raw_close(struct raw_ep *r)
{
	if (r->have_mr)
		hk_fabric_mr_close(&r->mr);
	hk_fabric_close(r->f);
	free(r->bufs);
	memset(r, 0, sizeof(*r));
}

/* Next completion, spinning or sleeping in hk_fabric_wait. */
static int next_cqe(struct raw_ep *r, bool block, struct hk_fabric_cqe *c, char *err, size_t errlen)
{
	for (;;) {
		int n = hk_fabric_poll(r->f, c, 1, err, errlen);

		if (n < 0)
			return n;
		if (n) {
			if (c->err)
				snprintf(err, errlen, "raw: completion error %d", c->err);
			return c->err;
		}
		if (block)
			hk_fabric_wait(r->f, -1, 100);
	}
}

#define CTX_RX ((void *)1)
#define CTX_TX ((void *)2)

int raw_ping(struct raw_ep *r, unsigned rounds, bool block, uint64_t *ns, char *err, size_t errlen)
{
	for (unsigned i = 0; i < rounds; i++) {
		uint64_t t0 = hk_now_ns();
		struct hk_fabric_cqe c;
		int ret, left = 2;

		ret = hk_fabric_recv(r->f, 0, ~0ull, buf_at(r, 0), PAGE, mr_of(r), CTX_RX, err,
				     errlen);
		if (!ret)
			ret = hk_fabric_send(r->f, r->peer, i, buf_at(r, 1), PAGE, mr_of(r), CTX_TX,
					     err, errlen);
		while (!ret && left--)
			ret = next_cqe(r, block, &c, err, errlen);
		if (ret)
			return ret;
		ns[i] = hk_now_ns() - t0;
	}
	return 0;
}

/*
 * The receive for the next ping is posted before the echo goes out, as the
 * cluster keeps receives posted: a ping never waits in the provider's
 * unexpected-message queue.  Two buffers alternate.
 */
int raw_echo(struct raw_ep *r, unsigned rounds, bool block, char *err, size_t errlen)
{
	unsigned sends = 0;
	struct hk_fabric_cqe c;
	int ret;

	if (!rounds)
		return 0;
	ret = hk_fabric_recv(r->f, 0, ~0ull, buf_at(r, 0), PAGE, mr_of(r), CTX_RX, err, errlen);
	for (unsigned i = 0; !ret && i < rounds; i++) {
		do {
			ret = next_cqe(r, block, &c, err, errlen);
			if (!ret && c.ctx == CTX_TX)
				sends--;
		} while (!ret && c.ctx != CTX_RX);
		if (!ret && i + 1 < rounds)
			ret = hk_fabric_recv(r->f, 0, ~0ull, buf_at(r, (i + 1) % 2), PAGE, mr_of(r),
					     CTX_RX, err, errlen);
		if (!ret)
			ret = hk_fabric_send(r->f, r->peer, c.tag, buf_at(r, i % 2), c.len,
					     mr_of(r), CTX_TX, err, errlen);
		sends++;
	}
	while (!ret && sends) {
		ret = next_cqe(r, block, &c, err, errlen);
		sends--;
	}
	return ret;
}

int raw_stream_send(struct raw_ep *r, uint64_t msgs, unsigned window, char *err, size_t errlen)
{
	struct hk_fabric_cqe c[HK_FABRIC_CQ_BATCH];
	uint64_t posted = 0, done = 0;

	while (done < msgs) {
		int n;

		while (posted < msgs && posted - done < window) {
			/* One source buffer for every send: its bytes never change. */
			int ret = hk_fabric_send(r->f, r->peer, posted, buf_at(r, 0), PAGE,
						 mr_of(r), CTX_TX, err, errlen);

			if (ret)
				return ret;
			posted++;
		}
		n = hk_fabric_poll(r->f, c, HK_FABRIC_CQ_BATCH, err, errlen);
		if (n < 0)
			return n;
		for (int i = 0; i < n; i++) {
			if (c[i].err) {
				snprintf(err, errlen, "raw: send completion error %d", c[i].err);
				return c[i].err;
			}
			done++;
		}
	}
	return 0;
}

int raw_stream_recv(struct raw_ep *r, uint64_t msgs, unsigned window, void (*ready)(void *),
		    void *ctx, char *err, size_t errlen)
{
	struct hk_fabric_cqe c[HK_FABRIC_CQ_BATCH];
	uint64_t posted = 0, got = 0;

	if (window > RAW_WINDOW_MAX)
		window = RAW_WINDOW_MAX;
	for (unsigned i = 0; i < window && posted < msgs; i++, posted++) {
		int ret = hk_fabric_recv(r->f, 0, ~0ull, buf_at(r, i), PAGE, mr_of(r),
					 (void *)(uintptr_t)(i + 1), err, errlen);

		if (ret)
			return ret;
	}
	ready(ctx);
	while (got < msgs) {
		int n = hk_fabric_poll(r->f, c, HK_FABRIC_CQ_BATCH, err, errlen);

		if (n < 0)
			return n;
		for (int i = 0; i < n; i++) {
			unsigned b = (unsigned)((uintptr_t)c[i].ctx - 1);
			int ret;

			if (c[i].err || c[i].len != PAGE) {
				snprintf(err, errlen, "raw: receive error %d, %zu bytes", c[i].err,
					 c[i].len);
				return c[i].err ? c[i].err : -EIO;
			}
			got++;
			if (posted == msgs)
				continue;
			ret = hk_fabric_recv(r->f, 0, ~0ull, buf_at(r, b), PAGE, mr_of(r), c[i].ctx,
					     err, errlen);
			if (ret)
				return ret;
			posted++;
		}
	}
	return 0;
}
