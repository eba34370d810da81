/*
 * node/ public contract: configuration, the hkd control protocol (framing
 * and server), and the helpers hkd and hkctl share.  Nothing outside node/
 * needs another header from this folder.
 */
#ifndef HK_NODE_H
#define HK_NODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ctl.pb-c.h"

/* ---- sizes ---------------------------------------------------------- */

/*
 * Parse "512", "64K", "256M", "1G", "4T" (binary multiples, optional "iB"/"B"
 * suffix, case-insensitive) into bytes.  Returns 0 or -EINVAL / -ERANGE.
 * K M G T P E are all 1024-based, also when spelt "KB".  A decimal fraction
 * is exact or refused: "1.5G" is 1610612736, "0.1K" (102.4 bytes) is
 * -EINVAL.  Blanks may separate number and unit ("1.5 GiB"); no sign, no
 * leading or trailing blanks.  Overflow of 64 bits is -ERANGE.
 */
int hk_parse_size(const char *s, uint64_t *out);

/* How guest writes to replica pages are noticed; the numbers are
 * hyperkernel's enum hk_write_tracking (daemon.c checks). */
enum hk_wt_conf {
	HK_WT_CONF_AUTO = 0,
	HK_WT_CONF_UFFD = 1,
	HK_WT_CONF_KVM = 2,
};
/* "auto", "uffd" or "kvm": 0, or -EINVAL. */
int hk_parse_write_tracking(const char *s, enum hk_wt_conf *out);
/* "1.5 GiB" style, for humans; returns buf. */
const char *hk_format_size(uint64_t bytes, char *buf, size_t len);

/* ---- configuration (INI, libinih) ----------------------------------- */

#define HK_NAME_MAX	    64
#define HK_MAX_NODES	    64
#define HK_MAX_VCPUS	    64
#define HK_GUEST_MEMORY_MIN (64ull << 20) /* smallest guest hk.conf accepts */

struct hk_node_conf {
	char name[HK_NAME_MAX];
	char address[128]; /* host:port for the fabric (P3) */
	uint64_t memory;   /* bytes of guest memory this node contributes */
	char control[108]; /* Unix socket path (sun_path limit) */
};

#define HK_MAX_DISKS		 8
#define HK_DISK_SIZE_MAX	 (1ull << 50) /* 1 PiB */
#define HK_DISK_QUEUE_DEPTH_MAX	 4096
#define HK_DISK_QUEUE_DEPTH_DFLT 64

enum hk_disk_direct_conf { HK_DIRECT_AUTO = 0, HK_DIRECT_ON, HK_DIRECT_OFF };

struct hk_disk_conf {
	char name[HK_NAME_MAX];
	char path[4096];	/* absolute, relative ones resolved against the config's folder */
	uint64_t size;		/* bytes, multiple of 4096, required */
	char node[HK_NAME_MAX]; /* node that serves it; default: the first [node] */
	unsigned queue_depth;	/* 1..4096, default 64 */
	enum hk_disk_direct_conf direct; /* direct = auto|on|off, default auto */
};

/* [cluster] policy: what moves when a vCPU works on another node's pages. */
enum hk_policy {
	HK_POLICY_ADAPTIVE = 0, /* pages, and vCPUs whose faults go mostly to one node */
	HK_POLICY_PAGE,		/* pages only */
	HK_POLICY_VCPU,		/* vCPUs as soon as most of their faults go elsewhere */
};

struct hk_config {
	char path[4096]; /* file it came from */
	char cluster_name[HK_NAME_MAX];
	char provider[64]; /* libfabric provider, "tcp;ofi_rxm" */
	enum hk_policy policy; /* default adaptive */
	/* [guest] */
	char kernel[4096];
	char cmdline[4096];
	uint64_t guest_memory; /* 0 = sum of node memory */
	unsigned vcpus;
	bool replicas; /* [guest] replicas = on|off, default on */
	enum hk_wt_conf write_tracking; /* [guest] write_tracking = auto|uffd|kvm */
	/* [node NAME] sections in file order */
	unsigned n_nodes;
	struct hk_node_conf nodes[HK_MAX_NODES];
	/* [disk NAME] sections in file order (the guest sees them so) */
	unsigned n_disks;
	struct hk_disk_conf disks[HK_MAX_DISKS];
};

/*
 * Load and validate an INI file.  On failure returns a negative errno and
 * writes one line naming the file, line and key into err, e.g.
 * "hk.conf:7: [node n1] memory: bad size 'abc'".  Relative kernel, control
 * and disk paths come back absolute, resolved from the file's folder.
 * Defaults filled in: cluster name "hyperkernel", provider "tcp;ofi_rxm",
 * vcpus 1, replicas on; for each disk node = the first [node], queue_depth
 * 64, direct auto; guest_memory stays 0 when unset (see
 * hk_config_guest_memory).  A disk's node always names a [node] of the file.
 * Not thread-safe (it adjusts libinih's line limit for the parse).
 */
int hk_config_load(const char *path, struct hk_config *cfg, char *err, size_t errlen);
const struct hk_node_conf *hk_config_node(const struct hk_config *cfg, const char *name);
const struct hk_disk_conf *hk_config_disk(const struct hk_config *cfg, const char *name);
/* Guest memory the cluster presents: [guest] memory or the sum of nodes. */
uint64_t hk_config_guest_memory(const struct hk_config *cfg);

/* ---- control protocol framing ---------------------------------------- */

