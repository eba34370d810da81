/*
 * libfabric RDM endpoint: open by provider name, address exchange, tagged
 * send/receive with batched completion reads, memory registration.
 * See fabric.h for the contract.
 */
#include "fabric.h"

#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <rdma/fi_cm.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_errno.h>
#include <rdma/fi_tagged.h>

#define HK_FABRIC_NAME_MAX 64 /* longest provider string accepted */

struct hk_fabric {
	struct fi_info *info;
	struct fid_fabric *fabric;
	struct fid_domain *domain;
	struct fid_av *av;
	struct fid_cq *cq;
	struct fid_ep *ep;
	int wait_fd;	       /* CQ wait fd (FI_WAIT_FD), or -1: nap instead */
	uint64_t idle_since;   /* ns when the current idle period began, 0 = busy */
	unsigned nap_us;       /* current nap step without a wait fd */
	size_t tx_outstanding; /* sends posted and not completed yet */
	uint64_t next_key;     /* requested MR keys when the provider does not pick them */
	pthread_mutex_t *lock; /* released while hk_fabric_wait sleeps (hk_fabric_set_lock) */
	/* completions read while a post waited on -FI_EAGAIN, returned first by poll */
	size_t backlog_head, backlog_count;
	struct hk_fabric_cqe backlog[HK_FABRIC_BACKLOG];
};

__attribute__((format(printf, 3, 4))) static void seterr(char *err, size_t errlen, const char *fmt,
							 ...)
{
	va_list ap;

	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* "fi_xxx: <fi_strerror> (-N)"; returns ret for tail calls. */
static int fierr(char *err, size_t errlen, const char *call, int ret)
{
	seterr(err, errlen, "%s: %s (%d)", call, fi_strerror(-ret), ret);
	return ret;
}

/* "prov" or "prov;util": lower-case letters, digits, '_' and '-', at most one ';'. */
static int provider_valid(const char *s)
{
	size_t n = strlen(s), part = 0;
	int semis = 0;

	if (n == 0 || n >= HK_FABRIC_NAME_MAX)
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];

		if (c == ';') {
			if (part == 0 || ++semis > 1)
				return 0;
			part = 0;
		} else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
			   c == '-') {
			part++;
		} else {
			return 0;
		}
	}
	return part > 0;
}

/*
 * fi_getinfo for an RDM endpoint of provider with caps, at node:service
 * (flags FI_SOURCE: ours, 0: a peer's), with sends ordered per peer pair
 * (FI_ORDER_SAS: the coherence protocol relies on it); *info on success.
 */
static int getinfo(const char *provider, uint64_t caps, const char *node, const char *service,
		   uint64_t flags, struct fi_info **info)
{
	struct fi_info *hints = fi_allocinfo();
	int ret;

	if (!hints)
		return -FI_ENOMEM;
	hints->caps = caps;
	hints->ep_attr->type = FI_EP_RDM;
	hints->domain_attr->av_type = FI_AV_TABLE;
	hints->domain_attr->threading = FI_THREAD_DOMAIN;
	hints->tx_attr->msg_order = FI_ORDER_SAS;
	hints->rx_attr->msg_order = FI_ORDER_SAS;
	/* What we can honour: local descriptors, virtual addresses, provider keys
	 * (verbs and efa need some of these; tcp and shm ask for none). */
	hints->domain_attr->mr_mode =
	    FI_MR_LOCAL | FI_MR_VIRT_ADDR | FI_MR_ALLOCATED | FI_MR_PROV_KEY;
	hints->fabric_attr->prov_name = strdup(provider);
	if (!hints->fabric_attr->prov_name) {
		fi_freeinfo(hints);
		return -FI_ENOMEM;
	}
	ret = fi_getinfo(FI_VERSION(FI_MAJOR_VERSION, FI_MINOR_VERSION), node, service, flags,
			 hints, info);
	fi_freeinfo(hints); /* frees prov_name too */
	return ret;
}

