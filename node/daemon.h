/* Internal to node/: the hkd daemon's state shared by its files. */
#ifndef HK_DAEMON_H
#define HK_DAEMON_H

#include <pthread.h>
#include <stdint.h>

#include "hyperkernel.h"
#include "node.h"

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

struct hk_daemon {
	const struct hk_config *cfg;
	const struct hk_node_conf *node;
	uint64_t start_ns;

	pthread_mutex_t lock; /* guards guest and shutting_down */
	struct hk_guest *guest;
	bool shutting_down;

	struct hk_console console;
	struct hk_ctl_server *ctl;
};

/* daemon.c */
int hk_daemon_run(const struct hk_config *cfg, const char *node_name);
extern const struct hk_ctl_ops hk_daemon_ctl_ops;

#endif
