/*
 * hk.conf: the INI file every hkd and hkctl of a cluster reads.
 *
 *   [cluster]
 *   name = demo                  ; default "hyperkernel"
 *   provider = tcp;ofi_rxm       ; libfabric provider, this is the default
 *   policy = adaptive            ; page | vcpu | adaptive: may vCPUs move to
 *                                ; their data (vcpu, adaptive) or only pages
 *
 *   [guest]
 *   kernel = guest.elf           ; relative paths are from hk.conf's folder
 *   cmdline = console=hk
 *   memory = 1G                  ; default: sum of node memory, >= 64 MiB
 *   vcpus = 2                    ; 1..64, default 1
 *   replicas = on                ; on|off (true/false, yes/no, 1/0), default on
 *   write_tracking = auto        ; auto|uffd|kvm: how writes to replicas are seen
 *
 *   [node n1]                    ; one section per node, at least one
 *   address = 10.0.0.1:7000
 *   memory = 512M
 *   control = n1.sock            ; required; must fit a Unix sun_path
 *
 *   [disk d0]                    ; one section per disk, at most 8
 *   path = d0.img                ; required; file or block device, unique
 *   size = 4G                    ; required; multiple of 4 KiB, at most 1 PiB
 *   node = n1                    ; a [node] of this file; default the first
 *   queue_depth = 64             ; 1..4096, default 64
 *   direct = auto                ; auto|on|off, default auto
 *
 * libinih does the tokenising.  Debian's build of it passes no line number
 * to the handler, so we use ini_parse_stream() with our own reader: it
 * counts lines, tracks [section] headers itself (so an empty [node x] or an
 * unknown empty section is still seen), refuses lines longer than inih's
 * buffer instead of letting inih split them, and strips leading blanks so
 * an indented line is never glued onto the previous value as a
 * "continuation".  " ;" starts an inline comment, so a value cannot
 * contain it.
 */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/un.h>

#include <ini.h>

#include "node.h"

#define CFG_DEFAULT_CLUSTER  "hyperkernel"
#define CFG_DEFAULT_PROVIDER "tcp;ofi_rxm"
#define CFG_PAGE_SIZE	     4096u
/* Longest line we ask inih for when its build lets us (Debian's does):
 * room for a 4095-byte path plus the key. */
#define CFG_LINE_MAX 8192

enum cfg_section {
	SEC_NONE, /* before the first header */
	SEC_BAD,  /* a header we already reported */
	SEC_CLUSTER,
	SEC_GUEST,
	SEC_NODE,
	SEC_DISK,
};

/* Keys of each section; the index is a slot in the "line seen" arrays. */
enum { CK_NAME, CK_PROVIDER, CK_POLICY, CK_MAX };
enum { GK_KERNEL, GK_CMDLINE, GK_MEMORY, GK_VCPUS, GK_REPLICAS, GK_WTRACK, GK_MAX };
enum { NK_ADDRESS, NK_MEMORY, NK_CONTROL, NK_MAX };
enum { DK_PATH, DK_SIZE, DK_NODE, DK_QUEUE_DEPTH, DK_DIRECT, DK_MAX };

struct cfg_state {
	struct hk_config *cfg;
	FILE *f;
	char dir[PATH_MAX]; /* absolute folder of the config file */
	int lineno;
	enum cfg_section sec;
	char sec_label[HK_NAME_MAX + 8]; /* "guest", "node n1", "disk d0" */
	struct hk_node_conf *node;	 /* current [node], if sec == SEC_NODE */
	int node_idx;
	struct hk_disk_conf *disk; /* current [disk], if sec == SEC_DISK */
	int disk_idx;

	int cluster_line, guest_line;
	int cluster_keys[CK_MAX], guest_keys[GK_MAX];
	int node_line[HK_MAX_NODES];
	int node_keys[HK_MAX_NODES][NK_MAX];
	int disk_line[HK_MAX_DISKS];
	int disk_keys[HK_MAX_DISKS][DK_MAX];

	char *err;
	size_t errlen;
	int err_line; /* line of the recorded error, 0 = none yet */
	int ret;      /* negative errno for the recorded error */
};

struct cfg_key {
	const char *name;
	int slot;
	int (*set)(struct cfg_state *st, const char *value);
};

