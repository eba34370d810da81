/*
 * A pooled guest start waits for every node's PREPARED (up to 30 s) without
 * the leader's daemon lock: hkctl status and nodes answer meanwhile, a
 * second start, a reboot and a stop get a one-line "in progress" error, and
 * shutdown ends the wait at once.
 *
 * The cluster is a real hkd as n1 (the leader) and this test process as n2:
 * a real cluster endpoint on loopback (node/cluster.h) that joins like an
 * hkd and answers PREPARE only when the test says so.  No guest boots, so
 * this runs without /dev/kvm.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cluster.h"
#include "guest.pb-c.h"
#include "hk_test.h"

/* proto/guest.proto messages carry this (POOL_WIRE_VERSION in daemon_pool.c). */
#define GUEST_WIRE_VERSION 1
/* Well under the leader's 30 s wait: an answer this fast proves no queueing. */
#define PROMPT_S 5.0

static struct {
	char hkd[4096], hkctl[4096];
	char dir[64], conf[128], sock[100], log[128], kernel[128];
	pid_t pid;
	struct hk_config cfg;
	struct hk_cluster *peer; /* n2: this process */

	/* What n2 heard from the leader (on the progress thread). */
	pthread_mutex_t lock;
	pthread_cond_t cv;
	unsigned prepares, stops;
	uint64_t prepare_guest, stop_guest;
	uint32_t prepare_ask;
} t = {.lock = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void on_guest(void *ctx, unsigned from, const void *buf, size_t len)
{
	Hk__Guest__GuestMsg *m = hk__guest__guest_msg__unpack(NULL, len, buf);

	(void)ctx;
	if (!m || from != 0)
		goto out;
	pthread_mutex_lock(&t.lock);
	if (m->type == HK__GUEST__GUEST_TYPE__GUEST_PREPARE) {
		t.prepares++;
		t.prepare_guest = m->guest;
		t.prepare_ask = m->ask;
	} else if (m->type == HK__GUEST__GUEST_TYPE__GUEST_STOP) {
		t.stops++;
		t.stop_guest = m->guest;
	}
	pthread_cond_broadcast(&t.cv);
	pthread_mutex_unlock(&t.lock);
out:
	if (m)
		hk__guest__guest_msg__free_unpacked(m, NULL);
}

/* Wait until *count reaches n; false after limit_s. */
static bool wait_count(unsigned *count, unsigned n, double limit_s)
{
	double until = now_s() + limit_s;
	bool ok;

	pthread_mutex_lock(&t.lock);
	while (*count < n && now_s() < until) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 100 * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&t.cv, &t.lock, &ts);
	}
	ok = *count >= n;
	pthread_mutex_unlock(&t.lock);
	return ok;
}

/* n2 answers the last PREPARE, or an earlier one (stale): ok (error NULL)
 * or refused. */
static void answer_prepare_as(const char *error, bool stale)
{
	Hk__Guest__GuestMsg m = HK__GUEST__GUEST_MSG__INIT;
	uint8_t buf[512];
	size_t len;

	m.version = GUEST_WIRE_VERSION;
	m.type = HK__GUEST__GUEST_TYPE__GUEST_PREPARED;
	pthread_mutex_lock(&t.lock);
	m.guest = t.prepare_guest;
	m.ask = t.prepare_ask - (stale ? 1 : 0);
	pthread_mutex_unlock(&t.lock);
	m.error = (char *)(error ? error : "");
	len = hk__guest__guest_msg__get_packed_size(&m);
	cr_assert_leq(len, sizeof(buf));
	hk__guest__guest_msg__pack(&m, buf);
	cr_assert_eq(hk_cluster_send(t.peer, 0, HK_MSG_GUEST, buf, len), 0);
}

static void answer_prepare(const char *error)
{
	answer_prepare_as(error, false);
}

static void teardown(void)
{
	char cmd[128];

	if (t.pid > 0)
		hk_stop(t.pid, 10);
	t.pid = 0;
	hk_cluster_destroy(t.peer);
	t.peer = NULL;
	if (t.dir[0]) {
		snprintf(cmd, sizeof(cmd), "rm -rf %s", t.dir);
		if (system(cmd))
			fprintf(stderr, "cannot remove %s\n", t.dir);
	}
	t.dir[0] = 0;
}

TestSuite(pool_busy, .fini = teardown);

static void dump_log(void)
{
	char cmd[200];

	snprintf(cmd, sizeof(cmd), "tail -n 30 %s >&2", t.log);
	if (system(cmd))
		fprintf(stderr, "(no log %s)\n", t.log);
}

