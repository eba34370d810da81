/*
 * hkd as a daemon driven by hkctl, both real processes: the control
 * socket, status JSON, bad input on every door, and a clean shutdown.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <linux/kvm.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "hk_test.h"
#include "hyperkernel.h"
#include "node.h"

static struct hk_daemon_fixture fx;

static void write_config(const char *extra_guest)
{
	FILE *f = fopen(fx.conf, "w");

	cr_assert_not_null(f);
	fprintf(f,
		"[cluster]\nname = testc\n\n"
		"[guest]\nkernel = %s\ncmdline = memtest size=64M\nmemory = 1G\nvcpus = 2\n%s\n"
		"[node n1]\naddress = 127.0.0.1:17001\nmemory = 1G\ncontrol = %s\n",
		getenv("HK_GUESTOS"), extra_guest, fx.sock);
	fclose(f);
}

static void setup(void)
{
	cr_assert(hk_fixture_init(&fx, "daemon"), "mkdtemp: %s", strerror(errno));
	write_config("");
	cr_assert(hk_fixture_start(&fx), "hkd did not open %s", fx.sock);
}

static void teardown(void)
{
	hk_fixture_cleanup(&fx);
}

TestSuite(daemon, .init = setup, .fini = teardown);

static void ctl(struct hk_proc_result *r, const char *a1, const char *a2, const char *a3,
		const char *a4)
{
	char *argv[10] = {fx.hkctl, "--config", fx.conf};
	int n = 3;

	for (const char *a[] = {a1, a2, a3, a4}, **p = a; p < a + 4; p++)
		if (*p)
			argv[n++] = (char *)*p;
	argv[n] = NULL;
	hk_run(argv, 200, r);
}

static void assert_alive(void)
{
	struct hk_proc_result r;

	ctl(&r, "status", NULL, NULL, NULL);
	cr_assert_eq(r.status, 0, "daemon stopped answering: %s", r.err);
	hk_proc_result_free(&r);
}

Test(daemon, socket_is_private)
{
	struct stat st;

	cr_assert_eq(stat(fx.sock, &st), 0);
	cr_assert(S_ISSOCK(st.st_mode));
	cr_assert_eq(st.st_mode & 0777, 0600, "mode %o", st.st_mode & 0777);
}

Test(daemon, status_json_names_node_vcpus_memory)
{
	struct hk_proc_result r;
	json_error_t je;
	json_t *j;

	ctl(&r, "status", "--json", NULL, NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	j = json_loads(r.out, 0, &je);
	cr_assert_not_null(j, "not JSON (%s): %s", je.text, r.out);
	cr_assert_str_eq(json_string_value(json_object_get(j, "node")), "n1");
	cr_assert_str_eq(json_string_value(json_object_get(j, "cluster")), "testc");
	cr_assert_eq(json_integer_value(json_object_get(j, "vcpus")), 2);
	cr_assert_eq(json_array_size(json_object_get(j, "vcpu_list")), 2);
	cr_assert_eq(json_integer_value(json_object_get(j, "guest_memory")), 1ll << 30);
	cr_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "guest"), "state")),
			 "none");
	json_decref(j);
	hk_proc_result_free(&r);
}

Test(daemon, status_human)
{
	struct hk_proc_result r;

	ctl(&r, "status", NULL, NULL, NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_assert(strstr(r.out, "n1"), "%s", r.out);
	cr_assert(strstr(r.out, "1.00 GiB") || strstr(r.out, "1 GiB"), "%s", r.out);
	hk_proc_result_free(&r);
}

Test(daemon, one_gib_length_prefix_is_refused_and_daemon_survives)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	uint32_t len = htonl(1u << 30);
	Hk__Ctl__CtlResponse *rsp = NULL;

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", fx.sock);
	cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	cr_assert_eq(write(fd, &len, 4), 4);
	cr_assert_eq(hk_wire_recv_response(fd, &rsp), HK_WIRE_OK, "no error reply");
	cr_assert(strstr(rsp->error, "1073741824"), "error: '%s'", rsp->error);
	hk__ctl__ctl_response__free_unpacked(rsp, NULL);
	close(fd);
	assert_alive();
}

Test(daemon, garbage_frame_is_refused_and_daemon_survives)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0x02};

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", fx.sock);
	cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	cr_assert_eq(hk_wire_write_frame(fd, junk, sizeof(junk)), HK_WIRE_OK);
	close(fd);
	assert_alive();
}

Test(daemon, malformed_kernel_is_refused_and_daemon_survives)
{
	static const char junk[] = "not an elf at all";
	char *path = hk_write_temp("junk", junk, sizeof(junk));
	struct hk_proc_result r;

	ctl(&r, "guest", "start", "--kernel", path);
	unlink(path);
	free(path);
	cr_assert_eq(r.status, 1);
	cr_assert(strstr(r.err, "not an ELF"), "stderr: %s", r.err);
	cr_assert_eq(hk_lines(r.err), 1, "stderr: %s", r.err);
	hk_proc_result_free(&r);
	assert_alive();
}

Test(daemon, wait_and_stop_without_guest_are_errors)
{
	struct hk_proc_result r;

	ctl(&r, "guest", "wait", NULL, NULL);
	cr_assert_eq(r.status, 1);
	cr_assert(strstr(r.err, "no guest"), "%s", r.err);
	hk_proc_result_free(&r);
	ctl(&r, "guest", "stop", NULL, NULL);
	cr_assert_eq(r.status, 1);
	hk_proc_result_free(&r);
}

Test(daemon, unknown_command_and_option)
{
	struct hk_proc_result r;

	ctl(&r, "guest", "dance", NULL, NULL);
	cr_assert_eq(r.status, 1);
	cr_assert(strstr(r.err, "unknown command"), "%s", r.err);
	hk_proc_result_free(&r);
	ctl(&r, "status", "--frobnicate", NULL, NULL);
	cr_assert_eq(r.status, 1);
	cr_assert(strstr(r.err, "--frobnicate"), "%s", r.err);
	hk_proc_result_free(&r);
}

Test(daemon, hkctl_without_daemon_is_a_clear_error)
{
	char *argv[] = {fx.hkctl, "--socket", "/tmp/hk-no-such.sock", "status", NULL};
	struct hk_proc_result r;

	hk_run(argv, 30, &r);
	cr_assert_eq(r.status, 1);
	cr_assert(strstr(r.err, "/tmp/hk-no-such.sock"), "%s", r.err);
	cr_assert_eq(hk_lines(r.err), 1);
	hk_proc_result_free(&r);
}

Test(daemon, sigterm_stops_cleanly_and_removes_socket)
{
	int st = hk_fixture_stop(&fx);

	cr_assert_eq(st, 0, "hkd exit status %d", st);
	cr_assert_neq(access(fx.sock, F_OK), 0, "socket left behind");
}

Test(daemon, config_with_bad_size_is_refused)
{
	char *argv[] = {fx.hkd, "--config", fx.conf, "--node", "n1", NULL};
	struct hk_proc_result r;

	write_config("");
	FILE *f = fopen(fx.conf, "a");

	fprintf(f, "[node n2]\naddress = 127.0.0.1:17002\nmemory = lots\ncontrol = %s/n2.sock\n",
		fx.dir);
	fclose(f);
	hk_run(argv, 30, &r);
	cr_assert_eq(r.status, 2);
	cr_assert(strstr(r.err, "memory") && strstr(r.err, "lots"), "%s", r.err);
	cr_assert_eq(hk_lines(r.err), 1, "%s", r.err);
	hk_proc_result_free(&r);
}

/* ---- with a guest (needs /dev/kvm) ---- */

