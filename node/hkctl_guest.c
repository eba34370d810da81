/* hkctl guest ...: one node's guest (hkctl status is in hkctl_status.c). */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hkctl.h"

const char *hkctl_state_name(Hk__Ctl__GuestState s)
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

json_t *hkctl_guest_json(const Hk__Ctl__GuestInfo *g)
{
	if (!g)
		return json_null();
	return json_pack("{s:s, s:i, s:s, s:s, s:I, s:s, s:s}", "state", hkctl_state_name(g->state),
			 "exit_status", g->exit_status, "kernel", g->kernel, "cmdline", g->cmdline,
			 "runtime_ms", (json_int_t)g->runtime_ms, "reason", g->reason,
			 "last_console_line", g->last_console_line);
}

void hkctl_print_json(json_t *j)
{
	char *s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);

	if (s)
		puts(s);
	free(s);
	json_decref(j);
}

void hkctl_print_guest(const Hk__Ctl__GuestInfo *g)
{
	if (g && g->state == HK__CTL__GUEST_STATE__GUEST_NONE && *g->reason) {
		/* a pooled start waiting for every node: no VM yet */
		printf("guest         none yet\n");
		printf("reason        %s\n", g->reason);
		printf("kernel        %s\n", g->kernel);
		printf("cmdline       %s\n", g->cmdline);
		return;
	}
	if (!g || g->state == HK__CTL__GUEST_STATE__GUEST_NONE) {
		printf("guest         none started\n");
		return;
	}
	printf("guest         %s", hkctl_state_name(g->state));
	if (g->state == HK__CTL__GUEST_STATE__GUEST_EXITED)
		printf(", status %d", g->exit_status);
	printf(" after %.3f s\n", g->runtime_ms / 1000.0);
	if (*g->reason && g->state != HK__CTL__GUEST_STATE__GUEST_RUNNING)
		printf("reason        %s\n", g->reason);
	if (*g->last_console_line && g->state != HK__CTL__GUEST_STATE__GUEST_RUNNING)
		printf("last line     %s\n", g->last_console_line);
	printf("kernel        %s\n", g->kernel);
	printf("cmdline       %s\n", g->cmdline);
}

const char *hkctl_guest_end(const Hk__Ctl__GuestInfo *g, char *buf, size_t len)
{
	char status[32] = "";

	if (!g) {
		snprintf(buf, len, "no guest");
		return buf;
	}
	if (g->state == HK__CTL__GUEST_STATE__GUEST_EXITED)
		snprintf(status, sizeof(status), " with status %d", g->exit_status);
	snprintf(buf, len, "%s%s%s%s%s after %.3f s; last console line: '%s'",
		 hkctl_state_name(g->state), status, *g->reason ? " (" : "", g->reason,
		 *g->reason ? ")" : "", g->runtime_ms / 1000.0, g->last_console_line);
	return buf;
}

/* start, stop and reboot: one request, the guest's state as the reply. */
static int guest_request(struct hkctl *c, Hk__Ctl__CtlRequest *req, const char *what)
{
	Hk__Ctl__CtlResponse *rsp;

	if (hkctl_call(c, req, &rsp, HKCTL_REPLY_TIMEOUT_S))
		return 1;
	if (rsp->rep_case != HK__CTL__CTL_RESPONSE__REP_GUEST) {
		hk__ctl__ctl_response__free_unpacked(rsp, NULL);
		return hkctl_die("hkd sent an unexpected reply to guest %s", what);
	}
	if (c->json)
		hkctl_print_json(hkctl_guest_json(rsp->guest));
	else
		hkctl_print_guest(rsp->guest);
	hk__ctl__ctl_response__free_unpacked(rsp, NULL);
	return 0;
}

int hkctl_guest_start(struct hkctl *c)
{
	Hk__Ctl__CtlRequest req = HK__CTL__CTL_REQUEST__INIT;
	Hk__Ctl__GuestStartRequest gs = HK__CTL__GUEST_START_REQUEST__INIT;
	char abs[PATH_MAX];

	/* The daemon has its own working directory: send absolute paths. */
	if (c->val[OPT_KERNEL]) {
		if (!realpath(c->val[OPT_KERNEL], abs))
			return hkctl_die("--kernel %s: %s", c->val[OPT_KERNEL], strerror(errno));
		gs.kernel = abs;
	}
	if (c->val[OPT_CMDLINE])
		gs.cmdline = (char *)c->val[OPT_CMDLINE];
	req.req_case = HK__CTL__CTL_REQUEST__REQ_GUEST_START;
	req.guest_start = &gs;
	return guest_request(c, &req, "start");
}