/* hkd as n1, this process as n2; returns once the cluster has formed. */
static void start_cluster(void)
{
	char *argv[] = {t.hkd, "--config", t.conf, "--node", "n1", NULL};
	char err[512];
	int ports[2];
	FILE *f;

	hk_build_path("node/hkd", t.hkd, sizeof(t.hkd));
	hk_build_path("node/hkctl", t.hkctl, sizeof(t.hkctl));
	snprintf(t.dir, sizeof(t.dir), "/tmp/hk-poolbusy-XXXXXX");
	cr_assert_not_null(mkdtemp(t.dir), "mkdtemp: %s", strerror(errno));
	snprintf(t.conf, sizeof(t.conf), "%s/hk.conf", t.dir);
	snprintf(t.sock, sizeof(t.sock), "%s/n1.sock", t.dir);
	snprintf(t.log, sizeof(t.log), "%s/n1.log", t.dir);
	/* Never loaded: n2 is not asked to, and n1 gives up before it would. */
	snprintf(t.kernel, sizeof(t.kernel), "%s/not-a-kernel", t.dir);
	f = fopen(t.kernel, "w");
	cr_assert_not_null(f);
	fputs("this is not a kernel\n", f);
	fclose(f);
	cr_assert_eq(hk_free_ports(2, ports), 0);
	f = fopen(t.conf, "w");
	cr_assert_not_null(f);
	fprintf(f, "[cluster]\nname = poolbusy\n\n[guest]\nvcpus = 2\n\n");
	for (unsigned i = 0; i < 2; i++)
		fprintf(f,
			"[node n%u]\naddress = 127.0.0.1:%d\nmemory = 64M\n"
			"control = %s/n%u.sock\n\n",
			i + 1, ports[i], t.dir, i + 1);
	fclose(f);

	t.pid = hk_spawn(argv, t.log);
	cr_assert_gt(t.pid, 0, "cannot start hkd");
	cr_assert_eq(hk_config_load(t.conf, &t.cfg, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(hk_cluster_create(&t.cfg, 1, &t.peer, err, sizeof(err)), 0, "%s", err);
	hk_cluster_on(t.peer, HK_MSG_GUEST, on_guest, NULL);
	if (hk_cluster_join(t.peer, 30000, err, sizeof(err))) {
		dump_log();
		cr_assert_fail("n2 could not join: %s", err);
	}
	if (!hk_wait_socket(t.sock, 30)) {
		dump_log();
		cr_assert_fail("hkd n1 did not open %s", t.sock);
	}
}

/* hkctl --config CONF ARGS... (NULL-terminated); seconds it took. */
static double ctl(struct hk_proc_result *r, ...)
{
	char *argv[16] = {t.hkctl, "--config", t.conf};
	unsigned n = 3;
	double t0 = now_s();
	va_list ap;

	va_start(ap, r);
	for (char *a; n < 15 && (a = va_arg(ap, char *));)
		argv[n++] = a;
	va_end(ap);
	argv[n] = NULL;
	hk_run_checked(argv, 60, r);
	return now_s() - t0;
}

/* `hkctl guest start` in the background, its output in DIR/NAME. */
static pid_t start_in_background(const char *name, char *out, size_t outlen)
{
	char *argv[] = {t.hkctl, "--config", t.conf, "guest", "start", "--kernel", t.kernel, NULL};
	pid_t pid;

	snprintf(out, outlen, "%s/%s", t.dir, name);
	pid = hk_spawn(argv, out);
	cr_assert_gt(pid, 0, "cannot run hkctl");
	return pid;
}

/* Exit status of pid, which must end within limit_s. */
static int reap(pid_t pid, double limit_s)
{
	double until = now_s() + limit_s;
	int st;

	while (waitpid(pid, &st, WNOHANG) == 0) {
		if (now_s() > until) {
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			cr_assert_fail("hkctl did not end within %.0f s", limit_s);
		}
		usleep(50 * 1000);
	}
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static char *slurp(const char *path)
{
	static char buf[8192];
	FILE *f = fopen(path, "r");
	size_t n;

	cr_assert_not_null(f, "%s: %s", path, strerror(errno));
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	return buf;
}

static json_t *status_guest(struct hk_proc_result *r, double *took)
{
	json_error_t je;
	json_t *j;

	*took = ctl(r, "--node", "n1", "status", "--json", NULL);
	cr_assert_eq(r->status, 0, "status: %s", r->err);
	j = json_loads(r->out, 0, &je);
	cr_assert_not_null(j, "not JSON (%s): %s", je.text, r->out);
	return j;
}

/* One request refused at once with the in-progress error, on one line. */
static void assert_refused(const char *what, const char *arg)
{
	struct hk_proc_result r = {0};
	char want[128];
	double took;

	took = ctl(&r, "guest", what, arg, arg ? t.kernel : NULL, NULL);
	snprintf(want, sizeof(want), "guest %s: a start or reboot is already in progress", what);
	cr_assert_eq(r.status, 1, "guest %s during a start: status %d: %s", what, r.status, r.err);
	cr_assert(strstr(r.err, want), "%s", r.err);
	cr_assert_eq(hk_lines(r.err), 1, "%s", r.err);
	cr_assert_lt(took, PROMPT_S, "guest %s took %.1f s: queued behind the start", what, took);
	hk_proc_result_free(&r);
}

Test(pool_busy, status_answers_while_a_start_waits_for_every_node)
{
	struct hk_proc_result r = {0};
	json_t *j, *g;
	char out[160];
	const char *reason;
	double took;
	pid_t bg;

	start_cluster();
	bg = start_in_background("start1.out", out, sizeof(out));
	cr_assert(wait_count(&t.prepares, 1, 20), "n2 got no PREPARE");

	/* The leader now waits for n2, which says nothing yet. */
	j = status_guest(&r, &took);
	cr_log_info("status during the start: %.2f s", took);
	cr_assert_lt(took, PROMPT_S, "status took %.1f s: it waited for the start", took);
	g = json_object_get(j, "guest");
	cr_assert_str_eq(json_string_value(json_object_get(g, "state")), "none", "%s", r.out);
	reason = json_string_value(json_object_get(g, "reason")) ?: "";
	cr_assert(strstr(reason, "starting: waiting for every node"), "%s", r.out);
	cr_assert_str_eq(json_string_value(json_object_get(g, "kernel")), t.kernel, "%s", r.out);
	json_decref(j);

	ctl(&r, "status", "--node", "n1", NULL);
	cr_assert_eq(r.status, 0, "status: %s", r.err);
	cr_assert(strstr(r.out, "guest         none yet\nreason        starting: waiting for every "
				"node to prepare its share ("),
		  "%s", r.out);

	took = ctl(&r, "nodes", NULL);
	cr_assert_eq(r.status, 0, "nodes: %s", r.err);
	cr_assert_lt(took, PROMPT_S, "nodes took %.1f s", took);

	assert_refused("start", "--kernel");
	assert_refused("reboot", NULL);
	assert_refused("stop", NULL);
	cr_assert_eq(waitpid(bg, NULL, WNOHANG), 0, "the first start ended early: %s", slurp(out));

	/* An answer to another ask (a late one to an earlier start) is not
	 * this start's: it still waits. */
	answer_prepare_as("node n2: a stale answer", true);
	usleep(500 * 1000);
	cr_assert_eq(waitpid(bg, NULL, WNOHANG), 0, "a stale answer ended the start: %s",
		     slurp(out));

	/* n2 refuses: the first start ends with its reason, nothing else. */
	answer_prepare("node n2: refused by the test");
	cr_assert_eq(reap(bg, 20), 1);
	cr_assert(strstr(slurp(out), "guest start: node n2: refused by the test"), "%s",
		  slurp(out));

	/* Idle again: status has no start in progress... */
	j = status_guest(&r, &took);
	g = json_object_get(j, "guest");
	cr_assert_null(strstr(json_string_value(json_object_get(g, "reason")) ?: "", "starting"),
		       "%s", r.out);
	json_decref(j);

	/* ...and a new start gets through to n2.  n2 says yes, n1 cannot load
	 * its kernel: the start fails and n2 is told to drop its share. */
	bg = start_in_background("start2.out", out, sizeof(out));
	cr_assert(wait_count(&t.prepares, 2, 20), "n2 got no second PREPARE");
	answer_prepare(NULL);
	cr_assert_eq(reap(bg, 20), 1);
	cr_assert(strstr(slurp(out), "guest start: "), "%s", slurp(out));
	cr_assert_null(strstr(slurp(out), "in progress"), "%s", slurp(out));
	cr_assert(wait_count(&t.stops, 1, 10), "n2 was not told to drop the prepared guest");
	pthread_mutex_lock(&t.lock);
	cr_assert_eq(t.stop_guest, t.prepare_guest);
	pthread_mutex_unlock(&t.lock);
	hk_proc_result_free(&r);
}

Test(pool_busy, shutdown_ends_a_start_waiting_for_every_node)
{
	char out[160];
	double t0, took;
	pid_t bg;
	int st;

	start_cluster();
	bg = start_in_background("start.out", out, sizeof(out));
	cr_assert(wait_count(&t.prepares, 1, 20), "n2 got no PREPARE");
	t0 = now_s();
	st = hk_stop(t.pid, 25);
	took = now_s() - t0;
	t.pid = 0;
	cr_log_info("hkd stopped %.2f s after SIGTERM during a start", took);
	cr_assert_eq(st, 0, "hkd ended with %d", st);
	cr_assert_lt(took, PROMPT_S, "shutdown waited %.1f s for the start", took);
	cr_assert_neq(reap(bg, 10), 0, "the start must fail: %s", slurp(out));
}