static void need_kvm(void)
{
	hk_fixture_skip_unless(&fx, hk_kvm_available, "/dev/kvm");
}

static json_int_t kvm_stat(json_t *ks, const char *name)
{
	json_t *v = json_object_get(ks, name);

	cr_assert(json_is_integer(v), "kvm_stats has no %s", name);
	return json_integer_value(v);
}

/*
 * KVM's own counters of a guest that ran (memtest touches 64 MiB): it
 * exited to hkd (MMIO: the service page's console and exit), KVM installed mappings for what it
 * touched, and they are still mapped after it ended.  On a kernel without
 * KVM_GET_STATS_FD, status must say they are absent instead.
 */
static void assert_kvm_stats(json_t *j)
{
	json_t *ks = json_object_get(j, "kvm_stats");

	if (!hk_kvm_has_stats()) {
		cr_assert_null(ks, "kvm_stats on a kernel without them");
		cr_assert(json_is_string(json_object_get(j, "kvm_stats_absent")));
		return;
	}
	cr_assert(json_is_object(ks), "no kvm_stats: %s",
		  json_string_value(json_object_get(j, "kvm_stats_absent")));
	cr_assert_gt(kvm_stat(ks, "exits"), 0);
	cr_assert_gt(kvm_stat(ks, "mmio_exits"), 0, "console and exit go through the service page");
	/* 64 MiB touched: 16384 4K mappings, or 32 of 2M */
	cr_assert_geq(kvm_stat(ks, "pages_4k") + 512 * kvm_stat(ks, "pages_2m"), 16384);
	cr_assert_gt(kvm_stat(ks, "pf_fixed"), 0);
	cr_assert_null(json_object_get(j, "kvm_stats_absent"));
}

