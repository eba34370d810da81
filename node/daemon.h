/* Internal to node/: the hkd daemon's state shared by its files. */
#ifndef HK_DAEMON_H
#define HK_DAEMON_H

#include <pthread.h>
#include <stdint.h>

#include "disk.h"
#include "hyperkernel.h"
#include "node.h"
#include "replica.h"
#include "guest.pb-c.h"

struct hk_cluster;
struct hk_daemon_pool;

/* Console bytes the daemon keeps for `hkctl guest console`. */
#define HK_CONSOLE_KEEP (1u << 20)

struct hk_console {
	pthread_mutex_t lock;
	uint64_t total; /* bytes ever appended since the last reset */
	char ring[HK_CONSOLE_KEEP];
};

void hk_console_init(struct hk_console *c);
void hk_console_reset(struct hk_console *c);
void hk_console_append(struct hk_console *c, const char *buf, size_t len);
/* Copy out at most max bytes from offset (clamped to what is kept). */
size_t hk_console_read(struct hk_console *c, uint64_t offset, size_t max, uint8_t **out,
		       uint64_t *start, uint64_t *total);
uint64_t hk_console_total(struct hk_console *c);
/* The last non-empty line kept, without its newline and with control
 * bytes as '?', cut to len - 1 bytes; "" if none. */
void hk_console_last_line(struct hk_console *c, char *buf, size_t len);

/*
 * One started guest.  Control threads that wait on it hold a reference,
 * so `guest start` can replace an ended guest while a waiter still reads
 * its outcome.
 */
struct hk_guest {
	struct hk_vm *vm;
	unsigned refs;
	char *kernel;
	char *cmdline;
	uint64_t pool_guest;	  /* pooled: generation all nodes know it by */
	struct hk_daemon *daemon; /* pooled: for the console forwarder */
};

/*
 * A guest start or reboot of a pooled guest in progress on the leader.  It
 * waits for every other node's answer (up to 30 s) without d->lock, so
 * status, nodes and replica requests answer meanwhile; this state, under
 * d->lock, keeps a second start, reboot or stop out until it ends.
 */
enum hk_daemon_busy {
	HK_DAEMON_IDLE = 0,
	HK_DAEMON_STARTING,  /* waiting for every node's PREPARED */
	HK_DAEMON_REBOOTING, /* waiting for every node's REBOOTED */
};

/* The one-line error a request gets while a start or reboot is in progress. */
#define HK_DAEMON_BUSY_MSG "a start or reboot is already in progress"

/* A disk this node serves; ids are the disk's index in the config. */
struct hk_daemon_disk {
	const struct hk_disk_conf *conf;
	struct hk_disk *disk;
	uint16_t id;
};

struct hk_daemon {
	const struct hk_config *cfg;
	const struct hk_node_conf *node;
	uint16_t node_id;
	uint64_t start_ns;

	/* Disks and the replica table outlive every guest: that is what
	 * makes a guest reboot cheap. */
	struct hk_daemon_disk disks[HK_MAX_DISKS];
	unsigned n_disks;
	struct hk_replica *replicas;
	bool replicas_enabled; /* for the next boot */
	uint64_t kept_pages;   /* by the last reboot */

	/*
	 * Guards guest, busy*, shutting_down, kept_pages and
	 * replicas_enabled; never a running guest itself.  Never held
	 * across a wait for another node.  Lock order, outermost first:
	 *   pool boot_lock -> d->lock -> pool lock, pool mem_lock,
	 *   console lock, a VM's own locks
	 * A rebuild for a reboot (hk_vm_reboot_prepare) runs under d->lock,
	 * so hkctl status reads a VM's counters under it too.
	 */
	pthread_mutex_t lock;
	struct hk_guest *guest;
	enum hk_daemon_busy busy;
	/* STARTING: the guest being made (not yet d->guest), for status;
	 * REBOOTING: d->guest.  Owned by the busy control thread. */
	struct hk_guest *busy_guest;
	uint64_t busy_since_ns;
	pthread_cond_t busy_cv; /* busy went back to IDLE */
	bool shutting_down;

	struct hk_console console;
	struct hk_ctl_server *ctl;

	/* More than one [node]: the cluster and the guest spread over it
	 * (daemon_pool.c).  NULL on a single node. */
	struct hk_cluster *cluster;
	struct hk_daemon_pool *pool;
	struct hk_daemon_dev *dev; /* disks reached from other nodes (daemon_dev.c) */
};

/* daemon.c: drop a reference taken on d->guest (under d->lock) */
void hk_daemon_guest_put(struct hk_daemon *d, struct hk_guest *g);
/* daemon.c: the current guest with a reference held, or NULL */
struct hk_guest *hk_daemon_guest_get(struct hk_daemon *d);
/* daemon.c: a GuestInfo for replies (g NULL: state none), with the last
 * line of d's console; NULL if out of memory */
Hk__Ctl__GuestInfo *hk_daemon_guest_info(struct hk_daemon *d, struct hk_guest *g,
					 const struct hk_vm_result *r);

/* daemon_pool.c: a guest over the nodes of a cluster */
/* Leader, hkctl guest start, d->lock not held (d->busy STARTING): every
 * other node creates its share of the guest; fills the pool config and
 * parked vCPUs of the leader's own VM.  Waits up to 30 s for the answers. */
int hk_daemon_pool_prepare(struct hk_daemon *d, const char *kernel, const char *cmdline,
			   struct hk_pool_config *pc, uint64_t *parked, char *err, size_t errlen);