/* The CQ, with a wait fd when asked and the provider has one. */
static int cq_open(struct hk_fabric *f, bool wait, char *err, size_t errlen)
{
	struct fi_cq_attr cq_attr = {.format = FI_CQ_FORMAT_TAGGED, .wait_obj = FI_WAIT_NONE};
	int ret;

	cq_attr.size = f->info->rx_attr->size + f->info->tx_attr->size;
	if (wait) {
		cq_attr.wait_obj = FI_WAIT_FD;
		ret = fi_cq_open(f->domain, &cq_attr, &f->cq, NULL);
		if (!ret) {
			ret = fi_control(&f->cq->fid, FI_GETWAIT, &f->wait_fd);
			if (!ret)
				return 0;
			fi_close(&f->cq->fid);
			f->cq = NULL;
		}
		f->wait_fd = -1; /* e.g. shm: -FI_ENOSYS; nap instead */
		cq_attr.wait_obj = FI_WAIT_NONE;
	}
	ret = fi_cq_open(f->domain, &cq_attr, &f->cq, NULL);
	return ret ? fierr(err, errlen, "fi_cq_open", ret) : 0;
}

static int cq_read(struct hk_fabric *f, struct hk_fabric_cqe *out, size_t max, char *err,
		   size_t errlen);
static uint64_t now_ms(void);

/*
 * libfabric before 1.19 (Debian 12 has 1.17): shm matches a posted tagged
 * receive against the unexpected messages with the ignore mask stored in
 * the unexpected message's own receive entry, never set on that path: what
 * the pool slot last held, 0 in a slot no posted receive ever used
 * (smr_match_tagged() via smr_get_tag(), prov/shm/src/smr_ep.c; 1.19
 * replaced the code with util_srx).  So a wildcard receive (tag 0, ignore
 * ~0) never matches a message that arrived before it in a fresh slot: the
 * message stays queued for ever, later ones in recycled slots overtake it,
 * and the stream stalls once the sender outruns the posted receives.
 */
static bool shm_needs_prime(const struct hk_fabric *f)
{
	return !strcmp(f->info->fabric_attr->prov_name, "shm") &&
	       FI_VERSION_LT(fi_version(), FI_VERSION(1, 19));
}

static void backlog_push(struct hk_fabric *f, const struct hk_fabric_cqe *c)
{
	if (f->backlog_count == HK_FABRIC_BACKLOG)
		return;
	f->backlog[(f->backlog_head + f->backlog_count) % HK_FABRIC_BACKLOG] = *c;
	f->backlog_count++;
}

/*
 * The workaround: post a wildcard receive into every slot of shm's receive
 * entry pool (rx_attr->size entries), then cancel them all, so every slot
 * carries ignore ~0 and every unexpected message matches a wildcard
 * receive, in arrival order.  It holds while all receives are wildcards,
 * as every user of this file posts them (hk_fabric_recv documents it).
 * No completion of another operation can come out: nothing else is posted
 * yet, and the cancels precede the first CQ read (shm progresses there).
 */
static int shm_prime_rx(struct hk_fabric *f, char *err, size_t errlen)
{
	size_t n = f->info->rx_attr->size, posted = 0, done = 0;
	uint8_t *slots = calloc(n ? n : 1, 1); /* one byte each: buffer and context */
	uint64_t deadline = 0;
	int ret = 0;

	if (!slots) {
		seterr(err, errlen, "fabric: out of memory");
		return -ENOMEM;
	}
	for (; posted < n; posted++) {
		ssize_t r = fi_trecv(f->ep, &slots[posted], 1, NULL, FI_ADDR_UNSPEC, 0, ~0ull,
				     &slots[posted]);

		if (r) /* the pool is smaller than rx_attr->size: primed what exists */
			break;
	}
	for (size_t i = 0; i < posted; i++) {
		ssize_t r = fi_cancel(&f->ep->fid, &slots[i]);

		if (r < 0) {
			ret = fierr(err, errlen, "fi_cancel", (int)r);
			goto out;
		}
	}
	while (done < posted) {
		struct hk_fabric_cqe c[HK_FABRIC_CQ_BATCH];
		int got = cq_read(f, c, HK_FABRIC_CQ_BATCH, err, errlen);

		if (got < 0) {
			ret = got;
			goto out;
		}
		for (int i = 0; i < got; i++) {
			uint8_t *ctx = c[i].ctx;

			if (ctx >= slots && ctx < slots + posted)
				done++;
			else
				backlog_push(f, &c[i]);
		}
		if (!got) {
			if (!deadline)
				deadline = now_ms() + HK_FABRIC_RETRY_MS;
			else if (now_ms() > deadline) {
				seterr(
				    err, errlen,
				    "fabric: shm: %zu of %zu cancelled receives did not complete",
				    posted - done, posted);
				ret = -ETIMEDOUT;
				goto out;
			}
		}
	}
out:
	free(slots);
	return ret;
}

