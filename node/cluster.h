/*
 * node/ internal: this node's membership in the cluster its hk.conf names,
 * and an ordered message service between nodes for the rest of hkd (page
 * coherence, vCPU migration, devices, guest control) over node/fabric.c.
 *
 * Delivery contract:
 *  - reliable and FIFO per ordered pair of nodes: messages from node A to
 *    node B are delivered to B's callback exactly in the order A's threads
 *    called hk_cluster_send (calls racing on several threads of A are
 *    ordered by the internal queue lock).  Each message carries a per-pair
 *    sequence number; the receiver re-orders if the provider ever completes
 *    out of order, and never skips one.
 *  - receive callbacks run on the progress thread, one at a time, must not
 *    block, and may call hk_cluster_send.
 *  - a peer that stays silent for HK_CLUSTER_DOWN_MS, whose sends fail, or
 *    that leaves (hk_cluster_destroy) is declared down once: peer callback
 *    with a reason, its queued messages are dropped, and later sends to it
 *    return -ENOTCONN.  A down peer does not come back in this process.
 *
 * Addresses per provider (the [node] address of hk.conf is host:port):
 *  - tcp;ofi_rxm (default), tcp, verbs;ofi_rxm, efa, other IP-addressed
 *    providers: the endpoint listens on host:port; peers are reached there.
 *  - shm: host:port is not used; each endpoint is named
 *    "hk-<cluster>-<node>" (a file in /dev/shm while it is open), so only
 *    nodes on one host can form a cluster.  A node killed with SIGKILL
 *    leaves that file behind; remove it before restarting the node.
 */
#ifndef HK_CLUSTER_H
#define HK_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "node.h"

#define HK_CLUSTER_PROTO_VERSION 1
/* Largest payload of one message: a 64 KiB run of pages plus a header. */
#define HK_CLUSTER_MSG_MAX (64u * 1024 + 4096)
/* Bytes queued to one peer before hk_cluster_send says -ENOBUFS. */
#define HK_CLUSTER_QUEUE_MAX	(64u << 20)
#define HK_CLUSTER_HEARTBEAT_MS 250
/* Silence that makes a peer down: generous, since a loaded 2-core host (three
 * daemons, vCPU threads, a test suite) can stall a progress thread for
 * seconds, and a false "down" ends the guest. */
#define HK_CLUSTER_DOWN_MS	5000

/* Message classes: one receive callback each.  HK_MSG_CLUSTER is the
 * membership protocol itself and is not available to callers. */
enum hk_msg_class {
	HK_MSG_CLUSTER = 0,
	HK_MSG_COH,   /* page coherence */
	HK_MSG_VCPU,  /* vCPU migration */
	HK_MSG_DEV,   /* devices, disks */
	HK_MSG_GUEST, /* guest start/stop, layout */
	HK_MSG_CLASSES = 8
};

struct hk_cluster;

/* buf is valid only during the call (copy what you keep). */
typedef void (*hk_cluster_recv_fn)(void *ctx, unsigned from_node, const void *buf, size_t len);
/* up: joined (why "joined"); down: why is one line ("no heartbeat for 2.0 s"). */
typedef void (*hk_cluster_peer_fn)(void *ctx, unsigned node, bool up, const char *why);

/*
 * Open the fabric on the address of node self (index into cfg->nodes),
 * insert every peer by its configured address, post receive buffers and
 * start the progress thread.  Nothing is sent before hk_cluster_join.
 * Returns 0 or a negative errno with one line in err, e.g. "cluster: node
 * n1: fi_enable: address 127.0.0.1:7301 of provider tcp;ofi_rxm is in use
 * (another endpoint)".
 */
int hk_cluster_create(const struct hk_config *cfg, unsigned self, struct hk_cluster **out,
		      char *err, size_t errlen);

/* Set the receive callback of a class (1..HK_MSG_CLASSES-1); call before
 * hk_cluster_join.  Messages of a class without a callback are counted and
 * dropped with a log line. */
void hk_cluster_on(struct hk_cluster *c, unsigned cls, hk_cluster_recv_fn fn, void *ctx);
/* Peer up/down notifications, on the progress thread; before join. */
void hk_cluster_on_peer(struct hk_cluster *c, hk_cluster_peer_fn fn, void *ctx);

/*
 * Say HELLO to every node of the config (retried every heartbeat while a
 * node is not up yet) and wait until each has answered with the same
 * config digest.  Logs "cluster: waiting for n2, n3 (4 s)" to stderr once a
 * second while waiting.  Returns 0; -ETIMEDOUT with "cluster: join timed
 * out after 5 s: no answer from n3"; -EPROTO at once when a node disagrees:
 * "cluster: node n2 has a different cluster config (digest ..., ours ...);
 * start all nodes from the same hk.conf".  Call once.
 */
int hk_cluster_join(struct hk_cluster *c, int timeout_ms, char *err, size_t errlen);

/*
 * Send a copy of buf[0..len) to node (self too: delivered locally, in
 * order); never waits for the network.  Any thread, including receive and
 * peer callbacks.  From a thread other than the progress thread it posts
 * the message itself when the endpoint is free and nothing is queued to
 * node; otherwise (and from callbacks) it queues it for the progress
 * thread.  Receive callbacks run with the endpoint's lock held: a send from
 * one only queues, and a callback must not wait for another thread's send.  Returns 0, -EINVAL (bad
 * node or class, or HK_MSG_CLUSTER), -EMSGSIZE (len > HK_CLUSTER_MSG_MAX),
 * -ENOTCONN (peer not up: before it joined, or down), -ENOBUFS (more than
 * HK_CLUSTER_QUEUE_MAX bytes queued to it), -ENOMEM.
 */
int hk_cluster_send(struct hk_cluster *c, unsigned node, unsigned cls, const void *buf, size_t len);

unsigned hk_cluster_self(const struct hk_cluster *c);
unsigned hk_cluster_size(const struct hk_cluster *c);
/* The provider in use, e.g. "tcp;ofi_rxm". */
const char *hk_cluster_provider(const struct hk_cluster *c);

struct hk_cluster_peer {
	char name[64];
	char address[128]; /* as in hk.conf */
	bool self, up;
	uint64_t last_heard_ns; /* CLOCK_MONOTONIC of the last message from it */
	uint64_t rtt_ns;	/* last heartbeat round trip */
	uint64_t msgs_sent, msgs_recv, bytes_sent, bytes_recv;
	uint64_t dropped; /* invalid or unhandled messages from it */
};

/* Snapshot of up to max nodes in config order (self included); returns
 * the count written. */
unsigned hk_cluster_peers(struct hk_cluster *c, struct hk_cluster_peer *out, unsigned max);

/*
 * Tell up peers we leave (Bye, flushed for at most 200 ms), stop the
 * progress thread, close the fabric, free.  No callback runs after it
 * returns.  Not from a callback.  NULL is fine.
 */
void hk_cluster_destroy(struct hk_cluster *c);

#endif
