/*
 * node/ internal: one libfabric RDM endpoint with its address vector and
 * completion queue, for hkd's fabric progress thread (P3).
 *
 * The provider is a string from hk.conf ("tcp;ofi_rxm", "shm",
 * "verbs;ofi_rxm", "efa"), so changing transport needs no code change.
 * Threading: one struct hk_fabric belongs to one thread at a time
 * (FI_THREAD_DOMAIN); progress is manual, so that thread must keep calling
 * hk_fabric_poll() for sends and receives to complete.
 *
 * Errors: negative errno-style values (libfabric's FI_E* codes, which equal
 * errno for the common ones), and one line in err naming the fi_* call and
 * fi_strerror(), e.g. "fi_tsend: Connection refused (-111)".
 */
#ifndef HK_FABRIC_H
#define HK_FABRIC_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <rdma/fabric.h>

#define HK_FABRIC_PROVIDER_DFLT "tcp;ofi_rxm"
#define HK_FABRIC_ADDR_MAX	256  /* bytes of an fi_getname() address we accept */
#define HK_FABRIC_CQ_BATCH	32   /* entries per fi_cq_read() */
#define HK_FABRIC_BACKLOG	1024 /* completions kept while a send waits */
#define HK_FABRIC_RETRY_MS	5000 /* how long a post retries -FI_EAGAIN */

struct hk_fabric;

/* A finished send or receive (one fi_cq_tagged_entry, or its error entry). */
struct hk_fabric_cqe {
	void *ctx;	/* the ctx given to hk_fabric_send / hk_fabric_recv */
	uint64_t flags; /* FI_SEND or FI_RECV, with FI_TAGGED */
	uint64_t tag;	/* receives: the tag that was sent */
	size_t len;	/* receives: bytes received */
	int err;	/* 0, or a negative FI_E* code (e.g. -FI_ETRUNC) */
};

/* A registered buffer; desc goes to send/recv, key and addr to peers (RMA). */
struct hk_fabric_mr {
	struct fid_mr *mr;
	void *desc;
	uint64_t key;
	void *addr;
	size_t len;
};

/*
 * Open fabric, domain, RDM endpoint, an FI_AV_TABLE address vector and one
 * FI_CQ_FORMAT_TAGGED completion queue for provider ("prov" or "prov;util",
 * NULL = HK_FABRIC_PROVIDER_DFLT).  Caps FI_MSG | FI_TAGGED, plus FI_RMA when
 * the provider has it.  Returns 0, -EINVAL for a malformed name, -FI_ENODATA
 * when no such provider offers RDM endpoints here, or the failing call's
 * code.
 */
int hk_fabric_open(const char *provider, struct hk_fabric **out, char *err, size_t errlen);

/*
 * How hk_fabric_open_opts opens an endpoint.  Addresses are in the
 * provider's own terms (see docs of node/cluster.c for what hk.conf maps to):
 *   tcp;ofi_rxm, verbs;ofi_rxm, efa: node = host name or IP, service = port;
 *       the endpoint listens there (fi_getinfo(node, service, FI_SOURCE)).
 *   shm: node = a name (FI_ADDR_STR); the endpoint is named exactly that
 *       (fi_setname), service NULL.  The name is a /dev/shm file while open.
 */
struct hk_fabric_opts {
	size_t size;	      /* sizeof(struct hk_fabric_opts), so it can grow */
	const char *provider; /* NULL = HK_FABRIC_PROVIDER_DFLT */
	const char *src_node; /* NULL: the provider picks an address */
	const char *src_service;
	bool wait; /* want a CQ wait object for hk_fabric_wait() */
};

/*
 * hk_fabric_open with a source address and, when wait is set and the
 * provider can, a CQ with FI_WAIT_FD (hk_fabric_wait then sleeps in poll()).
 * Providers without a wait fd (shm in 1.17) fall back to FI_WAIT_NONE and
 * hk_fabric_wait spins briefly, then sleeps in short growing steps.
 * -EADDRINUSE when the address is taken (another endpoint, or for shm a
 * stale /dev/shm file left by a killed process).  shm before libfabric 1.19:
 * also posts and cancels rx_attr->size wildcard receives (a provider bug's
 * workaround, see hk_fabric_recv); nothing of it reaches hk_fabric_poll.
 */
int hk_fabric_open_opts(const struct hk_fabric_opts *o, struct hk_fabric **out, char *err,
			size_t errlen);
/* Close everything; MRs must be closed first.  NULL is fine. */
void hk_fabric_close(struct hk_fabric *f);

/* The provider fi_getinfo chose, e.g. "tcp;ofi_rxm". */
const char *hk_fabric_provider(const struct hk_fabric *f);
/* Nonzero when the endpoint has FI_RMA (see hk_fabric_open). */
int hk_fabric_has_rma(const struct hk_fabric *f);
/* Nonzero when local buffers must be registered (FI_MR_LOCAL): pass an mr. */
int hk_fabric_needs_local_mr(const struct hk_fabric *f);

/*
 * Copy the endpoint's address (fi_getname) into addr; *len is its size in,
 * the address length out.  Opaque bytes for the peer's hk_fabric_insert.
 */
