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
 */
int hk_fabric_recv(struct hk_fabric *f, uint64_t tag, uint64_t ignore, void *buf, size_t len,
		   const struct hk_fabric_mr *mr, void *ctx, char *err, size_t errlen);

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
