/* Internal to node/: the hkd daemon's state shared by its files. */
#ifndef HK_DAEMON_H
#define HK_DAEMON_H

#include <pthread.h>
#include <stdint.h>

#include "disk.h"
#include "hyperkernel.h"
#include "node.h"
#include "replica.h"

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
};

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

	pthread_mutex_t lock; /* guards guest and shutting_down */
	struct hk_guest *guest;
	bool shutting_down;

	struct hk_console console;
	struct hk_ctl_server *ctl;
};

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

/* daemon.c */
int hk_daemon_run(const struct hk_config *cfg, const char *node_name);
extern const struct hk_ctl_ops hk_daemon_ctl_ops;

#endif