int hk_fabric_open(const char *provider, struct hk_fabric **out, char *err, size_t errlen)
{
	struct hk_fabric_opts o = {.size = sizeof(o), .provider = provider};

	return hk_fabric_open_opts(&o, out, err, errlen);
}

int hk_fabric_open_opts(const struct hk_fabric_opts *o, struct hk_fabric **out, char *err,
			size_t errlen)
{
	struct fi_av_attr av_attr = {.type = FI_AV_TABLE};
	const char *provider = o->provider, *node = o->src_node, *service = o->src_service;
	uint64_t flags = node || service ? FI_SOURCE : 0;
	struct hk_fabric *f;
	int ret;

	*out = NULL;
	if (!provider)
		provider = HK_FABRIC_PROVIDER_DFLT;
	if (!provider_valid(provider)) {
		seterr(err, errlen, "fabric provider '%.*s': want \"prov\" or \"prov;util\"",
		       HK_FABRIC_NAME_MAX, provider);
		return -EINVAL;
	}
	f = calloc(1, sizeof(*f));
	if (!f) {
		seterr(err, errlen, "fabric: out of memory");
		return -ENOMEM;
	}
	f->next_key = 1;
	f->wait_fd = -1;

	ret = getinfo(provider, FI_MSG | FI_TAGGED | FI_RMA, node, service, flags, &f->info);
	if (ret == -FI_ENODATA)
		ret = getinfo(provider, FI_MSG | FI_TAGGED, node, service, flags, &f->info);
	if (ret) {
		seterr(err, errlen,
		       "fi_getinfo: no RDM endpoint from provider '%s'%s%s%s%s with ordered sends: "
		       "%s (%d)",
		       provider, node ? " at " : "", node ? node : "", service ? ":" : "",
		       service ? service : "", fi_strerror(-ret), ret);
		goto fail;
	}
	ret = fi_fabric(f->info->fabric_attr, &f->fabric, NULL);
	if (ret) {
		fierr(err, errlen, "fi_fabric", ret);
		goto fail;
	}
	ret = fi_domain(f->fabric, f->info, &f->domain, NULL);
	if (ret) {
		fierr(err, errlen, "fi_domain", ret);
		goto fail;
	}
	ret = fi_av_open(f->domain, &av_attr, &f->av, NULL);
	if (ret) {
		fierr(err, errlen, "fi_av_open", ret);
		goto fail;
	}
	ret = cq_open(f, o->wait, err, errlen);
	if (ret)
		goto fail;
	ret = fi_endpoint(f->domain, f->info, &f->ep, NULL);
	if (ret) {
		fierr(err, errlen, "fi_endpoint", ret);
		goto fail;
	}
	/* Name-addressed providers (shm) append ":domain:endpoint" indices to
	 * the source name; naming the endpoint exactly lets peers find it
	 * from the configuration alone. */
	if (node && f->info->addr_format == FI_ADDR_STR) {
		ret = fi_setname(&f->ep->fid, (void *)node, strlen(node) + 1);
		if (ret) {
			fierr(err, errlen, "fi_setname", ret);
			goto fail;
		}
	}
	ret = fi_ep_bind(f->ep, &f->av->fid, 0);
	if (ret) {
		fierr(err, errlen, "fi_ep_bind(av)", ret);
		goto fail;
	}
	ret = fi_ep_bind(f->ep, &f->cq->fid, FI_TRANSMIT | FI_RECV);
	if (ret) {
		fierr(err, errlen, "fi_ep_bind(cq)", ret);
		goto fail;
	}
	ret = fi_enable(f->ep);
	if (ret) {
		if (ret == -FI_EBUSY || ret == -FI_EADDRINUSE) {
			seterr(err, errlen,
			       "fi_enable: address %s%s%s of provider %s is in use (another "
			       "endpoint%s)",
			       node ? node : "?", service ? ":" : "", service ? service : "",
			       f->info->fabric_attr->prov_name,
			       f->info->addr_format == FI_ADDR_STR
				   ? ", or a stale /dev/shm file of a killed process"
				   : "");
			ret = -EADDRINUSE;
		} else {
			fierr(err, errlen, "fi_enable", ret);
		}
		goto fail;
	}
	if (shm_needs_prime(f)) {
		ret = shm_prime_rx(f, err, errlen);
		if (ret)
			goto fail;
	}
	*out = f;
	return 0;
fail:
	hk_fabric_close(f);
	return ret;
}