/*
 * A frame is a 4-byte big-endian length and a protobuf-c message.  Frames
 * larger than this are refused before their body is read: the console
 * buffer (HK_CONSOLE_KEEP) plus headroom is the largest legitimate reply.
 */
#define HK_CTL_MAX_FRAME (4u << 20)
#define HK_CTL_VERSION	 1

enum hk_wire_err {
	HK_WIRE_OK = 0,
	HK_WIRE_EOF = -1,	/* peer closed before a frame started */
	HK_WIRE_TRUNCATED = -2, /* peer closed or timed out inside a frame */
	HK_WIRE_TOO_BIG = -3,	/* length prefix above the limit */
	HK_WIRE_GARBAGE = -4,	/* body is not a valid message */
	HK_WIRE_IO = -5,	/* read/write error, errno set */
};

const char *hk_wire_strerror(int err);

/*
 * Read one frame body into a malloc'd buffer (*buf, *len).  max bounds the
 * length prefix.  Returns HK_WIRE_OK or a negative hk_wire_err.  A zero
 * length frame gives *buf == NULL, *len == 0.  On HK_WIRE_TOO_BIG, *len is
 * the refused length (nothing was allocated or read past the prefix).  A
 * receive timeout (SO_RCVTIMEO) before the first byte is HK_WIRE_IO with
 * errno EAGAIN; inside a frame it is HK_WIRE_TRUNCATED.
 */
int hk_wire_read_frame(int fd, size_t max, uint8_t **buf, size_t *len);
/* Sends with MSG_NOSIGNAL (EPIPE, not SIGPIPE); len > HK_CTL_MAX_FRAME is
 * HK_WIRE_TOO_BIG, since no peer would accept it. */
int hk_wire_write_frame(int fd, const uint8_t *buf, size_t len);

/* Typed helpers over the above.  Unpacked messages are freed by the caller
 * with the matching hk__ctl__*__free_unpacked(). */
int hk_wire_send_request(int fd, const Hk__Ctl__CtlRequest *req);
int hk_wire_recv_request(int fd, Hk__Ctl__CtlRequest **req);
int hk_wire_send_response(int fd, const Hk__Ctl__CtlResponse *rsp);
int hk_wire_recv_response(int fd, Hk__Ctl__CtlResponse **rsp);

/* ---- control server (hkd side) ---------------------------------------- */

/*
 * One thread per connection, at most HK_CTL_MAX_CONNS at once; the next
 * client gets an error reply and is closed.  A connection carries any
 * number of request/reply pairs; a peer silent for HK_CTL_IO_TIMEOUT_MS
 * (between or inside frames), or not reading a reply for that long, is
 * dropped.
 */
#define HK_CTL_MAX_CONNS     32
#define HK_CTL_IO_TIMEOUT_MS 10000

struct hk_ctl_server;

/*
 * Called on a server thread for every well-formed request; fills rsp.
 * Anything it allocates into rsp is released by the server through
 * rsp_free after the reply is sent.  It may block (guest wait).
 * Well-formed means: parses, version == HK_CTL_VERSION and a known req_case
 * is set; the server answers anything else itself with an error.  handle
 * runs concurrently on several threads.  A reply that packs to more than
 * HK_CTL_MAX_FRAME is replaced by an error reply.
 *
 * shutdown (optional) is called once by hk_ctl_server_stop after no new
 * connection can arrive and live ones are shut down, before threads are
 * joined: it must make running and later handle() calls return promptly
 * (set a flag, broadcast the condition a guest wait sleeps on), or stop
 * blocks until they return on their own.
 */
struct hk_ctl_ops {
	size_t size; /* sizeof(struct hk_ctl_ops), so the table can grow */
	void (*handle)(void *ctx, const Hk__Ctl__CtlRequest *req, Hk__Ctl__CtlResponse *rsp);
	void (*rsp_free)(void *ctx, Hk__Ctl__CtlResponse *rsp);
	void (*shutdown)(void *ctx);
};

/*
 * Bind path (mode 0600, stale socket replaced) and serve on own threads.
 * Returns 0 or -errno: -EADDRINUSE when a live server answers on path,
 * -EEXIST when path exists and is not a socket (never removed),
 * -ENAMETOOLONG when path does not fit sun_path.  Errors while serving are
 * logged to stderr, one line each, prefixed "control:".
 */
int hk_ctl_server_start(const char *path, const struct hk_ctl_ops *ops, void *ctx,
			struct hk_ctl_server **out);
/* Stop accepting, shut down live connections, call ops->shutdown, join
 * every thread, unlink the socket (if still ours), free.  NULL is a no-op. */
void hk_ctl_server_stop(struct hk_ctl_server *srv);

/* ---- control client (hkctl side) --------------------------------------- */

/*
 * Connect to a daemon's socket; returns the fd (blocking, close-on-exec) or
 * -errno: -ENOENT no socket there (daemon not started), -ECONNREFUSED
 * socket file left behind by a dead daemon, -EACCES, -ENAMETOOLONG.
 */
int hk_ctl_connect(const char *path);

/*
 * One round trip: send req, receive *rsp (free with
 * hk__ctl__ctl_response__free_unpacked).  If the send fails because the
 * daemon already closed (e.g. it was at HK_CTL_MAX_CONNS and said why), the
 * reply it left is still read and returned.  Returns an hk_wire_err.
 */
int hk_ctl_call(int fd, const Hk__Ctl__CtlRequest *req, Hk__Ctl__CtlResponse **rsp);

#endif
