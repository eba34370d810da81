/*
 * hkctl, the control client.
 *
 *   hkctl [--config FILE] [--node NAME] [--socket PATH] [--json] COMMAND
 *
 * Human output by default, --json for scripts; errors are one line on
 * stderr and a non-zero exit.
 */
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "node.h"

#define DEFAULT_CONFIG "hk-cluster/hk.conf"
#define REPLY_TIMEOUT_S 60

struct opts {
	const char *config;
	const char *node;
	const char *socket;
	bool json;
	/* command arguments */
	const char *kernel;
	const char *cmdline;
	double timeout;
	bool has_timeout;
	char *words[4];
	int nwords;
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: hkctl [--config FILE] [--node NAME] [--socket PATH] [--json] COMMAND\n"
		"\n"
		"commands:\n"
		"  status                                   node, vCPUs, guest memory, guest state\n"
		"  guest start [--kernel FILE] [--cmdline STR]\n"
		"  guest stop\n"
		"  guest console                            what the guest printed so far\n"
		"  guest wait [--timeout SECONDS]           block until the guest ends\n"
		"\n"
		"The daemon is found through --socket, or the control socket of --node (default:\n"
		"the first node) in --config (default: $HK_CONFIG, else " DEFAULT_CONFIG ").\n");
}

static int die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int die(const char *fmt, ...)
{
	va_list ap;

	fputs("hkctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return 1;
}

static int parse_args(int argc, char **argv, struct opts *o)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char **dst = NULL;

		if (!strcmp(a, "--json")) {
			o->json = true;
			continue;
		}
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout);
			exit(0);
		}
		if (!strcmp(a, "--config"))
			dst = &o->config;
		else if (!strcmp(a, "--node"))
			dst = &o->node;
		else if (!strcmp(a, "--socket"))
			dst = &o->socket;
		else if (!strcmp(a, "--kernel"))
			dst = &o->kernel;
		else if (!strcmp(a, "--cmdline"))
			dst = &o->cmdline;
		if (dst || !strcmp(a, "--timeout")) {
			if (i + 1 >= argc)
				return die("%s needs a value", a);
			if (dst) {
				*dst = argv[++i];
				continue;
			}
			char *end;

			errno = 0;
			o->timeout = strtod(argv[++i], &end);
			if (errno || end == argv[i] || *end || o->timeout < 0 || o->timeout > 86400 * 365)
				return die("--timeout: bad value '%s' (seconds)", argv[i]);
			o->has_timeout = true;
			continue;
		}
		if (a[0] == '-')
			return die("unknown option '%s' (see hkctl --help)", a);
		if (o->nwords == 4)
			return die("too many words in command near '%s'", a);
		o->words[o->nwords++] = argv[i];
	}
	if (!o->nwords) {
		usage(stderr);
		return 1;
	}
	return 0;
}

static int resolve_socket(struct opts *o, char *path, size_t len)
{
	static struct hk_config cfg;
	const struct hk_node_conf *n;
	char err[512];

	if (o->socket) {
		snprintf(path, len, "%s", o->socket);
		return 0;
	}
	if (!o->config)
		o->config = getenv("HK_CONFIG") ? getenv("HK_CONFIG") : DEFAULT_CONFIG;
	if (hk_config_load(o->config, &cfg, err, sizeof(err)))
		return die("%s", err);
	n = o->node ? hk_config_node(&cfg, o->node) : &cfg.nodes[0];
	if (!n)
		return die("%s has no [node %s]", o->config, o->node);
	snprintf(path, len, "%s", n->control);
	return 0;
}

/* One request, one reply.  timeout_s 0 = wait as long as it takes. */
static int call(const char *sock, Hk__Ctl__CtlRequest *req, Hk__Ctl__CtlResponse **rsp,
		unsigned timeout_s)
{
	int fd = hk_ctl_connect(sock), ret;

	if (fd < 0)
		return die("cannot reach hkd at %s: %s", sock, strerror(-fd));
	if (timeout_s) {
		struct timeval tv = {.tv_sec = timeout_s};

		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	}
	req->version = HK_CTL_VERSION;
	ret = hk_ctl_call(fd, req, rsp);
	close(fd);
	if (ret != HK_WIRE_OK)
		return die("hkd at %s: %s", sock, hk_wire_strerror(ret));
	if ((*rsp)->error && *(*rsp)->error) {
		die("%s", (*rsp)->error);
		hk__ctl__ctl_response__free_unpacked(*rsp, NULL);
		*rsp = NULL;
		return 1;
	}
	return 0;
}

static const char *state_name(Hk__Ctl__GuestState s)
{
	switch (s) {
	case HK__CTL__GUEST_STATE__GUEST_RUNNING:
		return "running";
	case HK__CTL__GUEST_STATE__GUEST_EXITED:
		return "exited";
	case HK__CTL__GUEST_STATE__GUEST_CRASHED:
		return "crashed";
	case HK__CTL__GUEST_STATE__GUEST_STOPPED:
		return "stopped";
	default:
		return "none";
	}
}