void hk_fabric_close(struct hk_fabric *f)
{
	if (!f)
		return;
	/* children before parents: fi_close of a parent with open children fails */
	if (f->ep)
		fi_close(&f->ep->fid);
	if (f->av)
		fi_close(&f->av->fid);
	if (f->cq)
		fi_close(&f->cq->fid);
	if (f->domain)
		fi_close(&f->domain->fid);
	if (f->fabric)
		fi_close(&f->fabric->fid);
	if (f->info)
		fi_freeinfo(f->info);
	free(f);
}

const char *hk_fabric_provider(const struct hk_fabric *f)
{
	return f->info->fabric_attr->prov_name;
}

int hk_fabric_has_rma(const struct hk_fabric *f)
{
	return (f->info->caps & FI_RMA) != 0;
}

int hk_fabric_needs_local_mr(const struct hk_fabric *f)
{
	return (f->info->domain_attr->mr_mode & FI_MR_LOCAL) != 0;
}

int hk_fabric_getname(struct hk_fabric *f, void *addr, size_t *len, char *err, size_t errlen)
{
	int ret = fi_getname(&f->ep->fid, addr, len);

	return ret ? fierr(err, errlen, "fi_getname", ret) : 0;
}

int hk_fabric_insert(struct hk_fabric *f, const void *addr, size_t len, fi_addr_t *peer, char *err,
		     size_t errlen)
{
	int ret;

	if (len == 0 || len > HK_FABRIC_ADDR_MAX) {
		seterr(err, errlen, "fabric peer address: %zu bytes, want 1..%d", len,
		       HK_FABRIC_ADDR_MAX);
		return -EINVAL;
	}
	ret = fi_av_insert(f->av, addr, 1, peer, 0, NULL);
	if (ret < 0)
		return fierr(err, errlen, "fi_av_insert", ret);
	if (ret != 1) {
		seterr(err, errlen, "fi_av_insert: address not accepted");
		return -EINVAL;
	}
	return 0;
}

int hk_fabric_insert_addr(struct hk_fabric *f, const char *node, const char *service,
			  fi_addr_t *peer, char *err, size_t errlen)
{
	struct fi_info *hints = fi_allocinfo(), *info = NULL;
	int ret;

	if (!hints) {
		seterr(err, errlen, "fabric: out of memory");
		return -ENOMEM;
	}
	hints->ep_attr->type = FI_EP_RDM;
	hints->caps = FI_MSG | FI_TAGGED;
	hints->addr_format = f->info->addr_format;
	hints->fabric_attr->prov_name = strdup(f->info->fabric_attr->prov_name);
	ret = hints->fabric_attr->prov_name
		  ? fi_getinfo(FI_VERSION(FI_MAJOR_VERSION, FI_MINOR_VERSION), node, service, 0,
			       hints, &info)
		  : -FI_ENOMEM;
	fi_freeinfo(hints);
	if (ret) {
		seterr(err, errlen, "fi_getinfo: peer address %s%s%s: %s (%d)", node,
		       service ? ":" : "", service ? service : "", fi_strerror(-ret), ret);
		return ret;
	}
	if (!info->dest_addr)
		seterr(err, errlen, "fi_getinfo: peer address %s%s%s: no destination", node,
		       service ? ":" : "", service ? service : "");
	ret = info->dest_addr
		  ? hk_fabric_insert(f, info->dest_addr, info->dest_addrlen, peer, err, errlen)
		  : -EINVAL;
	fi_freeinfo(info);
	return ret;
}

