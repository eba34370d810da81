/*
 * bench-pool internals: the floor measurements (bench_pool_floor.c: a
 * local userfaultfd fault resolved from memory; bench_pool_raw.c: raw
 * hk_fabric round trips and streaming) that bench_pool.c sets the remote
 * page-fault figures against.
 */
#ifndef HK_BENCH_POOL_H
#define HK_BENCH_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fabric.h"

/* Median and 99th percentile of n samples in ns (sorts them). */
struct lat {
	double med_us, p99_us, mean_us;
	uint64_t n;
};
void lat_summarize(uint64_t *ns, size_t n, struct lat *out);

/* ---- floor (a): local userfaultfd faults -------------------------------- */

/*
 * A minimal handler: one thread sleeps in poll() on the uffd (as hk's fault
 * thread does), reads the event and places a prepared 4 KiB page with
 * UFFDIO_COPY (write-protected, as pooled memory places a shared copy).
 * The caller's thread reads one byte of each of `pages` fresh pages; ns[i]
 * is the time of read i.  Returns 0 or -errno with a line in err.
 */
int floor_uffd_minimal(unsigned pages, uint64_t *ns, char *err, size_t errlen);
/* The same reads against hk_mem with a 4 KiB fault window (hk's own fault
 * thread, zero-filled pages): a cross-check of the minimal handler. */
int floor_uffd_hk_mem(unsigned pages, uint64_t *ns, char *err, size_t errlen);

/* ---- floor (b): raw hk_fabric between the two processes ----------------- */

#define RAW_WINDOW_MAX 256

struct raw_ep {
	struct hk_fabric *f;
	fi_addr_t peer;
	struct hk_fabric_mr mr; /* over bufs when the provider needs local MRs */
	bool have_mr;
	uint8_t *bufs; /* RAW_WINDOW_MAX + 2 pages */
};

/* Open an endpoint at node:svc (shm: node is a name, svc NULL). */
int raw_open(struct raw_ep *r, const char *provider, const char *node, const char *svc, char *err,
	     size_t errlen);
int raw_connect(struct raw_ep *r, const char *node, const char *svc, char *err, size_t errlen);
void raw_close(struct raw_ep *r);

/*
 * 4 KiB ping-pong: the pinger times rounds round trips (ns[i]); the echoer
 * answers rounds pings.  block: sleep in hk_fabric_wait between
 * completions (as the cluster's progress thread does) instead of spinning.
 */
int raw_ping(struct raw_ep *r, unsigned rounds, bool block, uint64_t *ns, char *err, size_t errlen);
int raw_echo(struct raw_ep *r, unsigned rounds, bool block, char *err, size_t errlen);
/* msgs 4 KiB messages, at most window in flight (busy polling). */
int raw_stream_send(struct raw_ep *r, uint64_t msgs, unsigned window, char *err, size_t errlen);
/* Post window receives first; *ready() is called once they are posted
 * (the caller tells the sender to start there). */
int raw_stream_recv(struct raw_ep *r, uint64_t msgs, unsigned window, void (*ready)(void *),
		    void *ctx, char *err, size_t errlen);

#endif