__attribute__((format(printf, 3, 4))) static void cfg_fail(struct cfg_state *st, int line,
							   const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	if (st->ret)
		return; /* the first error is the one the user fixes first */
	st->ret = -EINVAL;
	st->err_line = line ? line : INT_MAX;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (!st->err || !st->errlen)
		return;
	if (line)
		snprintf(st->err, st->errlen, "%s:%d: %s", st->cfg->path, line, msg);
	else
		snprintf(st->err, st->errlen, "%s: %s", st->cfg->path, msg);
}

/* Key errors read "hk.conf:7: [node n1] memory: bad size 'abc'". */
#define cfg_key_fail(st, key, fmt, ...)                                                            \
	cfg_fail(st, (st)->lineno, "[%s] %s: " fmt, (st)->sec_label, key, __VA_ARGS__)

static int cfg_name_ok(const char *s)
{
	size_t i, n = strlen(s);

	if (n == 0 || n >= HK_NAME_MAX)
		return 0;
	for (i = 0; i < n; i++) {
		char c = s[i];
		int alnum =
		    (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');

		if (!alnum && (i == 0 || (c != '-' && c != '_' && c != '.')))
			return 0;
	}
	return 1;
}

static int cfg_copy(struct cfg_state *st, const char *key, char *dst, size_t len, const char *value)
{
	size_t n = strlen(value);

	if (n >= len) {
		cfg_key_fail(st, key, "value is %zu bytes, the limit is %zu", n, len - 1);
		return 0;
	}
	memcpy(dst, value, n + 1);
	return 1;
}

/* Relative paths are taken from the config file's folder, so hkd finds its
 * files whatever its working directory. */
static int cfg_path(struct cfg_state *st, const char *key, char *dst, size_t len, const char *limit,
		    const char *value)
{
	char buf[PATH_MAX + 4096];

	if (*value == '\0') {
		cfg_key_fail(st, key, "%s", "empty path");
		return 0;
	}
	if (value[0] == '/') {
		snprintf(buf, sizeof(buf), "%s", value);
	} else {
		while (value[0] == '.' && value[1] == '/')
			value += 2;
		snprintf(buf, sizeof(buf), "%s/%s", strcmp(st->dir, "/") ? st->dir : "", value);
	}
	if (strlen(buf) >= len) {
		/* Show enough of a very long path to recognise it, and still fit
		 * the rest of the line. */
		cfg_key_fail(st, key, "path '%.200s%s' is %zu bytes, the limit is %zu%s", buf,
			     strlen(buf) > 200 ? "..." : "", strlen(buf), len - 1, limit);
		return 0;
	}
	memcpy(dst, buf, strlen(buf) + 1);
	return 1;
}

/* A size in bytes that must be a multiple of 4 KiB ("the 4 KiB <unit>"). */
static int cfg_size(struct cfg_state *st, const char *key, const char *value, const char *unit,
		    uint64_t *out)
{
	char b[32];
	int ret = hk_parse_size(value, out);

	if (ret == -ERANGE) {
		cfg_key_fail(st, key, "size '%s' is too large", value);
		return 0;
	}
	if (ret) {
		cfg_key_fail(st, key, "bad size '%s'", value);
		return 0;
	}
	if (*out % CFG_PAGE_SIZE) {
		cfg_key_fail(st, key, "%s (%llu bytes) is not a multiple of the %s %s", value,
			     (unsigned long long)*out, hk_format_size(CFG_PAGE_SIZE, b, sizeof(b)),
			     unit);
		return 0;
	}
	return 1;
}

static int cfg_memory(struct cfg_state *st, const char *key, const char *value, uint64_t *out)
{
	return cfg_size(st, key, value, "page size", out);
}

/* A decimal number in min..max, no sign, no blanks. */
static int cfg_uint(struct cfg_state *st, const char *key, const char *value, unsigned min,
		    unsigned max, unsigned *out)
{
	unsigned long n = 0;
	const char *p;

	for (p = value; *p >= '0' && *p <= '9' && n <= max; p++)
		n = n * 10 + (unsigned long)(*p - '0');
	if (p == value || (*p && (*p < '0' || *p > '9'))) {
		cfg_key_fail(st, key, "bad number '%s'", value);
		return 0;
	}
	if (n < min || n > max) {
		cfg_key_fail(st, key, "'%s' is out of range %u..%u", value, min, max);
		return 0;
	}
	*out = (unsigned)n;
	return 1;
}

/* on/off and the usual synonyms; returns 1 (on), 0 (off) or -1. */
static int cfg_bool(const char *value)
{
	static const char *const on[] = {"on", "true", "yes", "1"};
	static const char *const off[] = {"off", "false", "no", "0"};
	size_t i;

	for (i = 0; i < sizeof(on) / sizeof(on[0]); i++) {
		if (!strcasecmp(value, on[i]))
			return 1;
		if (!strcasecmp(value, off[i]))
			return 0;
	}
	return -1;
}

/* ---- [cluster] ---------------------------------------------------------- */

static int set_cluster_name(struct cfg_state *st, const char *v)
{
	if (!cfg_name_ok(v)) {
		cfg_key_fail(st, "name", "bad name '%s' (1-%d of A-Z a-z 0-9 . _ -)", v,
			     HK_NAME_MAX - 1);
		return 0;
	}
	return cfg_copy(st, "name", st->cfg->cluster_name, sizeof(st->cfg->cluster_name), v);
}

static int set_cluster_provider(struct cfg_state *st, const char *v)
{
	if (*v == '\0') {
		cfg_key_fail(st, "provider", "%s", "empty (default is " CFG_DEFAULT_PROVIDER ")");
		return 0;
	}
	return cfg_copy(st, "provider", st->cfg->provider, sizeof(st->cfg->provider), v);
}

static int set_cluster_policy(struct cfg_state *st, const char *v)
{
	static const char *const names[] = {[HK_POLICY_ADAPTIVE] = "adaptive",
					    [HK_POLICY_PAGE] = "page",
					    [HK_POLICY_VCPU] = "vcpu"};

	for (unsigned i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strcmp(v, names[i]) == 0) {
			st->cfg->policy = (enum hk_policy)i;
			return 1;
		}
	cfg_key_fail(st, "policy", "'%s': want page, vcpu or adaptive", v);
	return 0;
}

static const struct cfg_key cluster_keys[] = {
    {"name", CK_NAME, set_cluster_name},
    {"provider", CK_PROVIDER, set_cluster_provider},
    {"policy", CK_POLICY, set_cluster_policy},
    {NULL, 0, NULL},
};

/* ---- [guest] ------------------------------------------------------------ */

static int set_guest_kernel(struct cfg_state *st, const char *v)
{
	return cfg_path(st, "kernel", st->cfg->kernel, sizeof(st->cfg->kernel), "", v);
}

static int set_guest_cmdline(struct cfg_state *st, const char *v)
{
	return cfg_copy(st, "cmdline", st->cfg->cmdline, sizeof(st->cfg->cmdline), v);
}

static int set_guest_memory(struct cfg_state *st, const char *v)
{
	char a[32], b[32];

	if (!cfg_memory(st, "memory", v, &st->cfg->guest_memory))
		return 0;
	if (st->cfg->guest_memory < HK_GUEST_MEMORY_MIN) {
		cfg_key_fail(st, "memory", "%s is below the minimum of %s",
			     hk_format_size(st->cfg->guest_memory, a, sizeof(a)),
			     hk_format_size(HK_GUEST_MEMORY_MIN, b, sizeof(b)));
		return 0;
	}
	return 1;
}

static int set_guest_vcpus(struct cfg_state *st, const char *v)
{
	return cfg_uint(st, "vcpus", v, 1, HK_MAX_VCPUS, &st->cfg->vcpus);
}

static int set_guest_replicas(struct cfg_state *st, const char *v)
{
	int on = cfg_bool(v);

	if (on < 0) {
		cfg_key_fail(st, "replicas", "bad value '%s' (want on or off)", v);
		return 0;
	}
	st->cfg->replicas = on;
	return 1;
}

int hk_parse_write_tracking(const char *s, enum hk_wt_conf *out)
{
	static const char *const names[] = {"auto", "uffd", "kvm"};

	for (unsigned i = 0; i < 3; i++)
		if (!strcmp(s, names[i])) {
			*out = (enum hk_wt_conf)i;
			return 0;
		}
	return -EINVAL;
}

static int set_guest_write_tracking(struct cfg_state *st, const char *v)
{
	if (hk_parse_write_tracking(v, &st->cfg->write_tracking)) {
		cfg_key_fail(st, "write_tracking", "bad value '%s' (want auto, uffd or kvm)", v);
		return 0;
	}
	return 1;
}

/* One key a line; clang-format would pack these into columns. */
/* clang-format off */
static const struct cfg_key guest_keys[] = {
    {"kernel", GK_KERNEL, set_guest_kernel},
    {"cmdline", GK_CMDLINE, set_guest_cmdline},
    {"memory", GK_MEMORY, set_guest_memory},
    {"vcpus", GK_VCPUS, set_guest_vcpus},
    {"replicas", GK_REPLICAS, set_guest_replicas},
    {"write_tracking", GK_WTRACK, set_guest_write_tracking},
    {NULL, 0, NULL},
};
/* clang-format on */

/* ---- [node NAME] -------------------------------------------------------- */

static int set_node_address(struct cfg_state *st, const char *v)
{
	const char *colon = strrchr(v, ':');
	unsigned long port = 0;
	const char *p;
	int i;

	if (!colon || colon == v) {
		cfg_key_fail(st, "address", "bad address '%s' (want host:port)", v);
		return 0;
	}
	for (p = colon + 1; *p >= '0' && *p <= '9' && port <= 65535; p++)
		port = port * 10 + (unsigned long)(*p - '0');
	if (p == colon + 1 || *p || port < 1 || port > 65535) {
		cfg_key_fail(st, "address", "bad port in '%s' (want host:port, port 1..65535)", v);
		return 0;
	}
	for (i = 0; i < st->node_idx; i++) {
		if (!strcmp(st->cfg->nodes[i].address, v)) {
			cfg_key_fail(st, "address", "'%s' is already used by [node %s]", v,
				     st->cfg->nodes[i].name);
			return 0;
		}
	}
	return cfg_copy(st, "address", st->node->address, sizeof(st->node->address), v);
}

static int set_node_memory(struct cfg_state *st, const char *v)
{
	return cfg_memory(st, "memory", v, &st->node->memory);
}

static int set_node_control(struct cfg_state *st, const char *v)
{
	struct sockaddr_un sun;
	int i;

	/* The limit is sun_path; hk_node_conf.control is sized to match. */
	_Static_assert(sizeof(((struct hk_node_conf *)0)->control) == sizeof(sun.sun_path),
		       "control must fit sun_path");
	if (!cfg_path(st, "control", st->node->control, sizeof(sun.sun_path),
		      " (Unix socket sun_path)", v))
		return 0;
	for (i = 0; i < st->node_idx; i++) {
		if (!strcmp(st->cfg->nodes[i].control, st->node->control)) {
			cfg_key_fail(st, "control", "'%s' is already used by [node %s]",
				     st->node->control, st->cfg->nodes[i].name);
			return 0;
		}
	}
	return 1;
}

static const struct cfg_key node_keys[] = {
    {"address", NK_ADDRESS, set_node_address},
    {"memory", NK_MEMORY, set_node_memory},
    {"control", NK_CONTROL, set_node_control},
    {NULL, 0, NULL},
};

/* ---- [disk NAME] -------------------------------------------------------- */

static int set_disk_path(struct cfg_state *st, const char *v)
{
	int i;

	if (!cfg_path(st, "path", st->disk->path, sizeof(st->disk->path), "", v))
		return 0;
	for (i = 0; i < st->disk_idx; i++) {
		if (!strcmp(st->cfg->disks[i].path, st->disk->path)) {
			cfg_key_fail(st, "path", "'%s' is already used by [disk %s]",
				     st->disk->path, st->cfg->disks[i].name);
			return 0;
		}
	}
	return 1;
}

static int set_disk_size(struct cfg_state *st, const char *v)
{
	char a[32];

	if (!cfg_size(st, "size", v, "block size", &st->disk->size))
		return 0;
	if (st->disk->size == 0) {
		cfg_key_fail(st, "size", "%s is below the minimum of %s", v,
			     hk_format_size(CFG_PAGE_SIZE, a, sizeof(a)));
		return 0;
	}
	if (st->disk->size > HK_DISK_SIZE_MAX) {
		cfg_key_fail(st, "size", "%s (%llu bytes) is above the maximum of %s", v,
			     (unsigned long long)st->disk->size,
			     hk_format_size(HK_DISK_SIZE_MAX, a, sizeof(a)));
		return 0;
	}
	return 1;
}

/* Whether the node exists is checked once the whole file is read. */
static int set_disk_node(struct cfg_state *st, const char *v)
{
	if (!cfg_name_ok(v)) {
		cfg_key_fail(st, "node", "bad node name '%s' (1-%d of A-Z a-z 0-9 . _ -)", v,
			     HK_NAME_MAX - 1);
		return 0;
	}
	return cfg_copy(st, "node", st->disk->node, sizeof(st->disk->node), v);
}

static int set_disk_queue_depth(struct cfg_state *st, const char *v)
{
	return cfg_uint(st, "queue_depth", v, 1, HK_DISK_QUEUE_DEPTH_MAX, &st->disk->queue_depth);
}

static int set_disk_direct(struct cfg_state *st, const char *v)
{
	int on = cfg_bool(v);

	if (!strcasecmp(v, "auto")) {
		st->disk->direct = HK_DIRECT_AUTO;
	} else if (on >= 0) {
		st->disk->direct = on ? HK_DIRECT_ON : HK_DIRECT_OFF;
	} else {
		cfg_key_fail(st, "direct", "bad value '%s' (want auto, on or off)", v);
		return 0;
	}
	return 1;
}

/* clang-format off */
static const struct cfg_key disk_keys[] = {
    {"path", DK_PATH, set_disk_path},
    {"size", DK_SIZE, set_disk_size},
    {"node", DK_NODE, set_disk_node},
    {"queue_depth", DK_QUEUE_DEPTH, set_disk_queue_depth},
    {"direct", DK_DIRECT, set_disk_direct},
    {NULL, 0, NULL},
};
/* clang-format on */

/* ---- parsing ------------------------------------------------------------ */

/* "node n1" -> "n1" for kind "node"; NULL when name is not "<kind> ...". */
static char *cfg_section_arg(char *name, const char *kind)
{
	size_t n = strlen(kind);

	if (strncmp(name, kind, n) || (name[n] && name[n] != ' ' && name[n] != '\t'))
		return NULL;
	name += n;
	while (*name == ' ' || *name == '\t')
		name++;
	return name;
}

static void cfg_node_begin(struct cfg_state *st, const char *name)
{
	int i;

	if (!cfg_name_ok(name)) {
		cfg_fail(st, st->lineno,
			 "bad node name '%s' in [node NAME] (1-%d of A-Z a-z 0-9 . _ -)", name,
			 HK_NAME_MAX - 1);
		return;
	}
	for (i = 0; i < (int)st->cfg->n_nodes; i++) {
		if (!strcmp(st->cfg->nodes[i].name, name)) {
			cfg_fail(st, st->lineno, "duplicate [node %s] (first at line %d)", name,
				 st->node_line[i]);
			return;
		}
	}
	if (st->cfg->n_nodes == HK_MAX_NODES) {
		cfg_fail(st, st->lineno, "[node %s]: more than %d nodes", name, HK_MAX_NODES);
		return;
	}
	st->node_idx = (int)st->cfg->n_nodes++;
	st->node = &st->cfg->nodes[st->node_idx];
	st->node_line[st->node_idx] = st->lineno;
	snprintf(st->node->name, sizeof(st->node->name), "%s", name);
	snprintf(st->sec_label, sizeof(st->sec_label), "node %s", name);
	st->sec = SEC_NODE;
}

static void cfg_disk_begin(struct cfg_state *st, const char *name)
{
	int i;

	if (!cfg_name_ok(name)) {
		cfg_fail(st, st->lineno,
			 "bad disk name '%s' in [disk NAME] (1-%d of A-Z a-z 0-9 . _ -)", name,
			 HK_NAME_MAX - 1);
		return;
	}
	for (i = 0; i < (int)st->cfg->n_disks; i++) {
		if (!strcmp(st->cfg->disks[i].name, name)) {
			cfg_fail(st, st->lineno, "duplicate [disk %s] (first at line %d)", name,
				 st->disk_line[i]);
			return;
		}
	}
	if (st->cfg->n_disks == HK_MAX_DISKS) {
		cfg_fail(st, st->lineno, "[disk %s]: more than %d disks", name, HK_MAX_DISKS);
		return;
	}
	st->disk_idx = (int)st->cfg->n_disks++;
	st->disk = &st->cfg->disks[st->disk_idx];
	st->disk_line[st->disk_idx] = st->lineno;
	snprintf(st->disk->name, sizeof(st->disk->name), "%s", name);
	snprintf(st->sec_label, sizeof(st->sec_label), "disk %s", name);
	st->sec = SEC_DISK;
}

static void cfg_section_begin(struct cfg_state *st, char *name)
{
	char *end = name + strlen(name);
	char *arg;

	while (*name == ' ' || *name == '\t')
		name++;
	while (end > name && (end[-1] == ' ' || end[-1] == '\t'))
		*--end = '\0';

	st->sec = SEC_BAD;
	st->node = NULL;
	st->disk = NULL;
	if (!strcmp(name, "cluster") || !strcmp(name, "guest")) {
		int *first = name[0] == 'c' ? &st->cluster_line : &st->guest_line;

		if (*first) {
			cfg_fail(st, st->lineno, "section [%s] repeated (first at line %d)", name,
				 *first);
			return;
		}
		*first = st->lineno;
		st->sec = name[0] == 'c' ? SEC_CLUSTER : SEC_GUEST;
		snprintf(st->sec_label, sizeof(st->sec_label), "%s", name);
		return;
	}
	if ((arg = cfg_section_arg(name, "node")))
		cfg_node_begin(st, arg);
	else if ((arg = cfg_section_arg(name, "disk")))
		cfg_disk_begin(st, arg);
	else
		cfg_fail(st, st->lineno,
			 "unknown section [%s] (want cluster, guest, node NAME or disk NAME)",
			 name);
}

/*
 * fgets() for inih that also counts lines and sees section headers before
 * inih does (inih calls our handler for a line before reading the next).
 */
static char *cfg_reader(char *str, int num, void *stream)
{
	struct cfg_state *st = stream;
	size_t n, skip;
	char *p;

	if (num < 2 || !fgets(str, num, st->f))
		return NULL;
	st->lineno++;
	n = strlen(str);
	/* No newline: either the last line of the file or inih's buffer is full. */
	if (n && str[n - 1] != '\n') {
		int c = getc(st->f);

		if (c != EOF && c != '\n') {
			while (c != EOF && c != '\n')
				c = getc(st->f);
			cfg_fail(st, st->lineno, "line is longer than %d bytes", num - 2);
			str[0] = '\0';
			return str;
		}
	}
	/* Drop a UTF-8 BOM (so we see a header after it) and leading blanks. */
	skip = 0;
	if (st->lineno == 1 && n >= 3 && (unsigned char)str[0] == 0xEF &&
	    (unsigned char)str[1] == 0xBB && (unsigned char)str[2] == 0xBF)
		skip = 3;
	while (str[skip] == ' ' || str[skip] == '\t')
		skip++;
	if (skip)
		memmove(str, str + skip, n - skip + 1);

	if (str[0] == '[' && (p = strchr(str, ']'))) {
		char *rest = p + 1 + strspn(p + 1, " \t\r\n");

		if (*rest && *rest != ';' && *rest != '#') {
			cfg_fail(st, st->lineno, "unexpected text after section header: '%.*s'",
				 (int)strcspn(rest, "\r\n"), rest);
			st->sec = SEC_BAD;
			return str;
		}
		*p = '\0';
		cfg_section_begin(st, str + 1);
		*p = ']';
	} else if (str[0] == '[') {
		st->sec = SEC_BAD; /* inih reports the missing ']' */
	}
	return str;
}

static int cfg_handler(void *user, const char *section, const char *name, const char *value)
{
	struct cfg_state *st = user;
	const struct cfg_key *keys, *k;
	int *seen;

	(void)section; /* inih truncates it to 49 bytes; we track our own */
	switch (st->sec) {
	case SEC_NONE:
		cfg_fail(st, st->lineno, "key '%s' before any [section]", name);
		return 0;
	case SEC_BAD:
		return 1; /* the header's error is already recorded */
	case SEC_CLUSTER:
		keys = cluster_keys;
		seen = st->cluster_keys;
		break;
	case SEC_GUEST:
		keys = guest_keys;
		seen = st->guest_keys;
		break;
	case SEC_NODE:
		keys = node_keys;
		seen = st->node_keys[st->node_idx];
		break;
	case SEC_DISK:
		keys = disk_keys;
		seen = st->disk_keys[st->disk_idx];
		break;
	default:
		return 0;
	}
	for (k = keys; k->name; k++)
		if (!strcmp(k->name, name))
			break;
	if (!k->name) {
		cfg_fail(st, st->lineno, "[%s] unknown key '%s'", st->sec_label, name);
		return 0;
	}
	if (seen[k->slot]) {
		cfg_key_fail(st, name, "set twice (first at line %d)", seen[k->slot]);
		return 0;
	}
	seen[k->slot] = st->lineno;
	return k->set(st, value);
}

/* Checks that need the whole file. */
static void cfg_finish(struct cfg_state *st)
{
	struct hk_config *cfg = st->cfg;
	uint64_t sum = 0;
	unsigned i;

	if (cfg->n_nodes == 0) {
		cfg_fail(st, 0, "%s", "no [node NAME] section; at least one node is required");
		return;
	}
	for (i = 0; i < cfg->n_nodes; i++) {
		if (!cfg->nodes[i].control[0]) {
			cfg_fail(st, st->node_line[i],
				 "[node %s] control: missing (the node's Unix socket path)",
				 cfg->nodes[i].name);
			return;
		}
		if (__builtin_add_overflow(sum, cfg->nodes[i].memory, &sum)) {
			cfg_fail(st, st->node_line[i],
				 "[node %s] memory: total node memory overflows",
				 cfg->nodes[i].name);
			return;
		}
	}
	for (i = 0; i < cfg->n_disks; i++) {
		struct hk_disk_conf *d = &cfg->disks[i];

		if (!st->disk_keys[i][DK_PATH]) {
			cfg_fail(st, st->disk_line[i],
				 "[disk %s] path: missing (the disk's image file or block device)",
				 d->name);
			return;
		}
		if (!st->disk_keys[i][DK_SIZE]) {
			cfg_fail(
			    st, st->disk_line[i],
			    "[disk %s] size: missing (bytes the guest sees, a multiple of 4 KiB)",
			    d->name);
			return;
		}
		/* Nodes may come after the disks that name them. */
		if (d->node[0] && !hk_config_node(cfg, d->node)) {
			cfg_fail(st, st->disk_keys[i][DK_NODE],
				 "[disk %s] node: no [node %s] in this file", d->name, d->node);
			return;
		}
	}
	if (!cfg->guest_memory && sum < HK_GUEST_MEMORY_MIN) {
		char a[32], b[32];

		cfg_fail(st, 0,
			 "guest memory defaults to the sum of node memory, %s, which is below the "
			 "minimum of %s; set [node NAME] memory or [guest] memory",
			 hk_format_size(sum, a, sizeof(a)),
			 hk_format_size(HK_GUEST_MEMORY_MIN, b, sizeof(b)));
		return;
	}
	if (!cfg->cluster_name[0])
		snprintf(cfg->cluster_name, sizeof(cfg->cluster_name), "%s", CFG_DEFAULT_CLUSTER);
	if (!cfg->provider[0])
		snprintf(cfg->provider, sizeof(cfg->provider), "%s", CFG_DEFAULT_PROVIDER);
	if (!cfg->vcpus)
		cfg->vcpus = 1;
	if (!st->guest_keys[GK_REPLICAS])
		cfg->replicas = true;
	for (i = 0; i < cfg->n_disks; i++) {
		struct hk_disk_conf *d = &cfg->disks[i];

		if (!d->node[0])
			snprintf(d->node, sizeof(d->node), "%s", cfg->nodes[0].name);
		if (!d->queue_depth)
			d->queue_depth = HK_DISK_QUEUE_DEPTH_DFLT;
	}
}

static int cfg_dir_of(const char *path, char *dir)
{
	char tmp[PATH_MAX];
	char *slash;

	snprintf(tmp, sizeof(tmp), "%s", path);
	slash = strrchr(tmp, '/');
	if (!slash)
		snprintf(tmp, sizeof(tmp), ".");
	else if (slash == tmp)
		tmp[1] = '\0';
	else
		*slash = '\0';
	return realpath(tmp, dir) ? 0 : -errno;
}

#ifdef HK_INIH_RUNTIME_OPTIONS
/* Debian's libinih makes its line buffer size a global; raise it for the
 * duration of a parse so kernel paths and command lines fit.  Not safe
 * against another thread using inih at the same time; hkd and hkctl load
 * their config once, at start-up. */
static int cfg_parse(struct cfg_state *st)
{
	int saved = ini_max_line, ret;

	if (ini_max_line < CFG_LINE_MAX)
		ini_max_line = CFG_LINE_MAX;
	ret = ini_parse_stream(cfg_reader, st, cfg_handler, st);
	ini_max_line = saved;
	return ret;
}
#else
static int cfg_parse(struct cfg_state *st)
{
	return ini_parse_stream(cfg_reader, st, cfg_handler, st);
}
#endif

int hk_config_load(const char *path, struct hk_config *cfg, char *err, size_t errlen)
{
	struct cfg_state *st;
	int ret;

	if (err && errlen)
		err[0] = '\0';
	memset(cfg, 0, sizeof(*cfg));
	snprintf(cfg->path, sizeof(cfg->path), "%s", path);

	/* ~20 KiB of bookkeeping: keep it off the caller's stack. */
	st = calloc(1, sizeof(*st));
	if (!st) {
		if (err && errlen)
			snprintf(err, errlen, "%s: out of memory", path);
		return -ENOMEM;
	}
	st->cfg = cfg;
	st->err = err;
	st->errlen = errlen;

	st->f = fopen(path, "re");
	if (!st->f) {
		ret = -errno;
		if (err && errlen)
			snprintf(err, errlen, "%s: cannot open: %s", path, strerror(-ret));
		goto out;
	}
	ret = cfg_dir_of(path, st->dir);
	if (ret) {
		if (err && errlen)
			snprintf(err, errlen, "%s: cannot resolve its folder: %s", path,
				 strerror(-ret));
		goto out;
	}

	ret = cfg_parse(st);
	if (ret == -2) {
		cfg_fail(st, 0, "%s", "out of memory");
		st->ret = -ENOMEM;
	} else if (ret > 0 && (!st->ret || ret < st->err_line)) {
		/* inih found a line that is neither "[section]" nor "key = value"
		 * before any error of ours. */
		st->ret = 0;
		cfg_fail(st, ret, "%s", "syntax error: want [section] or key = value");
	} else if (ret < 0 && !st->ret) {
		cfg_fail(st, 0, "%s", "read error");
	}
	if (!st->ret && ferror(st->f))
		cfg_fail(st, 0, "read error: %s", strerror(errno));
	if (!st->ret)
		cfg_finish(st);
	ret = st->ret;
out:
	if (st->f)
		fclose(st->f);
	free(st);
	if (ret)
		memset(cfg, 0, sizeof(*cfg));
	return ret;
}

const struct hk_node_conf *hk_config_node(const struct hk_config *cfg, const char *name)
{
	unsigned i;

	for (i = 0; i < cfg->n_nodes; i++)
		if (!strcmp(cfg->nodes[i].name, name))
			return &cfg->nodes[i];
	return NULL;
}

const struct hk_disk_conf *hk_config_disk(const struct hk_config *cfg, const char *name)
{
	unsigned i;

	for (i = 0; i < cfg->n_disks; i++)
		if (!strcmp(cfg->disks[i].name, name))
			return &cfg->disks[i];
	return NULL;
}

uint64_t hk_config_guest_memory(const struct hk_config *cfg)
{
	uint64_t sum = 0;
	unsigned i;

	if (cfg->guest_memory)
		return cfg->guest_memory;
	for (i = 0; i < cfg->n_nodes; i++)
		sum += cfg->nodes[i].memory;
	return sum;
}