/* Turn the pending error entry into a cqe (fi_cq_read said -FI_EAVAIL). */
static int read_error(struct hk_fabric *f, struct hk_fabric_cqe *c, char *err, size_t errlen)
{
	struct fi_cq_err_entry e = {0};
	ssize_t ret = fi_cq_readerr(f->cq, &e, 0);

	if (ret < 0)
		return fierr(err, errlen, "fi_cq_readerr", (int)ret);
	if ((e.flags & FI_SEND) && f->tx_outstanding)
		f->tx_outstanding--;
	*c = (struct hk_fabric_cqe){
	    .ctx = e.op_context,
	    .flags = e.flags,
	    .tag = e.tag,
	    .len = e.len,
	    .err = e.err ? -e.err : -FI_EOTHER,
	};
	return 1;
}

/*
 * One fi_cq_read of up to max (<= HK_FABRIC_CQ_BATCH) entries into out.
 * Returns the count, 0 when none, or a negative code.
 */
static int cq_read(struct hk_fabric *f, struct hk_fabric_cqe *out, size_t max, char *err,
		   size_t errlen)
{
	struct fi_cq_tagged_entry ent[HK_FABRIC_CQ_BATCH];
	ssize_t n;

	if (max > HK_FABRIC_CQ_BATCH)
		max = HK_FABRIC_CQ_BATCH;
	n = fi_cq_read(f->cq, ent, max);
	if (n == -FI_EAGAIN)
		return 0;
	f->idle_since = 0; /* activity: hk_fabric_wait spins again before napping */
	if (n == -FI_EAVAIL)
		return read_error(f, out, err, errlen);
	if (n < 0)
		return fierr(err, errlen, "fi_cq_read", (int)n);
	for (ssize_t i = 0; i < n; i++) {
		if ((ent[i].flags & FI_SEND) && f->tx_outstanding)
			f->tx_outstanding--;
		out[i] = (struct hk_fabric_cqe){
		    .ctx = ent[i].op_context,
		    .flags = ent[i].flags,
		    .tag = ent[i].tag,
		    .len = ent[i].len,
		};
	}
	return (int)n;
}