int hk_fabric_getname(struct hk_fabric *f, void *addr, size_t *len, char *err, size_t errlen);
/* Insert a peer's address into the AV; *peer is what send/recv take. */
int hk_fabric_insert(struct hk_fabric *f, const void *addr, size_t len, fi_addr_t *peer, char *err,
		     size_t errlen);

/*
 * Insert a peer by its address in the provider's terms (as src_node /
 * src_service of hk_fabric_open_opts), resolved with fi_getinfo: no
 * out-of-band exchange of fi_getname() bytes is needed.
 */
int hk_fabric_insert_addr(struct hk_fabric *f, const char *node, const char *service,
			  fi_addr_t *peer, char *err, size_t errlen);

/*
 * Post a tagged send of buf[0..len) to peer.  buf must stay valid until the
 * completion for ctx comes out of hk_fabric_poll.  -FI_EAGAIN (connection
 * still coming up, queue full) is retried while the CQ is read into a
 * backlog that hk_fabric_poll returns first; gives up with -ETIMEDOUT after
 * HK_FABRIC_RETRY_MS, or -EAGAIN when the backlog is full.  mr may be NULL
 * unless hk_fabric_needs_local_mr().
 */
int hk_fabric_send(struct hk_fabric *f, fi_addr_t peer, uint64_t tag, const void *buf, size_t len,
		   const struct hk_fabric_mr *mr, void *ctx, char *err, size_t errlen);
/*
 * Post a tagged receive into buf[0..len) for a message whose tag matches tag
 * outside the bits set in ignore, from any peer.  Retries like a send.
 * shm before libfabric 1.19 matches messages that arrived before their
 * receive with the mask of an earlier receive: hk_fabric_open primes it so
 * wildcards (tag 0, ignore ~0) work; mixing in narrower masks on such an
 * endpoint can lose or misdeliver early messages (see shm_prime_rx).
 */
int hk_fabric_recv(struct hk_fabric *f, uint64_t tag, uint64_t ignore, void *buf, size_t len,
		   const struct hk_fabric_mr *mr, void *ctx, char *err, size_t errlen);

/*
 * One fi_tsend without retry: 0, -FI_EAGAIN (queue full or connection
 * coming up: poll, then post again) or another failure.  For a progress
 * thread that must not stall every peer behind one slow peer.
 */
int hk_fabric_try_send(struct hk_fabric *f, fi_addr_t peer, uint64_t tag, const void *buf,
		       size_t len, const struct hk_fabric_mr *mr, void *ctx, char *err,
		       size_t errlen);

/*
 * Sleep until the CQ may have completions, extra_fd (e.g. an eventfd; -1
 * for none) is readable, or timeout_ms passes.  Call it only after
 * hk_fabric_poll returned 0.  With a CQ wait fd and no send outstanding:
 * fi_trywait, then poll() on both fds, so an idle thread costs no CPU (rxm
 * moves queued transmits only inside fi_cq_read and signals no fd for
 * them, so with sends outstanding it naps as below).  Otherwise the calls
 * of an idle period only yield (HK_FABRIC_SPIN_US of spinning keeps a busy
 * exchange fast), then sleep in steps growing to HK_FABRIC_NAP_MAX_US,
 * still waking at once for extra_fd.  Returns 1 when extra_fd is readable
 * (not drained), else 0.
 */
#define HK_FABRIC_SPIN_US    50
#define HK_FABRIC_NAP_MAX_US 1000
int hk_fabric_wait(struct hk_fabric *f, int extra_fd, int timeout_ms);
/*
 * Share the endpoint between threads: the caller serializes every hk_fabric
 * call with lock (FI_THREAD_DOMAIN) and holds it around hk_fabric_wait too;
 * hk_fabric_wait releases it while it sleeps or yields, so another thread
 * can post in the meantime.  NULL (the default): no lock.
 */
void hk_fabric_set_lock(struct hk_fabric *f, pthread_mutex_t *lock);
/*
 * After another thread read the CQ (under the shared lock) while the waiter
 * may be asleep on the CQ fd: nonzero when completions or provider work may
 * be pending that the fd will not announce (fi_trywait failed), so the
 * waiter must be woken; 0 when it may sleep on.
 */
int hk_fabric_trywait(struct hk_fabric *f);
/* Nonzero when the CQ has a wait fd (blocking wait), 0 for the nap fallback. */
int hk_fabric_can_block(const struct hk_fabric *f);

/*
 * Drive progress and return up to max finished operations in out: first any
 * backlog, then one fi_cq_read of up to HK_FABRIC_CQ_BATCH entries.  Returns
 * the count (0 when nothing finished) or a negative code for a CQ failure.
 * A failed operation is an entry with err set, not a failed poll.
 */
int hk_fabric_poll(struct hk_fabric *f, struct hk_fabric_cqe *out, size_t max, char *err,
		   size_t errlen);

/*
 * Register buf[0..len) for local use and remote read/write (fi_mr_reg), once:
 * registration pins memory and costs far more than a transfer.
 */
int hk_fabric_mr_reg(struct hk_fabric *f, void *buf, size_t len, struct hk_fabric_mr *mr, char *err,
		     size_t errlen);
void hk_fabric_mr_close(struct hk_fabric_mr *mr);

#endif