/* 0 on the leader (the first node), else -EINVAL and a line in err saying
 * where a pooled guest is `what` ("started", "rebooted"). */
int hk_daemon_pool_leads(struct hk_daemon *d, const char *what, char *err, size_t errlen);
/* Leader, after creating its VM (g->pool_guest set), d->lock held: let
 * everyone run. */
int hk_daemon_pool_run(struct hk_daemon *d, struct hk_guest *g, char *err, size_t errlen);
/* Leader, hkctl guest reboot, d->lock not held (d->busy REBOOTING): reboot
 * on every node, memory kept; *kept counts this node's replica pages.
 * Waits up to 30 s for the answers without d->lock, then takes it for the
 * rebuild and the run. */
int hk_daemon_pool_reboot(struct hk_daemon *d, struct hk_guest *g, uint64_t *kept, char *err,
			  size_t errlen);
/* Leader: every other node stops its share of guest; drop (a start that
 * failed): its memory too, else (a failed reboot) the guest stays halted
 * with its memory, so a reboot may be tried again. */
void hk_daemon_pool_abandon(struct hk_daemon *d, uint64_t guest, const char *why, bool drop);
/* Daemon shutdown: a start or reboot waiting for answers gives up now
 * ("daemon is shutting down"), later ones at once.  No lock held. */
void hk_daemon_pool_cancel(struct hk_daemon *d);
/* A guest message (proto/guest.proto) to node; 0 or -errno. */
int hk_daemon_pool_send(struct hk_daemon *d, unsigned node, const Hk__Guest__GuestMsg *m);
/* The current guest, with a reference, if it is pooled generation `guest`. */
struct hk_guest *hk_daemon_pool_guest(struct hk_daemon *d, uint64_t guest);

/* daemon_dev.c: disks of a pooled guest, wherever its vCPUs run */
/* Fill vc's disks (into out, HK_MAX_DISKS long) in hk.conf order: the ones
 * attached here, and in a cluster the others as forwarded windows (g is the
 * guest the forwards belong to).  Returns how many. */
unsigned hk_daemon_vm_disks(struct hk_daemon *d, struct hk_guest *g, struct hk_vm_config *vc,
			    struct hk_vm_disk *out);
/* After the cluster is created, before it is joined. */
int hk_daemon_dev_start(struct hk_daemon *d, char *err, size_t errlen);
/* Before the cluster is destroyed (the guest stopped): the worker ends. */
void hk_daemon_dev_stop(struct hk_daemon *d);
/* After the cluster is destroyed. */
void hk_daemon_dev_free(struct hk_daemon *d);
/* Register accesses forwarded from here, and served here for others. */
void hk_daemon_dev_stats(struct hk_daemon *d, uint64_t *forwards, uint64_t *served);

/* daemon_place.c: vCPU placement ([cluster] policy) */
struct hk_place;
int hk_place_start(struct hk_daemon *d, struct hk_place **out);
void hk_place_stop(struct hk_place *pl);
/* A new guest: these vCPUs run here. */
void hk_place_guest(struct hk_place *pl, uint64_t guest, uint64_t local);
/* vCPU i of g arrives with this state: restore and run it here. */
int hk_place_arrive(struct hk_place *pl, struct hk_guest *g, unsigned i, const uint8_t *state,
		    size_t len, char *err, size_t errlen);
uint64_t hk_place_migrations(struct hk_place *pl);
int hk_daemon_pool_start(struct hk_daemon *d, char *err, size_t errlen);
void hk_daemon_pool_stop(struct hk_daemon *d);
/* This node's share of the running guest: coherence counters and vCPU
 * moves (zeros without a pooled guest).  Safe from any control thread. */
void hk_daemon_pool_stats(struct hk_daemon *d, struct hk_pool_stats *st,
			  uint64_t *vcpu_migrations);

/* daemon_disk.c */
int hk_daemon_open_disks(struct hk_daemon *d, char *err, size_t errlen);
void hk_daemon_close_disks(struct hk_daemon *d);
struct hk_daemon_disk *hk_daemon_disk(struct hk_daemon *d, const char *name);
/* Write a kvdb data set (guestos/kvdb_format.h) of size bytes. */
int hk_daemon_mkdata(struct hk_daemon_disk *dd, uint64_t size, uint64_t seed, bool force,
		     uint64_t *records, bool *reused, char *err, size_t errlen);

/* daemon_replica.c: hkctl replica show|stats|verify|set */
void hk_daemon_replica_show(struct hk_daemon *d, const Hk__Ctl__ReplicaShowRequest *req,
			    Hk__Ctl__CtlResponse *rsp);
void hk_daemon_replica_stats(struct hk_daemon *d, Hk__Ctl__CtlResponse *rsp);
void hk_daemon_replica_verify(struct hk_daemon *d, struct hk_mem *mem, Hk__Ctl__CtlResponse *rsp);
void hk_daemon_reply_error(Hk__Ctl__CtlResponse *rsp, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* daemon_status.c: hkctl status and hkctl nodes */
void hk_daemon_status(struct hk_daemon *d, Hk__Ctl__CtlResponse *rsp);
void hk_daemon_nodes(struct hk_daemon *d, Hk__Ctl__CtlResponse *rsp);
void hk_daemon_nodes_free(Hk__Ctl__NodesReply *r);

/* daemon.c */
int hk_daemon_run(const struct hk_config *cfg, const char *node_name);
extern const struct hk_ctl_ops hk_daemon_ctl_ops;

#endif