/* Progress while a post waits: read the CQ into the free part of the ring. */
static int progress_backlog(struct hk_fabric *f, char *err, size_t errlen)
{
	struct hk_fabric_cqe tmp[HK_FABRIC_CQ_BATCH];
	size_t room = HK_FABRIC_BACKLOG - f->backlog_count;
	int n;

	if (room == 0) {
		seterr(err, errlen,
		       "fabric: %d completions unread while retrying a post; poll first",
		       HK_FABRIC_BACKLOG);
		return -EAGAIN;
	}
	n = cq_read(f, tmp, room < HK_FABRIC_CQ_BATCH ? room : HK_FABRIC_CQ_BATCH, err, errlen);
	for (int i = 0; i < n; i++) {
		size_t tail = (f->backlog_head + f->backlog_count) % HK_FABRIC_BACKLOG;

		f->backlog[tail] = tmp[i];
		f->backlog_count++;
	}
	return n < 0 ? n : 0;
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

enum post_kind { POST_SEND, POST_RECV };

/* fi_tsend / fi_trecv, retrying -FI_EAGAIN while progressing the CQ. */
static int post(struct hk_fabric *f, enum post_kind kind, fi_addr_t peer, uint64_t tag,
		uint64_t ignore, void *buf, size_t len, const struct hk_fabric_mr *mr, void *ctx,
		char *err, size_t errlen)
{
	const char *call = kind == POST_SEND ? "fi_tsend" : "fi_trecv";
	void *desc = mr ? mr->desc : NULL;
	uint64_t deadline = 0;

	for (;;) {
		ssize_t ret = kind == POST_SEND ? fi_tsend(f->ep, buf, len, desc, peer, tag, ctx)
						: fi_trecv(f->ep, buf, len, desc, FI_ADDR_UNSPEC,
							   tag, ignore, ctx);
		int pret;

		if (ret == 0) {
			if (kind == POST_SEND)
				f->tx_outstanding++;
			return 0;
		}
		if (ret != -FI_EAGAIN)
			return fierr(err, errlen, call, (int)ret);
		if (!deadline)
			deadline = now_ms() + HK_FABRIC_RETRY_MS;
		else if (now_ms() > deadline) {
			seterr(err, errlen, "%s: still -FI_EAGAIN after %d ms", call,
			       HK_FABRIC_RETRY_MS);
			return -ETIMEDOUT;
		}
		pret = progress_backlog(f, err, errlen);
		if (pret)
			return pret;
	}
}

int hk_fabric_send(struct hk_fabric *f, fi_addr_t peer, uint64_t tag, const void *buf, size_t len,
		   const struct hk_fabric_mr *mr, void *ctx, char *err, size_t errlen)
{
	return post(f, POST_SEND, peer, tag, 0, (void *)buf, len, mr, ctx, err, errlen);
}

int hk_fabric_try_send(struct hk_fabric *f, fi_addr_t peer, uint64_t tag, const void *buf,
		       size_t len, const struct hk_fabric_mr *mr, void *ctx, char *err,
		       size_t errlen)
{
	ssize_t ret = fi_tsend(f->ep, buf, len, mr ? mr->desc : NULL, peer, tag, ctx);

	if (ret == 0)
		f->tx_outstanding++;
	if (ret == 0 || ret == -FI_EAGAIN)
		return (int)ret;
	return fierr(err, errlen, "fi_tsend", (int)ret);
}

int hk_fabric_recv(struct hk_fabric *f, uint64_t tag, uint64_t ignore, void *buf, size_t len,
		   const struct hk_fabric_mr *mr, void *ctx, char *err, size_t errlen)
{
	return post(f, POST_RECV, FI_ADDR_UNSPEC, tag, ignore, buf, len, mr, ctx, err, errlen);
}

int hk_fabric_poll(struct hk_fabric *f, struct hk_fabric_cqe *out, size_t max, char *err,
		   size_t errlen)
{
	size_t got = 0;
	int n;

	while (got < max && f->backlog_count) {
		out[got++] = f->backlog[f->backlog_head];
		f->backlog_head = (f->backlog_head + 1) % HK_FABRIC_BACKLOG;
		f->backlog_count--;
	}
	if (got == max)
		return (int)got;
	n = cq_read(f, out + got, max - got, err, errlen);
	if (n < 0)
		return got ? (int)got : n; /* report the error on the next call */
	return (int)(got + (size_t)n);
}

void hk_fabric_set_lock(struct hk_fabric *f, pthread_mutex_t *lock)
{
	f->lock = lock;
}

int hk_fabric_can_block(const struct hk_fabric *f)
{
	return f->wait_fd >= 0;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/*
 * poll() on up to two fds for at most timeout, without f->lock; 1 when
 * extra_fd is readable.  yield: sched_yield first (the spinning phase).
 */
static int poll2(struct hk_fabric *f, int cq_fd, int extra_fd, const struct timespec *timeout,
		 bool yield)
{
	struct pollfd p[2];
	nfds_t n = 0;
	int extra = -1, ret;

	if (cq_fd >= 0)
		p[n++] = (struct pollfd){.fd = cq_fd, .events = POLLIN};
	if (extra_fd >= 0) {
		extra = (int)n;
		p[n++] = (struct pollfd){.fd = extra_fd, .events = POLLIN};
	}
	if (f->lock)
		pthread_mutex_unlock(f->lock);
	if (yield)
		sched_yield();
	ret = ppoll(p, n, timeout, NULL);
	if (f->lock)
		pthread_mutex_lock(f->lock);
	if (ret <= 0)
		return 0;
	return extra >= 0 && (p[extra].revents & POLLIN);
}

int hk_fabric_trywait(struct hk_fabric *f)
{
	struct fid *fids[1] = {&f->cq->fid};

	if (f->wait_fd < 0)
		return 0; /* nobody blocks on it: a waiter naps and polls */
	return fi_trywait(f->fabric, fids, 1) != 0;
}

int hk_fabric_wait(struct hk_fabric *f, int extra_fd, int timeout_ms)
{
	struct timespec ts = {.tv_sec = timeout_ms / 1000,
			      .tv_nsec = (long)(timeout_ms % 1000) * 1000000};
	uint64_t now, nap;

	if (timeout_ms < 0)
		ts = (struct timespec){.tv_sec = 3600};
	/* ofi_rxm pushes queued transmits (segments, a full socket, connection
	 * set-up) only inside fi_cq_read and signals no fd when it could go on:
	 * blocking with sends outstanding stalled every node under load.  So
	 * block only when nothing is on its way out; nap otherwise. */
	if (f->wait_fd >= 0 && !f->tx_outstanding) {
		struct fid *fids[1] = {&f->cq->fid};

		/* -FI_EAGAIN: completions are (or may be) there already; the
		 * caller polls again instead of sleeping past them. */
		if (fi_trywait(f->fabric, fids, 1) != 0)
			return 0;
		return poll2(f, f->wait_fd, extra_fd, &ts, false);
	}
	/* No wait object: spin while the idle period is short (a reply is
	 * likely on its way), then nap in steps that grow to a cap, so an idle
	 * thread wakes HK_FABRIC_NAP_MAX_US apart at most, not every cycle. */
	now = now_ns();
	if (!f->idle_since) {
		f->idle_since = now;
		f->nap_us = 0;
	}
	if (now - f->idle_since < HK_FABRIC_SPIN_US * 1000ull) {
		return poll2(f, -1, extra_fd, &(struct timespec){0}, true);
	}
	f->nap_us = f->nap_us ? f->nap_us * 2 : HK_FABRIC_SPIN_US;
	if (f->nap_us > HK_FABRIC_NAP_MAX_US)
		f->nap_us = HK_FABRIC_NAP_MAX_US;
	nap = (uint64_t)f->nap_us * 1000;
	if (timeout_ms >= 0 && nap > (uint64_t)timeout_ms * 1000000)
		nap = (uint64_t)timeout_ms * 1000000;
	ts = (struct timespec){.tv_sec = (time_t)(nap / 1000000000),
			       .tv_nsec = (long)(nap % 1000000000)};
	return poll2(f, -1, extra_fd, &ts, false);
}

int hk_fabric_mr_reg(struct hk_fabric *f, void *buf, size_t len, struct hk_fabric_mr *mr, char *err,
		     size_t errlen)
{
	uint64_t access = FI_SEND | FI_RECV;
	int ret;

	*mr = (struct hk_fabric_mr){0};
	if (hk_fabric_has_rma(f))
		access |= FI_READ | FI_WRITE | FI_REMOTE_READ | FI_REMOTE_WRITE;
	ret = fi_mr_reg(f->domain, buf, len, access, 0, f->next_key, 0, &mr->mr, NULL);
	if (ret)
		return fierr(err, errlen, "fi_mr_reg", ret);
	f->next_key++;
	mr->desc = fi_mr_desc(mr->mr);
	mr->key = fi_mr_key(mr->mr);
	mr->addr = buf;
	mr->len = len;
	return 0;
}

void hk_fabric_mr_close(struct hk_fabric_mr *mr)
{
	if (mr->mr)
		fi_close(&mr->mr->fid);
	*mr = (struct hk_fabric_mr){0};
}