int hkctl_guest_reboot(struct hkctl *c)
{
	Hk__Ctl__CtlRequest req = HK__CTL__CTL_REQUEST__INIT;
	Hk__Ctl__GuestRebootRequest gr = HK__CTL__GUEST_REBOOT_REQUEST__INIT;

	req.req_case = HK__CTL__CTL_REQUEST__REQ_GUEST_REBOOT;
	req.guest_reboot = &gr;
	return guest_request(c, &req, "reboot");
}

int hkctl_guest_stop(struct hkctl *c)
{
	Hk__Ctl__CtlRequest req = HK__CTL__CTL_REQUEST__INIT;
	Hk__Ctl__GuestStopRequest gs = HK__CTL__GUEST_STOP_REQUEST__INIT;

	req.req_case = HK__CTL__CTL_REQUEST__REQ_GUEST_STOP;
	req.guest_stop = &gs;
	return guest_request(c, &req, "stop");
}

int hkctl_guest_console(struct hkctl *c)
{
	Hk__Ctl__CtlRequest req = HK__CTL__CTL_REQUEST__INIT;
	Hk__Ctl__GuestConsoleRequest gc = HK__CTL__GUEST_CONSOLE_REQUEST__INIT;
	Hk__Ctl__CtlResponse *rsp;
	const Hk__Ctl__ConsoleReply *con;

	req.req_case = HK__CTL__CTL_REQUEST__REQ_GUEST_CONSOLE;
	req.guest_console = &gc;
	if (hkctl_call(c, &req, &rsp, HKCTL_REPLY_TIMEOUT_S))
		return 1;
	if (rsp->rep_case != HK__CTL__CTL_RESPONSE__REP_CONSOLE) {
		hk__ctl__ctl_response__free_unpacked(rsp, NULL);
		return hkctl_die("hkd sent an unexpected reply to guest console");
	}
	con = rsp->console;
	if (c->json) {
		hkctl_print_json(json_pack("{s:I, s:I, s:s%}", "offset", (json_int_t)con->offset,
					   "total", (json_int_t)con->total, "data",
					   (const char *)con->data.data, con->data.len));
	} else {
		if (con->offset)
			fprintf(stderr, "hkctl: (first %llu bytes no longer kept)\n",
				(unsigned long long)con->offset);
		fwrite(con->data.data, 1, con->data.len, stdout);
	}
	hk__ctl__ctl_response__free_unpacked(rsp, NULL);
	return 0;
}

int hkctl_guest_wait(struct hkctl *c)
{
	Hk__Ctl__CtlRequest req = HK__CTL__CTL_REQUEST__INIT;
	Hk__Ctl__GuestWaitRequest gw = HK__CTL__GUEST_WAIT_REQUEST__INIT;
	Hk__Ctl__CtlResponse *rsp;
	const Hk__Ctl__WaitReply *w;
	int ret = 0;

	double timeout;
	bool has_timeout;

	if (hkctl_opt_seconds(c, OPT_TIMEOUT, &timeout, &has_timeout))
		return 1;
	if (has_timeout)
		gw.timeout_ms = timeout * 1000 < 1 ? 1 : (uint32_t)(timeout * 1000);
	req.req_case = HK__CTL__CTL_REQUEST__REQ_GUEST_WAIT;
	req.guest_wait = &gw;
	if (hkctl_call(c, &req, &rsp, has_timeout ? (unsigned)timeout + HKCTL_REPLY_TIMEOUT_S : 0))
		return 1;
	if (rsp->rep_case != HK__CTL__CTL_RESPONSE__REP_WAIT) {
		hk__ctl__ctl_response__free_unpacked(rsp, NULL);
		return hkctl_die("hkd sent an unexpected reply to guest wait");
	}
	w = rsp->wait;
	if (c->json) {
		hkctl_print_json(json_pack("{s:b, s:o}", "timed_out", w->timed_out, "guest",
				     hkctl_guest_json(w->guest)));
	} else {
		hkctl_print_guest(w->guest);
	}
	if (w->timed_out)
		ret = hkctl_die("guest wait: timed out after %g s; the guest is still running", timeout);
	hk__ctl__ctl_response__free_unpacked(rsp, NULL);
	return ret;
}

