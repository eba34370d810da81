/*
 * hkctl, the control client.
 *
 *   hkctl [--config FILE] [--node NAME] [--socket PATH] [--json] COMMAND ...
 *
 * Human output by default, --json for scripts; errors are one line on
 * stderr and a non-zero exit.  Options may appear anywhere; an option a
 * command does not take is an error, not silently ignored.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "hkctl.h"

#define DEFAULT_CONFIG "hk-cluster/hk.conf"

const char *const hkctl_opt_names[OPT_MAX] = {
	[OPT_CONFIG] = "--config",   [OPT_NODE] = "--node",	    [OPT_SOCKET] = "--socket",
	[OPT_KERNEL] = "--kernel",   [OPT_CMDLINE] = "--cmdline", [OPT_TIMEOUT] = "--timeout",
	[OPT_DISK] = "--disk",	     [OPT_SIZE] = "--size",	    [OPT_SEED] = "--seed",
	[OPT_GPA] = "--gpa",	     [OPT_LIMIT] = "--limit",	    [OPT_MODE] = "--mode",
	[OPT_DATA_SIZE] = "--data-size", [OPT_OPS] = "--ops",
	[OPT_INTERVAL] = "--interval", [OPT_COUNT] = "--count",
};

#define O(x) (1u << (x))
#define GLOBAL (O(OPT_CONFIG) | O(OPT_NODE) | O(OPT_SOCKET))

static const struct command {
	const char *w0, *w1;
	int (*fn)(struct hkctl *c);
	unsigned opts; /* besides GLOBAL */
	bool force;    /* takes --force */
	const char *help;
} commands[] = {
	{"status", NULL, hkctl_status, 0, false,
	 "node, vCPUs, memory, disks, guest, counters (every node of the config)"},
	{"nodes", NULL, hkctl_nodes, 0, false, "cluster members: up or down, last heard, RTT"},
	{"top", NULL, hkctl_top, O(OPT_INTERVAL) | O(OPT_COUNT), false,
	 "[--interval MS] [--count N]  live per-node view"},
	{"guest", "start", hkctl_guest_start, O(OPT_KERNEL) | O(OPT_CMDLINE), false,
	 "[--kernel FILE] [--cmdline STR]"},
	{"guest", "stop", hkctl_guest_stop, 0, false, "stop every vCPU; the guest can be inspected"},
	{"guest", "reboot", hkctl_guest_reboot, 0, false, "restart the guest, keeping replica frames"},
	{"guest", "console", hkctl_guest_console, 0, false, "what the guest printed so far"},
	{"guest", "wait", hkctl_guest_wait, O(OPT_TIMEOUT), false,
	 "[--timeout SECONDS]  block until the guest ends"},
	{"replica", "show", hkctl_replica_show, O(OPT_DISK) | O(OPT_GPA) | O(OPT_LIMIT), false,
	 "[--disk D] [--gpa A-B] [--limit N]"},
	{"replica", "stats", hkctl_replica_stats, 0, false, "entries, extents, bytes, hits, misses"},
	{"replica", "verify", hkctl_replica_verify, 0, false,
	 "compare every replica frame with its disk block"},
	{"disk", "mkdata", hkctl_disk_mkdata, O(OPT_DISK) | O(OPT_SIZE) | O(OPT_SEED), true,
	 "--disk D --size SIZE [--seed N] [--force]  write a kvdb data set"},
	{"drill", "restart", hkctl_drill_restart,
	 O(OPT_MODE) | O(OPT_DATA_SIZE) | O(OPT_DISK) | O(OPT_SEED) | O(OPT_OPS) | O(OPT_TIMEOUT),
	 false, "--mode guest [--data-size SIZE] [--disk D] [--ops N]"},
};

static void usage(FILE *f)
{
	fprintf(f, "usage: hkctl [--config FILE] [--node NAME] [--socket PATH] [--json] COMMAND\n\n"
		   "commands:\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		char name[32];

		snprintf(name, sizeof(name), "%s%s%s", commands[i].w0, commands[i].w1 ? " " : "",
			 commands[i].w1 ? commands[i].w1 : "");
		fprintf(f, "  %-16s %s\n", name, commands[i].help);
	}
	fprintf(f, "\nThe daemon is found through --socket, or the control socket of --node (default:\n"
		   "the first node) in --config (default: $HK_CONFIG, else " DEFAULT_CONFIG ");\n"
		   "status, top and replica ask every node of the config unless --node or\n"
		   "--socket is given.\n"
		   "--json prints one JSON object on stdout.  See docs/hkctl.md.\n");
}

