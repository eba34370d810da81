/* hkctl status and hkctl guest ...: one node's guest. */
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
	return json_pack("{s:s, s:i, s:s, s:s, s:I, s:s}", "state", hkctl_state_name(g->state),
			 "exit_status", g->exit_status, "kernel", g->kernel, "cmdline", g->cmdline,
			 "runtime_ms", (json_int_t)g->runtime_ms, "reason", g->reason);
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
	printf("kernel        %s\n", g->kernel);
	printf("cmdline       %s\n", g->cmdline);
}

int hkctl_status(struct hkctl *c)
{
	Hk__Ctl__CtlRequest req = HK__CTL__CTL_REQUEST__INIT;
	Hk__Ctl__StatusRequest sr = HK__CTL__STATUS_REQUEST__INIT;
	Hk__Ctl__CtlResponse *rsp;
	const Hk__Ctl__StatusReply *s;
	char buf[32], buf2[32];

	req.req_case = HK__CTL__CTL_REQUEST__REQ_STATUS;
	req.status = &sr;
	if (hkctl_call(c, &req, &rsp, HKCTL_REPLY_TIMEOUT_S))
		return 1;
	if (rsp->rep_case != HK__CTL__CTL_RESPONSE__REP_STATUS) {
		hk__ctl__ctl_response__free_unpacked(rsp, NULL);
		return hkctl_die("hkd sent an unexpected reply to status");
	}
	s = rsp->status;
	if (c->json) {
		json_t *vcpus = json_array(), *disks = json_array(), *j;

		for (unsigned i = 0; i < s->vcpus; i++)
			json_array_append_new(vcpus, json_pack("{s:i, s:s}", "index", i, "node",
							       s->node));
		for (size_t i = 0; i < s->n_disks; i++) {
			const Hk__Ctl__DiskInfo *di = s->disks[i];

			json_array_append_new(disks,
					      json_pack("{s:s, s:s, s:I, s:i, s:b, s:s}", "name", di->name,
							"path", di->path, "size", (json_int_t)di->size,
							"id", (int)di->id, "direct", di->direct,
							"backend", di->backend));
		}
		j = json_pack("{s:s, s:s, s:i, s:I, s:i, s:o, s:I, s:o, s:I, s:I, s:I, s:I}", "node",
			      s->node, "cluster", s->cluster, "pid", (int)s->pid, "uptime_ms",
			      (json_int_t)s->uptime_ms, "vcpus", (int)s->vcpus, "vcpu_list", vcpus,
			      "guest_memory", (json_int_t)s->guest_memory, "guest",
			      hkctl_guest_json(s->guest), "resident_pages",
			      (json_int_t)s->resident_pages, "uffd_faults", (json_int_t)s->uffd_faults,
			      "vcpu_exits", (json_int_t)s->vcpu_exits, "console_bytes",
			      (json_int_t)s->console_bytes);
		json_object_set_new(j, "disks", disks);
		json_object_set_new(j, "replicas_enabled", json_boolean(s->replicas_enabled));
		json_object_set_new(j, "tsc_khz", json_integer((json_int_t)s->tsc_khz));
		json_object_set_new(j, "bytes_from_disk", json_integer((json_int_t)s->bytes_from_disk));
		json_object_set_new(j, "bytes_from_replicas",
				    json_integer((json_int_t)s->bytes_from_replicas));
		json_object_set_new(j, "wp_faults", json_integer((json_int_t)s->wp_faults));
		json_object_set_new(j, "kept_pages", json_integer((json_int_t)s->kept_pages));
		hkctl_print_json(j);
	} else {
		printf("node          %s (cluster %s, pid %u, up %.1f s)\n", s->node, s->cluster,
		       s->pid, s->uptime_ms / 1000.0);
		printf("vcpus         %u\n", s->vcpus);
		printf("guest memory  %s\n", hk_format_size(s->guest_memory, buf, sizeof(buf)));
		hkctl_print_guest(s->guest);
		printf("resident      %llu pages (%s)\n", (unsigned long long)s->resident_pages,
		       hk_format_size(s->resident_pages * 4096, buf, sizeof(buf)));
		printf("uffd faults   %llu\n", (unsigned long long)s->uffd_faults);
		printf("vcpu exits    %llu\n", (unsigned long long)s->vcpu_exits);
		printf("console       %llu bytes\n", (unsigned long long)s->console_bytes);
		printf("replicas      %s; guest reads %s from disk, %s from replicas\n",
		       s->replicas_enabled ? "on" : "off",
		       hk_format_size(s->bytes_from_disk, buf, sizeof(buf)),
		       hk_format_size(s->bytes_from_replicas, buf2, sizeof(buf2)));
		for (size_t i = 0; i < s->n_disks; i++)
			printf("disk %-8s %s, %s, %s%s\n", s->disks[i]->name, s->disks[i]->path,
			       hk_format_size(s->disks[i]->size, buf, sizeof(buf)),
			       s->disks[i]->backend, s->disks[i]->direct ? ", O_DIRECT" : "");
	}
	hk__ctl__ctl_response__free_unpacked(rsp, NULL);
	return 0;
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

