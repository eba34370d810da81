/* Internal to node/: hkctl's commands share these. */
#ifndef HK_HKCTL_H
#define HK_HKCTL_H

#include <jansson.h>
#include <stdbool.h>

#include "node.h"

/* Options that take a value, in the order of hkctl_opt_names[]. */
enum hkctl_opt {
	OPT_CONFIG,
	OPT_NODE,
	OPT_SOCKET,
	OPT_KERNEL,
	OPT_CMDLINE,
	OPT_TIMEOUT,
	OPT_DISK,
	OPT_SIZE,
	OPT_SEED,
	OPT_GPA,
	OPT_LIMIT,
	OPT_MODE,
	OPT_DATA_SIZE,
	OPT_OPS,
	OPT_INTERVAL,
	OPT_COUNT,
	OPT_MAX,
};

struct hkctl {
	const char *val[OPT_MAX]; /* NULL: not given */
	bool json;
	bool force;
	char *words[4];
	int nwords;
	char sock[108]; /* the daemon's control socket */
	const struct hk_config *cfg; /* NULL with --socket */
};

/* One line on stderr ("hkctl: ..."); returns 1 for `return die(...)`. */
int hkctl_die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* A usage error: one line on stderr; returns 2, the exit status for bad arguments. */
int hkctl_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* One request, one reply; 0 or 1 after printing the error.  timeout_s 0 = none. */
int hkctl_call(struct hkctl *c, Hk__Ctl__CtlRequest *req, Hk__Ctl__CtlResponse **rsp,
	       unsigned timeout_s);
/* The same to the daemon at sock, quietly: 0, or -1 with one line in err. */
int hkctl_call_at(const char *sock, Hk__Ctl__CtlRequest *req, Hk__Ctl__CtlResponse **rsp,
		  unsigned timeout_s, char *err, size_t errlen);
/*
 * The control socket of the node disk is attached to ([disk] node=), so a
 * request about the disk's contents reaches the node that writes it; an
 * explicit --node or --socket wins, and without a config it is c->sock.
 * 0, or 1 after printing the error (no such [disk]).
 */
int hkctl_disk_socket(struct hkctl *c, const char *disk, char *sock, size_t len);
/* Parse option values; 0 or 1 after printing the error. */
int hkctl_opt_size(struct hkctl *c, enum hkctl_opt o, uint64_t def, uint64_t *out);
int hkctl_opt_uint(struct hkctl *c, enum hkctl_opt o, uint64_t def, uint64_t max, uint64_t *out);
int hkctl_opt_seconds(struct hkctl *c, enum hkctl_opt o, double *out, bool *given);
extern const char *const hkctl_opt_names[OPT_MAX];

const char *hkctl_state_name(Hk__Ctl__GuestState s);
json_t *hkctl_guest_json(const Hk__Ctl__GuestInfo *g);
void hkctl_print_json(json_t *j);
void hkctl_print_guest(const Hk__Ctl__GuestInfo *g);
/* One line for an ended guest: its state, status or reason, runtime and
 * last console line ("exited with status 5 (...) after 0.006 s; last
 * console line: '...'"). */
const char *hkctl_guest_end(const Hk__Ctl__GuestInfo *g, char *buf, size_t len);

#define HKCTL_REPLY_TIMEOUT_S 60
/* status and top ask every node: one that hangs must not hold up the rest for long. */
#define HKCTL_NODE_TIMEOUT_S 5

/*
 * hkctl_status.c: one reply per node (status, top, replica).  Without
 * --socket or --node every [node] of the config is asked, in config
 * order; otherwise the one daemon named.
 */
struct hkctl_node_status {
	char name[64];	/* "" when only --socket names the daemon */
	char sock[108];
	Hk__Ctl__CtlResponse *rsp; /* NULL: did not answer */
	char err[512];		   /* why, when rsp is NULL */
	uint64_t at_ns;		   /* when the reply came (CLOCK_MONOTONIC) */
};

/* Number of targets written to out (max HK_MAX_NODES entries). */
unsigned hkctl_status_targets(struct hkctl *c, struct hkctl_node_status *out);
/* Ask each target for its status; returns how many did not answer. */
unsigned hkctl_status_query(struct hkctl_node_status *t, unsigned n, unsigned timeout_s);
/*
 * Send req to each target in turn (replica show|stats|verify use it too).
 * A reply that is not a want reply counts as no answer, with err saying
 * so (what names the request).  Returns how many did not answer.
 */
unsigned hkctl_ask_each(struct hkctl_node_status *t, unsigned n, Hk__Ctl__CtlRequest *req,
			Hk__Ctl__CtlResponse__RepCase want, const char *what, unsigned timeout_s);
void hkctl_status_release(struct hkctl_node_status *t, unsigned n);

/* Commands: 0 on success. */
int hkctl_status(struct hkctl *c);
int hkctl_guest_start(struct hkctl *c);
int hkctl_guest_stop(struct hkctl *c);
int hkctl_guest_reboot(struct hkctl *c);
int hkctl_guest_console(struct hkctl *c);
int hkctl_guest_wait(struct hkctl *c);
int hkctl_replica_show(struct hkctl *c);
int hkctl_replica_stats(struct hkctl *c);
int hkctl_replica_verify(struct hkctl *c);
int hkctl_disk_mkdata(struct hkctl *c);
int hkctl_drill_restart(struct hkctl *c);
int hkctl_nodes(struct hkctl *c);
int hkctl_top(struct hkctl *c);

#endif