int hkctl_die(const char *fmt, ...)
{
	va_list ap;

	fputs("hkctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return 1;
}

static int parse_args(int argc, char **argv, struct hkctl *c)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		int o;

		if (!strcmp(a, "--json")) {
			c->json = true;
			continue;
		}
		if (!strcmp(a, "--force")) {
			c->force = true;
			continue;
		}
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout);
			exit(0);
		}
		for (o = 0; o < OPT_MAX; o++)
			if (!strcmp(a, hkctl_opt_names[o]))
				break;
		if (o < OPT_MAX) {
			if (i + 1 >= argc)
				return hkctl_die("%s needs a value", a);
			c->val[o] = argv[++i];
			continue;
		}
		if (a[0] == '-')
			return hkctl_die("unknown option '%s' (see hkctl --help)", a);
		if (c->nwords == 4)
			return hkctl_die("too many words in command near '%s'", a);
		c->words[c->nwords++] = argv[i];
	}
	if (!c->nwords) {
		usage(stderr);
		return 1;
	}
	return 0;
}

static int resolve_socket(struct hkctl *c)
{
	static struct hk_config cfg;
	const struct hk_node_conf *n;
	const char *path = c->val[OPT_CONFIG];
	char err[512];

	if (c->val[OPT_SOCKET]) {
		snprintf(c->sock, sizeof(c->sock), "%s", c->val[OPT_SOCKET]);
		return 0;
	}
	if (!path)
		path = getenv("HK_CONFIG") ? getenv("HK_CONFIG") : DEFAULT_CONFIG;
	if (hk_config_load(path, &cfg, err, sizeof(err)))
		return hkctl_die("%s", err);
	n = c->val[OPT_NODE] ? hk_config_node(&cfg, c->val[OPT_NODE]) : &cfg.nodes[0];
	if (!n) {
		char names[256] = "";
		size_t len = 0;

		for (unsigned i = 0; i < cfg.n_nodes && len < sizeof(names); i++)
			len += snprintf(names + len, sizeof(names) - len, "%s%s", i ? ", " : "",
					cfg.nodes[i].name);
		return hkctl_die("%s has no [node %s] (nodes: %s)", path, c->val[OPT_NODE], names);
	}
	snprintf(c->sock, sizeof(c->sock), "%s", n->control);
	c->cfg = &cfg;
	return 0;
}

int hkctl_disk_socket(struct hkctl *c, const char *disk, char *sock, size_t len)
{
	const struct hk_disk_conf *d;
	const struct hk_node_conf *n;

	if (c->val[OPT_SOCKET] || c->val[OPT_NODE] || !c->cfg) {
		snprintf(sock, len, "%s", c->sock);
		return 0;
	}
	d = hk_config_disk(c->cfg, disk);
	if (!d)
		return hkctl_die("--disk: %s has no [disk %s]", c->cfg->path, disk);
	n = hk_config_node(c->cfg, d->node); /* the loader checked the name, set the default */
	snprintf(sock, len, "%s", n ? n->control : c->sock);
	return 0;
}