static json_t *guest_json(const Hk__Ctl__GuestInfo *g)
{
	if (!g)
		return json_null();
	return json_pack("{s:s, s:i, s:s, s:s, s:I, s:s}", "state", state_name(g->state),
			 "exit_status", g->exit_status, "kernel", g->kernel, "cmdline", g->cmdline,
			 "runtime_ms", (json_int_t)g->runtime_ms, "reason", g->reason);
}

static void print_json(json_t *j)
{
	char *s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);

	if (s)
		puts(s);
	free(s);
	json_decref(j);
}

static void print_guest(const Hk__Ctl__GuestInfo *g)
{
	if (!g || g->state == HK__CTL__GUEST_STATE__GUEST_NONE) {
		printf("guest         none started\n");
		return;
	}
	printf("guest         %s", state_name(g->state));
	if (g->state == HK__CTL__GUEST_STATE__GUEST_EXITED)
		printf(", status %d", g->exit_status);
	printf(" after %.3f s\n", g->runtime_ms / 1000.0);
	if (*g->reason && g->state != HK__CTL__GUEST_STATE__GUEST_RUNNING)
		printf("reason        %s\n", g->reason);
	printf("kernel        %s\n", g->kernel);
	printf("cmdline       %s\n", g->cmdline);
}

static int cmd_status(const char *sock, struct opts *o)
{
	Hk__Ctl__CtlRequest req = HK__CTL__CTL_REQUEST__INIT;
	Hk__Ctl__StatusRequest sr = HK__CTL__STATUS_REQUEST__INIT;
	Hk__Ctl__CtlResponse *rsp;
	const Hk__Ctl__StatusReply *s;
	char buf[32];

	req.req_case = HK__CTL__CTL_REQUEST__REQ_STATUS;
	req.status = &sr;
	if (call(sock, &req, &rsp, REPLY_TIMEOUT_S))
		return 1;
	if (rsp->rep_case != HK__CTL__CTL_RESPONSE__REP_STATUS) {
		hk__ctl__ctl_response__free_unpacked(rsp, NULL);
		return die("hkd sent an unexpected reply to status");
	}
	s = rsp->status;
	if (o->json) {
		json_t *vcpus = json_array();

		for (unsigned i = 0; i < s->vcpus; i++)
			json_array_append_new(vcpus, json_pack("{s:i, s:s}", "index", i, "node",
							       s->node));
		print_json(json_pack("{s:s, s:s, s:i, s:I, s:i, s:o, s:I, s:o, s:I, s:I, s:I, s:I}",
				     "node", s->node, "cluster", s->cluster, "pid", (int)s->pid,
				     "uptime_ms", (json_int_t)s->uptime_ms, "vcpus", (int)s->vcpus,
				     "vcpu_list", vcpus, "guest_memory", (json_int_t)s->guest_memory,
				     "guest", guest_json(s->guest), "resident_pages",
				     (json_int_t)s->resident_pages, "uffd_faults",
				     (json_int_t)s->uffd_faults, "vcpu_exits",
				     (json_int_t)s->vcpu_exits, "console_bytes",
				     (json_int_t)s->console_bytes));
	} else {
		printf("node          %s (cluster %s, pid %u, up %.1f s)\n", s->node, s->cluster,
		       s->pid, s->uptime_ms / 1000.0);
		printf("vcpus         %u\n", s->vcpus);
		printf("guest memory  %s\n", hk_format_size(s->guest_memory, buf, sizeof(buf)));
		print_guest(s->guest);
		printf("resident      %llu pages (%s)\n", (unsigned long long)s->resident_pages,
		       hk_format_size(s->resident_pages * 4096, buf, sizeof(buf)));
		printf("uffd faults   %llu\n", (unsigned long long)s->uffd_faults);
		printf("vcpu exits    %llu\n", (unsigned long long)s->vcpu_exits);
		printf("console       %llu bytes\n", (unsigned long long)s->console_bytes);
	}
	hk__ctl__ctl_response__free_unpacked(rsp, NULL);
	return 0;
}

static int guest_reply(Hk__Ctl__CtlResponse *rsp, struct opts *o, const char *what)
{
	if (rsp->rep_case != HK__CTL__CTL_RESPONSE__REP_GUEST) {
		hk__ctl__ctl_response__free_unpacked(rsp, NULL);
		return die("hkd sent an unexpected reply to guest %s", what);
	}
	if (o->json)
		print_json(guest_json(rsp->guest));
	else
		print_guest(rsp->guest);
	hk__ctl__ctl_response__free_unpacked(rsp, NULL);
	return 0;
}

static int cmd_guest_start(const char *sock, struct opts *o)
{
	Hk__Ctl__CtlRequest req = HK__CTL__CTL_REQUEST__INIT;
	Hk__Ctl__GuestStartRequest gs = HK__CTL__GUEST_START_REQUEST__INIT;
	Hk__Ctl__CtlResponse *rsp;
	char abs[PATH_MAX];

	/* The daemon has its own working directory: send absolute paths. */
	if (o->kernel) {
		if (!realpath(o->kernel, abs))
			return die("--kernel %s: %s", o->kernel, strerror(errno));
		gs.kernel = abs;
	}
	if (o->cmdline)
		gs.cmdline = (char *)o->cmdline;
	req.req_case = HK__CTL__CTL_REQUEST__REQ_GUEST_START;
	req.guest_start = &gs;
	if (call(sock, &req, &rsp, REPLY_TIMEOUT_S))
		return 1;
	return guest_reply(rsp, o, "start");
}