/* The guest booted, so the write tracker is named (the table is on). */
static void assert_write_tracking(json_t *j)
{
	const char *wt = json_string_value(json_object_get(j, "write_tracking"));

	cr_assert(wt && (!strcmp(wt, "uffd") || !strcmp(wt, "kvm-dirty-log")), "write_tracking %s",
		  wt ? wt : "(none)");
	cr_assert(json_is_integer(json_object_get(j, "tracking_harvests")));
}

Test(daemon, guest_start_wait_console)
{
	struct hk_proc_result r;
	json_t *j, *g;

	need_kvm();
	ctl(&r, "guest", "start", NULL, NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	hk_proc_result_free(&r);

	ctl(&r, "guest", "wait", "--timeout", "120");
	cr_assert_eq(r.status, 0, "%s", r.err);
	hk_proc_result_free(&r);
	ctl(&r, "--json", "guest", "wait", NULL);
	j = json_loads(r.out, 0, NULL);
	cr_assert_not_null(j, "%s", r.out);
	g = json_object_get(j, "guest");
	cr_assert_str_eq(json_string_value(json_object_get(g, "state")), "exited");
	cr_assert_eq(json_integer_value(json_object_get(g, "exit_status")), 1);
	json_decref(j);
	hk_proc_result_free(&r);

	ctl(&r, "guest", "console", NULL, NULL);
	cr_assert(strstr(r.out, "memtest ok"), "console: %s", r.out);
	hk_proc_result_free(&r);

	ctl(&r, "status", "--json", NULL, NULL);
	j = json_loads(r.out, 0, NULL);
	cr_assert_not_null(j, "%s", r.out);
	cr_assert_gt(json_integer_value(json_object_get(j, "resident_pages")), 16384);
	assert_kvm_stats(j);
	assert_write_tracking(j);
	/* the per-node object carries them too (a pooled guest's nodes differ) */
	assert_kvm_stats(json_array_get(json_object_get(j, "nodes"), 0));
	json_decref(j);
	hk_proc_result_free(&r);

	ctl(&r, "status", NULL, NULL, NULL);
	cr_assert(
	    strstr(r.out, hk_kvm_has_stats() ? "kvm vcpus     exits=" : "kvm stats     absent"),
	    "%s", r.out);
	hk_proc_result_free(&r);
}

Test(daemon, guest_stop_ends_a_running_guest)
{
	struct hk_proc_result r;

	need_kvm();
	ctl(&r, "guest", "start", "--cmdline", "memtest size=64M passes=100000");
	cr_assert_eq(r.status, 0, "%s", r.err);
	hk_proc_result_free(&r);
	ctl(&r, "guest", "start", NULL, NULL);
	cr_assert_eq(r.status, 1, "a second start must be refused");
	cr_assert(strstr(r.err, "already running"), "%s", r.err);
	hk_proc_result_free(&r);
	ctl(&r, "--json", "guest", "stop", NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_assert(strstr(r.out, "\"stopped\""), "%s", r.out);
	hk_proc_result_free(&r);
}

/* ---- a guest or daemon that is gone is noticed at once ---- */

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

Test(daemon, guest_that_exits_at_once_is_reported_with_its_last_line)
{
	struct hk_proc_result r;
	const char *line;
	json_t *j, *g;
	double t0;

	need_kvm();
	/* guestos refuses an unknown workload at once: status (2 << 1) | 1 */
	ctl(&r, "guest", "start", "--cmdline", "nosuchworkload");
	cr_assert_eq(r.status, 0, "%s", r.err);
	hk_proc_result_free(&r);
	t0 = now_s();
	ctl(&r, "--json", "guest", "wait", NULL);
	cr_assert_lt(now_s() - t0, 3, "guest wait took %.1f s for a guest that exited at boot",
		     now_s() - t0);
	cr_assert_eq(r.status, 0, "%s", r.err);
	j = json_loads(r.out, 0, NULL);
	cr_assert_not_null(j, "%s", r.out);
	g = json_object_get(j, "guest");
	cr_assert_str_eq(json_string_value(json_object_get(g, "state")), "exited");
	cr_assert_eq(json_integer_value(json_object_get(g, "exit_status")), 5);
	line = json_string_value(json_object_get(g, "last_console_line"));
	cr_assert(line && strstr(line, "unknown workload 'nosuchworkload'"), "%s", r.out);
	json_decref(j);
	hk_proc_result_free(&r);

	/* the human form names the state, the reason and that line */
	ctl(&r, "guest", "wait", NULL, NULL);
	cr_assert(strstr(r.out, "exited, status 5") && strstr(r.out, "exit register") &&
		      strstr(r.out, "last line     guestos: unknown workload"),
		  "%s", r.out);
	hk_proc_result_free(&r);
}

Test(daemon, hkd_killed_during_guest_wait_ends_the_wait)
{
	char *argv[] = {fx.hkctl, "--config", fx.conf, "guest", "wait", NULL};
	char log[160], buf[1024] = "";
	struct hk_proc_result r;
	double t0;
	pid_t w;
	size_t n;
	FILE *f;
	int st;

	need_kvm();
	ctl(&r, "guest", "start", "--cmdline", "memtest size=64M passes=100000");
	cr_assert_eq(r.status, 0, "%s", r.err);
	hk_proc_result_free(&r);
	snprintf(log, sizeof(log), "%s/wait.out", fx.dir);
	w = hk_spawn(argv, log);
	cr_assert_gt(w, 0);
	usleep(500 * 1000); /* the wait is in hkd by now */
	cr_assert_eq(waitpid(w, &st, WNOHANG), 0, "guest wait ended with the guest running");
	kill(fx.pid, SIGKILL);
	t0 = now_s();
	while (waitpid(w, &st, WNOHANG) == 0 && now_s() - t0 < 5)
		usleep(20 * 1000);
	if (now_s() - t0 >= 5) {
		kill(w, SIGKILL);
		waitpid(w, &st, 0);
		cr_assert_fail("guest wait still waits 5 s after hkd was killed");
	}
	f = fopen(log, "r");
	cr_assert_not_null(f);
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = '\0';
	fclose(f);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 1, "guest wait: %#x: %s", st, buf);
	cr_assert(strstr(buf, "closed the connection before replying") &&
		      strstr(buf, "did it exit or crash?"),
		  "%s", buf);
	cr_assert_eq(hk_lines(buf), 1, "%s", buf);
	hk_fixture_stop(&fx); /* reaps the killed hkd */
}