int hkctl_usage_error(const char *fmt, ...)
{
	va_list ap;

	fputs("hkctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return 2;
}

int hkctl_call_at(const char *sock, Hk__Ctl__CtlRequest *req, Hk__Ctl__CtlResponse **rsp,
		  unsigned timeout_s, char *err, size_t errlen)
{
	int fd = hk_ctl_connect(sock), ret;

	*rsp = NULL;
	if (fd < 0) {
		snprintf(err, errlen, "cannot reach hkd at %s: %s", sock, strerror(-fd));
		return -1;
	}
	if (timeout_s) {
		struct timeval tv = {.tv_sec = timeout_s};

		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	}
	req->version = HK_CTL_VERSION;
	ret = hk_ctl_call(fd, req, rsp);
	if (ret == HK_WIRE_IO && (errno == EAGAIN || errno == EWOULDBLOCK) && timeout_s)
		snprintf(err, errlen, "hkd at %s: no reply within %u s", sock, timeout_s);
	else if (ret == HK_WIRE_EOF || ret == HK_WIRE_TRUNCATED ||
		 (ret == HK_WIRE_IO && errno == ECONNRESET))
		/* The kernel closes a dead daemon's end: a wait without a
		 * timeout ends here, not never. */
		snprintf(err, errlen,
			 "hkd at %s closed the connection before replying (%s): "
			 "did it exit or crash?",
			 sock, hk_wire_strerror(ret));
	else if (ret != HK_WIRE_OK)
		snprintf(err, errlen, "hkd at %s: %s", sock, hk_wire_strerror(ret));
	close(fd);
	if (ret != HK_WIRE_OK)
		return -1;
	if ((*rsp)->error && *(*rsp)->error) {
		snprintf(err, errlen, "%s", (*rsp)->error);
		hk__ctl__ctl_response__free_unpacked(*rsp, NULL);
		*rsp = NULL;
		return -1;
	}
	return 0;
}

int hkctl_call(struct hkctl *c, Hk__Ctl__CtlRequest *req, Hk__Ctl__CtlResponse **rsp,
	       unsigned timeout_s)
{
	char err[768];

	if (hkctl_call_at(c->sock, req, rsp, timeout_s, err, sizeof(err)))
		return hkctl_die("%s", err);
	return 0;
}

int hkctl_opt_size(struct hkctl *c, enum hkctl_opt o, uint64_t def, uint64_t *out)
{
	*out = def;
	if (c->val[o] && hk_parse_size(c->val[o], out))
		return hkctl_die("%s: bad size '%s'", hkctl_opt_names[o], c->val[o]);
	return 0;
}

int hkctl_opt_uint(struct hkctl *c, enum hkctl_opt o, uint64_t def, uint64_t max, uint64_t *out)
{
	char *end;

	*out = def;
	if (!c->val[o])
		return 0;
	errno = 0;
	*out = strtoull(c->val[o], &end, 0);
	if (errno || end == c->val[o] || *end || c->val[o][0] == '-' || *out > max)
		return hkctl_die("%s: bad number '%s' (0 to %llu)", hkctl_opt_names[o], c->val[o],
				 (unsigned long long)max);
	return 0;
}

int hkctl_opt_seconds(struct hkctl *c, enum hkctl_opt o, double *out, bool *given)
{
	char *end;

	*given = c->val[o] != NULL;
	*out = 0;
	if (!*given)
		return 0;
	errno = 0;
	*out = strtod(c->val[o], &end);
	if (errno || end == c->val[o] || *end || *out < 0 || *out > 86400.0 * 365)
		return hkctl_die("%s: bad value '%s' (seconds)", hkctl_opt_names[o], c->val[o]);
	return 0;
}

int main(int argc, char **argv)
{
	struct hkctl c = {0};

	if (parse_args(argc, argv, &c))
		return 1;
	/* One-word commands take no further words: a usage error, not an
	 * unknown command ("hkctl nodes extra"). */
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (!commands[i].w1 && !strcmp(c.words[0], commands[i].w0) && c.nwords > 1)
			return hkctl_usage_error("'%s' takes no arguments, not '%s' (see hkctl --help)",
						 commands[i].w0, c.words[1]);
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		const struct command *cmd = &commands[i];

		if (strcmp(c.words[0], cmd->w0) || (cmd->w1 ? c.nwords != 2 : c.nwords != 1) ||
		    (cmd->w1 && strcmp(c.words[1], cmd->w1)))
			continue;
		for (int o = 0; o < OPT_MAX; o++)
			if (c.val[o] && !((GLOBAL | cmd->opts) & O(o)))
				return hkctl_die("%s does not apply to '%s%s%s'", hkctl_opt_names[o],
						 cmd->w0, cmd->w1 ? " " : "", cmd->w1 ? cmd->w1 : "");
		if (c.force && !cmd->force)
			return hkctl_die("--force does not apply to '%s %s'", cmd->w0,
					 cmd->w1 ? cmd->w1 : "");
		if (resolve_socket(&c))
			return 1;
		return cmd->fn(&c);
	}
	return hkctl_die("unknown command '%s%s%s' (see hkctl --help)", c.words[0],
			 c.nwords > 1 ? " " : "", c.nwords > 1 ? c.words[1] : "");
}