static int cmd_guest_stop(const char *sock, struct opts *o)
{
	Hk__Ctl__CtlRequest req = HK__CTL__CTL_REQUEST__INIT;
	Hk__Ctl__GuestStopRequest gs = HK__CTL__GUEST_STOP_REQUEST__INIT;
	Hk__Ctl__CtlResponse *rsp;

	req.req_case = HK__CTL__CTL_REQUEST__REQ_GUEST_STOP;
	req.guest_stop = &gs;
	if (call(sock, &req, &rsp, REPLY_TIMEOUT_S))
		return 1;
	return guest_reply(rsp, o, "stop");
}

static int cmd_guest_console(const char *sock, struct opts *o)
{
	Hk__Ctl__CtlRequest req = HK__CTL__CTL_REQUEST__INIT;
	Hk__Ctl__GuestConsoleRequest gc = HK__CTL__GUEST_CONSOLE_REQUEST__INIT;
	Hk__Ctl__CtlResponse *rsp;
	const Hk__Ctl__ConsoleReply *c;

	req.req_case = HK__CTL__CTL_REQUEST__REQ_GUEST_CONSOLE;
	req.guest_console = &gc;
	if (call(sock, &req, &rsp, REPLY_TIMEOUT_S))
		return 1;
	if (rsp->rep_case != HK__CTL__CTL_RESPONSE__REP_CONSOLE) {
		hk__ctl__ctl_response__free_unpacked(rsp, NULL);
		return die("hkd sent an unexpected reply to guest console");
	}
	c = rsp->console;
	if (o->json) {
		print_json(json_pack("{s:I, s:I, s:s%}", "offset", (json_int_t)c->offset, "total",
				     (json_int_t)c->total, "data", (const char *)c->data.data,
				     c->data.len));
	} else {
		if (c->offset)
			fprintf(stderr, "hkctl: (first %llu bytes no longer kept)\n",
				(unsigned long long)c->offset);
		fwrite(c->data.data, 1, c->data.len, stdout);
	}
	hk__ctl__ctl_response__free_unpacked(rsp, NULL);
	return 0;
}

static int cmd_guest_wait(const char *sock, struct opts *o)
{
	Hk__Ctl__CtlRequest req = HK__CTL__CTL_REQUEST__INIT;
	Hk__Ctl__GuestWaitRequest gw = HK__CTL__GUEST_WAIT_REQUEST__INIT;
	Hk__Ctl__CtlResponse *rsp;
	const Hk__Ctl__WaitReply *w;
	int ret = 0;

	if (o->has_timeout)
		gw.timeout_ms = o->timeout * 1000 < 1 ? 1 : (uint32_t)(o->timeout * 1000);
	req.req_case = HK__CTL__CTL_REQUEST__REQ_GUEST_WAIT;
	req.guest_wait = &gw;
	if (call(sock, &req, &rsp, o->has_timeout ? (unsigned)o->timeout + REPLY_TIMEOUT_S : 0))
		return 1;
	if (rsp->rep_case != HK__CTL__CTL_RESPONSE__REP_WAIT) {
		hk__ctl__ctl_response__free_unpacked(rsp, NULL);
		return die("hkd sent an unexpected reply to guest wait");
	}
	w = rsp->wait;
	if (o->json) {
		print_json(json_pack("{s:b, s:o}", "timed_out", w->timed_out, "guest",
				     guest_json(w->guest)));
	} else {
		print_guest(w->guest);
	}
	if (w->timed_out)
		ret = die("guest wait: timed out after %g s; the guest is still running", o->timeout);
	hk__ctl__ctl_response__free_unpacked(rsp, NULL);
	return ret;
}

int main(int argc, char **argv)
{
	struct opts o = {0};
	char sock[108];

	if (parse_args(argc, argv, &o))
		return 1;
	if (!strcmp(o.words[0], "status") && o.nwords == 1) {
		if (resolve_socket(&o, sock, sizeof(sock)))
			return 1;
		return cmd_status(sock, &o);
	}
	if (!strcmp(o.words[0], "guest") && o.nwords == 2) {
		static const struct {
			const char *name;
			int (*fn)(const char *, struct opts *);
		} sub[] = {
			{"start", cmd_guest_start},
			{"stop", cmd_guest_stop},
			{"console", cmd_guest_console},
			{"wait", cmd_guest_wait},
		};

		for (size_t i = 0; i < sizeof(sub) / sizeof(sub[0]); i++) {
			if (strcmp(o.words[1], sub[i].name))
				continue;
			if (resolve_socket(&o, sock, sizeof(sock)))
				return 1;
			return sub[i].fn(sock, &o);
		}
	}
	return die("unknown command '%s%s%s' (see hkctl --help)", o.words[0], o.nwords > 1 ? " " : "",
		   o.nwords > 1 ? o.words[1] : "");
}
