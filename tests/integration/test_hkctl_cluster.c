/*
 * hkctl nodes, status, top and replica show|stats|verify against real hkd
 * daemons forming a cluster
 * on loopback: three [node] sections of one generated hk.conf on free
 * 127.0.0.1 ports, the default tcp;ofi_rxm provider.  No guest is booted,
 * so this runs without /dev/kvm.  Every daemon a test starts is killed and
 * reaped by the suite's fini, also when the test fails.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
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
#include "hk_test.h"

#define MAX_NODES 3

static struct {
	char hkd[4096], hkctl[4096];
	char dir[64], conf[128];
	char sock[MAX_NODES][100], log[MAX_NODES][128];
	pid_t pid[MAX_NODES];
	unsigned n;
} cl;

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void kill_node(unsigned i)
{
	int st;

	if (cl.pid[i] <= 0)
		return;
	kill(cl.pid[i], SIGKILL);
	waitpid(cl.pid[i], &st, 0);
	cl.pid[i] = 0;
}

static void teardown(void)
{
	char cmd[128];

	for (unsigned i = 0; i < cl.n; i++) {
		if (cl.pid[i] > 0)
			hk_stop(cl.pid[i], 10);
		cl.pid[i] = 0;
		unlink(cl.sock[i]);
	}
	if (cl.dir[0]) {
		snprintf(cmd, sizeof(cmd), "rm -rf %s", cl.dir);
		if (system(cmd))
			fprintf(stderr, "cannot remove %s\n", cl.dir);
	}
	cl.dir[0] = 0;
	cl.n = 0;
}

TestSuite(hkctl_cluster, .fini = teardown);

static void dump_logs(void)
{
	for (unsigned i = 0; i < cl.n; i++) {
		char cmd[200];

		snprintf(cmd, sizeof(cmd), "tail -n 20 %s >&2", cl.log[i]);
		if (system(cmd))
			fprintf(stderr, "(no log %s)\n", cl.log[i]);
	}
}

/* Write hk.conf with n nodes and start one hkd per node; returns once each answers. */
static void start_cluster(unsigned n)
{
	int ports[MAX_NODES];
	FILE *f;

	memset(&cl, 0, sizeof(cl));
	hk_build_path("node/hkd", cl.hkd, sizeof(cl.hkd));
	hk_build_path("node/hkctl", cl.hkctl, sizeof(cl.hkctl));
	snprintf(cl.dir, sizeof(cl.dir), "/tmp/hk-hkctlc-XXXXXX");
	cr_assert_not_null(mkdtemp(cl.dir), "mkdtemp: %s", strerror(errno));
	snprintf(cl.conf, sizeof(cl.conf), "%s/hk.conf", cl.dir);
	cr_assert_eq(hk_free_ports(n, ports), 0);
	f = fopen(cl.conf, "w");
	cr_assert_not_null(f);
	fprintf(f, "[cluster]\nname = hkctlc\n\n[guest]\nvcpus = 2\n\n");
	for (unsigned i = 0; i < n; i++) {
		snprintf(cl.sock[i], sizeof(cl.sock[i]), "%s/n%u.sock", cl.dir, i + 1);
		snprintf(cl.log[i], sizeof(cl.log[i]), "%s/n%u.log", cl.dir, i + 1);
		fprintf(f, "[node n%u]\naddress = 127.0.0.1:%d\nmemory = 64M\ncontrol = %s\n\n",
			i + 1, ports[i], cl.sock[i]);
	}
	fclose(f);
	cl.n = n;
	for (unsigned i = 0; i < n; i++) {
		char name[8], *argv[] = {cl.hkd, "--config", cl.conf, "--node", name, NULL};

		snprintf(name, sizeof(name), "n%u", i + 1);
		cl.pid[i] = hk_spawn(argv, cl.log[i]);
		cr_assert_gt(cl.pid[i], 0, "cannot start hkd");
	}
	/* A daemon serves hkctl only once the cluster has formed. */
	for (unsigned i = 0; i < n; i++) {
		if (!hk_wait_socket(cl.sock[i], 30)) {
			dump_logs();
			cr_assert_fail("hkd n%u did not open %s", i + 1, cl.sock[i]);
		}
	}
}

/* hkctl --config CONF ARGS...; NULL-terminated. */
static void ctl(struct hk_proc_result *r, ...)
{
	char *argv[16] = {cl.hkctl, "--config", cl.conf};
	unsigned n = 3;
	va_list ap;

	va_start(ap, r);
	for (char *a; n < 15 && (a = va_arg(ap, char *));)
		argv[n++] = a;
	va_end(ap);
	argv[n] = NULL;
	hk_run_checked(argv, 60, r);
}

static json_t *parse(const char *out)
{
	json_error_t je;
	json_t *j = json_loads(out, 0, &je);

	cr_assert_not_null(j, "not JSON (%s): %s", je.text, out);
	return j;
}

static json_t *node_named(json_t *nodes, const char *key, const char *name)
{
	size_t i;
	json_t *o;

	json_array_foreach(
	    nodes, i,
	    o) if (!strcmp(json_string_value(json_object_get(o, key)) ?: "", name)) return o;
	cr_assert_fail("no node %s in %s", name, json_dumps(nodes, 0));
	return NULL;
}

Test(hkctl_cluster, nodes_json_lists_three_up_nodes)
{
	struct hk_proc_result r = {0};
	json_t *j, *nodes, *o;
	unsigned self = 0;
	size_t i;

	start_cluster(3);
	ctl(&r, "nodes", "--json", NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	j = parse(r.out);
	cr_assert_str_eq(json_string_value(json_object_get(j, "view")), "n1");
	cr_assert_str_eq(json_string_value(json_object_get(j, "cluster")), "hkctlc");
	cr_assert_str_eq(json_string_value(json_object_get(j, "provider")), "tcp;ofi_rxm");
	cr_assert_eq(json_integer_value(json_object_get(j, "up")), 3);
	nodes = json_object_get(j, "nodes");
	cr_assert_eq(json_array_size(nodes), 3, "%s", r.out);
	json_array_foreach(nodes, i, o)
	{
		char name[32];

		snprintf(name, sizeof(name), "n%zu", i + 1);
		cr_assert_str_eq(json_string_value(json_object_get(o, "name")), name);
		cr_assert(json_is_true(json_object_get(o, "up")), "%s down: %s", name, r.out);
		cr_assert(strstr(json_string_value(json_object_get(o, "address")), "127.0.0.1:"));
		self += json_is_true(json_object_get(o, "self"));
		if (i) { /* peers heartbeat every 250 ms */
			cr_assert_geq(json_integer_value(json_object_get(o, "last_heard_ms")), 0);
			cr_assert_lt(json_integer_value(json_object_get(o, "last_heard_ms")), 2000);
			cr_assert_gt(json_integer_value(json_object_get(o, "msgs_recv")), 0);
		}
	}
	cr_assert_eq(self, 1, "%s", r.out);
	json_decref(j);

	ctl(&r, "nodes", NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_assert(strstr(r.out, "NAME") && strstr(r.out, "LAST-HEARD") && strstr(r.out, "RTT"),
		  "%s", r.out);
	cr_assert_eq(hk_count(r.out, " up "), 3, "%s", r.out);
	hk_proc_result_free(&r);
}

static void assert_pool_keys(json_t *o, const char *what)
{
	static const char *const keys[] = {"resident_pages", "remote_faults", "invalidations",
					   "vcpu_migrations"};

	for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++)
		cr_assert(json_is_integer(json_object_get(o, keys[k])), "%s has no %s: %s", what,
			  keys[k], json_dumps(o, 0));
}

Test(hkctl_cluster, status_json_has_every_node_and_totals)
{
	/* Keys of a single node's status JSON: scripts and tests rely on them. */
	static const char *const single[] = {"node",
					     "cluster",
					     "pid",
					     "uptime_ms",
					     "vcpus",
					     "vcpu_list",
					     "guest_memory",
					     "guest",
					     "resident_pages",
					     "uffd_faults",
					     "vcpu_exits",
					     "console_bytes",
					     "disks",
					     "replicas_enabled",
					     "tsc_khz",
					     "bytes_from_disk",
					     "bytes_from_replicas",
					     "wp_faults",
					     "kept_pages"};
	struct hk_proc_result r = {0};
	json_t *j, *nodes, *totals, *o;
	size_t i;

	start_cluster(3);
	ctl(&r, "status", "--json", NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	j = parse(r.out);
	for (size_t k = 0; k < sizeof(single) / sizeof(single[0]); k++)
		cr_assert_not_null(json_object_get(j, single[k]), "no top-level %s: %s", single[k],
				   r.out);
	cr_assert_str_eq(json_string_value(json_object_get(j, "node")), "n1");
	cr_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "guest"), "state")),
			 "none");
	nodes = json_object_get(j, "nodes");
	cr_assert_eq(json_array_size(nodes), 3, "%s", r.out);
	json_array_foreach(nodes, i, o)
	{
		char name[32];

		snprintf(name, sizeof(name), "n%zu", i + 1);
		cr_assert_str_eq(json_string_value(json_object_get(o, "node")), name);
		cr_assert(json_is_true(json_object_get(o, "up")));
		assert_pool_keys(o, name);
	}
	totals = json_object_get(j, "totals");
	assert_pool_keys(totals, "totals");
	cr_assert_eq(json_integer_value(json_object_get(totals, "nodes")), 3);
	cr_assert_eq(json_integer_value(json_object_get(totals, "nodes_up")), 3);
	json_decref(j);

	ctl(&r, "status", NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_assert(strstr(r.out, "3 nodes (3 up)"), "%s", r.out);
	cr_assert(strstr(r.out, "REMOTE-FLT") && strstr(r.out, "total"), "%s", r.out);

	/* --node asks one daemon, as before clusters existed. */
	ctl(&r, "--node", "n2", "status", "--json", NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	j = parse(r.out);
	cr_assert_str_eq(json_string_value(json_object_get(j, "node")), "n2");
	cr_assert_eq(json_array_size(json_object_get(j, "nodes")), 1);
	json_decref(j);
	hk_proc_result_free(&r);
}

/* Poll `hkctl --node VIEW nodes --json` until node `dead` is down there; seconds it took. */
static double wait_down(const char *view, const char *dead, double since, double limit)
{
	struct hk_proc_result r = {0};

	for (;;) {
		json_t *j;
		bool down;

		ctl(&r, "--node", view, "nodes", "--json", NULL);
		j = parse(r.out);
		down = !json_is_true(
		    json_object_get(node_named(json_object_get(j, "nodes"), "name", dead), "up"));
		json_decref(j);
		if (down) {
			cr_assert_eq(r.status, 1, "a down node must make nodes exit 1");
			cr_assert(strstr(r.err, "1 of 3 nodes down"), "%s", r.err);
			break;
		}
		cr_assert_eq(r.status, 0, "%s", r.err);
		cr_assert_lt(now_s() - since, limit, "%s still shows %s up after %.1f s", view,
			     dead, limit);
		usleep(100 * 1000);
	}
	hk_proc_result_free(&r);
	return now_s() - since;
}

Test(hkctl_cluster, killed_node_is_reported_down_and_status_fails)
{
	/* Heartbeats stop: down after HK_CLUSTER_DOWN_MS, plus slack for a busy host. */
	const double limit = HK_CLUSTER_DOWN_MS / 1000.0 + 1.5;
	struct hk_proc_result r = {0};
	json_t *j, *nodes, *o;
	double t0, took;

	start_cluster(3);
	t0 = now_s();
	kill_node(1); /* n2, SIGKILL: no goodbye; its socket file stays behind */
	took = wait_down("n1", "n2", t0, limit);
	cr_log_info("n1 saw n2 down after %.2f s", took);
	wait_down("n3", "n2", t0, limit);

	ctl(&r, "status", "--json", NULL);
	cr_assert_eq(r.status, 1, "a node that does not answer must fail status");
	cr_assert(strstr(r.err, "n2"), "%s", r.err);
	cr_assert_eq(hk_lines(r.err), 1, "%s", r.err);
	j = parse(r.out);
	nodes = json_object_get(j, "nodes");
	cr_assert_eq(json_array_size(nodes), 3, "%s", r.out);
	o = node_named(nodes, "node", "n2");
	cr_assert(json_is_false(json_object_get(o, "up")));
	cr_assert(strstr(json_string_value(json_object_get(o, "error")) ?: "", "n2.sock"), "%s",
		  r.out);
	assert_pool_keys(node_named(nodes, "node", "n1"), "n1");
	assert_pool_keys(node_named(nodes, "node", "n3"), "n3");
	cr_assert(json_is_true(json_object_get(node_named(nodes, "node", "n3"), "up")));
	cr_assert_eq(json_integer_value(json_object_get(json_object_get(j, "totals"), "nodes_up")),
		     2);
	cr_assert_str_eq(json_string_value(json_object_get(j, "node")), "n1");
	json_decref(j);

	ctl(&r, "status", NULL);
	cr_assert_eq(r.status, 1);
	cr_assert(strstr(r.out, "n1") && strstr(r.out, "n3") && strstr(r.out, "down"), "%s", r.out);
	cr_assert(strstr(r.out, "3 nodes (2 up)"), "%s", r.out);
	hk_proc_result_free(&r);
}

Test(hkctl_cluster, nodes_asks_the_next_node_when_the_first_is_gone)
{
	struct hk_proc_result r = {0};
	json_t *j;

	start_cluster(3);
	kill_node(0);
	unlink(cl.sock[0]);
	wait_down("n2", "n1", now_s(), HK_CLUSTER_DOWN_MS / 1000.0 + 1.5);
	ctl(&r, "nodes", "--json", NULL);
	cr_assert_eq(r.status, 1, "%s", r.err);
	j = parse(r.out);
	cr_assert_str_eq(json_string_value(json_object_get(j, "view")), "n2");
	cr_assert_eq(json_integer_value(json_object_get(j, "up")), 2);
	json_decref(j);
	hk_proc_result_free(&r);
}

Test(hkctl_cluster, top_prints_count_blocks)
{
	struct hk_proc_result r = {0};
	const char *p;

	start_cluster(3);
	ctl(&r, "top", "--count", "2", "--interval", "100", NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_assert_eq(hk_count(r.out, "hkctl top:"), 2, "%s", r.out);
	cr_assert_null(strchr(r.out, '\033'), "escape codes on a pipe: %s", r.out);
	/* The second block has rates: a number, not "-". */
	p = strstr(r.out, "sample 2");
	cr_assert_not_null(p, "%s", r.out);
	cr_assert_eq(hk_count(p, "\nn1 "), 1, "%s", r.out);
	cr_assert_eq(hk_count(p, "\nn3 "), 1, "%s", r.out);
	cr_assert(strstr(p, "0.0"), "%s", r.out);
	hk_proc_result_free(&r);
}

Test(hkctl_cluster, top_stops_cleanly_on_sigint)
{
	char log[160];
	pid_t pid;
	int st;

	start_cluster(3);
	char *argv[] = {cl.hkctl, "--config", cl.conf, "top", "--interval", "100", NULL};

	snprintf(log, sizeof(log), "%s/top.out", cl.dir);
	pid = hk_spawn(argv, log);
	cr_assert_gt(pid, 0);
	usleep(500 * 1000);
	kill(pid, SIGINT);
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "top ended with status %#x", st);
}

Test(hkctl_cluster, single_node_nodes_and_status)
{
	struct hk_proc_result r = {0};
	json_t *j, *o;

	start_cluster(1);
	ctl(&r, "nodes", "--json", NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	j = parse(r.out);
	cr_assert_eq(json_array_size(json_object_get(j, "nodes")), 1);
	o = json_array_get(json_object_get(j, "nodes"), 0);
	cr_assert(json_is_true(json_object_get(o, "self")));
	cr_assert(json_is_true(json_object_get(o, "up")));
	json_decref(j);

	ctl(&r, "status", "--json", NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	j = parse(r.out);
	cr_assert_eq(json_array_size(json_object_get(j, "nodes")), 1);
	assert_pool_keys(json_object_get(j, "totals"), "totals");
	json_decref(j);

	/* One node, human output: the single-node layout. */
	ctl(&r, "status", NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_assert(strstr(r.out, "node          n1"), "%s", r.out);
	hk_proc_result_free(&r);
}

/* ---- replica show | stats | verify over every node ---------------------------------- */

static long long jint(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);

	cr_assert(json_is_integer(v), "no integer %s in %s", key, json_dumps(o, 0));
	return json_integer_value(v);
}

/* nodes[] has n1..nN in config order, each up (or down if named by `down`). */
static void assert_node_list(json_t *j, unsigned n, const char *down)
{
	json_t *nodes = json_object_get(j, "nodes"), *o;
	size_t i;

	cr_assert_eq(json_array_size(nodes), n, "%s", json_dumps(j, 0));
	json_array_foreach(nodes, i, o)
	{
		char name[32];

		snprintf(name, sizeof(name), "n%zu", i + 1);
		cr_assert_str_eq(json_string_value(json_object_get(o, "node")), name);
		if (down && !strcmp(name, down)) {
			cr_assert(json_is_false(json_object_get(o, "up")), "%s", json_dumps(o, 0));
			cr_assert(
			    strstr(json_string_value(json_object_get(o, "error")) ?: "", "n2.sock"),
			    "%s", json_dumps(o, 0));
		} else {
			cr_assert(json_is_true(json_object_get(o, "up")), "%s", json_dumps(o, 0));
		}
	}
}

Test(hkctl_cluster, replica_commands_cover_every_node)
{
	static const char *const counters[] = {"entries",	 "extents", "bytes_covered",
					       "metadata_bytes", "hits",    "misses",
					       "invalidations"};
	struct hk_proc_result r = {0};
	json_t *j, *totals, *o;
	size_t i;

	start_cluster(3);
	ctl(&r, "replica", "stats", "--json", NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	j = parse(r.out);
	assert_node_list(j, 3, NULL);
	json_array_foreach(json_object_get(j, "nodes"), i, o)
	{
		cr_assert(json_is_true(json_object_get(o, "enabled")), "%s", r.out);
		for (size_t k = 0; k < sizeof(counters) / sizeof(counters[0]); k++)
			jint(o, counters[k]);
		cr_assert_eq(jint(o, "entries"), 0); /* no guest ran */
	}
	totals = json_object_get(j, "totals");
	cr_assert_eq(jint(totals, "nodes"), 3);
	cr_assert_eq(jint(totals, "nodes_up"), 3);
	for (size_t k = 0; k < sizeof(counters) / sizeof(counters[0]); k++)
		if (strcmp(counters[k], "metadata_bytes")) /* an empty table has a heap */
			cr_assert_eq(jint(totals, counters[k]), 0, "%s", r.out);
	cr_assert_eq(json_object_size(j), 2, "only nodes and totals: %s", r.out);
	json_decref(j);

	ctl(&r, "replica", "stats", NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_assert(strstr(r.out, "NODE") && strstr(r.out, "ENTRIES"), "%s", r.out);
	for (unsigned k = 1; k <= 3; k++) {
		char row[16];

		snprintf(row, sizeof(row), "\nn%u ", k);
		cr_assert_eq(hk_count(r.out, row), 1, "%s", r.out);
	}
	cr_assert(strstr(r.out, "\ntotal ") && strstr(r.out, "3/3"), "%s", r.out);

	ctl(&r, "replica", "show", "--json", NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	j = parse(r.out);
	cr_assert_eq(json_array_size(json_object_get(j, "extents")), 0, "%s", r.out);
	cr_assert(json_is_false(json_object_get(j, "truncated")));
	assert_node_list(j, 3, NULL);
	json_array_foreach(json_object_get(j, "nodes"), i, o) cr_assert_eq(jint(o, "extents"), 0);
	cr_assert_eq(jint(json_object_get(j, "totals"), "nodes_up"), 3);
	cr_assert_eq(jint(json_object_get(j, "totals"), "pages"), 0);
	json_decref(j);

	ctl(&r, "replica", "show", "--gpa", "64M-128M", "--limit", "10", NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_assert(strstr(r.out, "FROM") && strstr(r.out, "GPA"), "%s", r.out);
	cr_assert(strstr(r.out, "total: 0 extents, 0 pages from 3/3 nodes"), "%s", r.out);

	ctl(&r, "replica", "verify", "--json", NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	j = parse(r.out);
	assert_node_list(j, 3, NULL);
	json_array_foreach(json_object_get(j, "nodes"), i, o)
	{
		cr_assert_eq(jint(o, "checked"), 0);
		cr_assert_eq(jint(o, "mismatches"), 0);
	}
	cr_assert_eq(jint(json_object_get(j, "totals"), "nodes_up"), 3);
	cr_assert_eq(jint(json_object_get(j, "totals"), "mismatches"), 0);
	cr_assert(json_is_true(json_object_get(j, "verified")), "%s", r.out);
	json_decref(j);

	ctl(&r, "replica", "verify", NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_assert(strstr(r.out, "CHECKED") && strstr(r.out, "\nn2 ") && strstr(r.out, "3/3"), "%s",
		  r.out);
	cr_assert_str_eq(r.err, "");
	hk_proc_result_free(&r);
}

Test(hkctl_cluster, replica_commands_name_a_node_that_is_down)
{
	static const char *const cmds[] = {"stats", "show", "verify"};
	struct hk_proc_result r = {0};
	json_t *j;

	start_cluster(3);
	kill_node(1); /* n2: its socket file stays, nobody listens */
	for (size_t k = 0; k < sizeof(cmds) / sizeof(cmds[0]); k++) {
		ctl(&r, "replica", cmds[k], "--json", NULL);
		cr_assert_eq(r.status, 1, "replica %s with n2 down: status %d", cmds[k], r.status);
		/* One line, naming the node and why. */
		cr_assert_eq(hk_lines(r.err), 1, "%s", r.err);
		cr_assert(strstr(r.err, "hkctl: node n2: ") && strstr(r.err, "n2.sock") &&
			      strstr(r.err, "refused"),
			  "%s", r.err);
		j = parse(r.out);
		assert_node_list(j, 3, "n2");
		cr_assert_eq(jint(json_object_get(j, "totals"), "nodes_up"), 2, "%s", r.out);
		if (!strcmp(cmds[k], "verify"))
			cr_assert(json_is_false(json_object_get(j, "verified")), "%s", r.out);
		json_decref(j);

		ctl(&r, "replica", cmds[k], NULL);
		cr_assert_eq(r.status, 1, "replica %s", cmds[k]);
		cr_assert_eq(hk_lines(r.err), 1, "%s", r.err);
		cr_assert(strstr(r.err, "node n2"), "%s", r.err);
		cr_assert(strstr(r.out, "2/3"), "replica %s: %s", cmds[k], r.out);
	}
	hk_proc_result_free(&r);
}

Test(hkctl_cluster, replica_node_option_asks_one_node)
{
	struct hk_proc_result r = {0};
	json_t *j;

	start_cluster(3);
	/* One node asked: the single-node output, as on a one-node config. */
	ctl(&r, "--node", "n2", "replica", "stats", "--json", NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	j = parse(r.out);
	cr_assert_null(json_object_get(j, "nodes"), "%s", r.out);
	cr_assert_eq(jint(j, "entries"), 0);
	cr_assert(json_is_true(json_object_get(j, "enabled")));
	json_decref(j);

	ctl(&r, "replica", "show", "--node", "n3", "--json", NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	j = parse(r.out);
	cr_assert_eq(json_array_size(json_object_get(j, "extents")), 0);
	cr_assert_null(json_object_get(j, "nodes"), "%s", r.out);
	json_decref(j);

	ctl(&r, "replica", "verify", "--node", "n1", NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_assert(strstr(r.out, "checked     0 pages"), "%s", r.out);

	/* An unknown node: one line naming it and the nodes there are. */
	ctl(&r, "--node", "n9", "replica", "stats", NULL);
	cr_assert_eq(r.status, 1);
	cr_assert_eq(hk_lines(r.err), 1, "%s", r.err);
	cr_assert(strstr(r.err, "n9") && strstr(r.err, "n1, n2, n3"), "%s", r.err);
	cr_assert_str_eq(r.out, "");

	/* An unknown disk is refused once, not by every node. */
	ctl(&r, "replica", "show", "--disk", "nosuch", NULL);
	cr_assert_eq(r.status, 1);
	cr_assert_eq(hk_lines(r.err), 1, "%s", r.err);
	cr_assert(strstr(r.err, "nosuch"), "%s", r.err);

	/* The one node asked is down: its error is all there is. */
	kill_node(1);
	ctl(&r, "--node", "n2", "replica", "verify", "--json", NULL);
	cr_assert_eq(r.status, 1);
	cr_assert_eq(hk_lines(r.err), 1, "%s", r.err);
	cr_assert(strstr(r.err, "node n2: ") && strstr(r.err, "n2.sock"), "%s", r.err);
	cr_assert_str_eq(r.out, "");
	hk_proc_result_free(&r);
}

Test(hkctl_cluster, single_node_replica_output_keeps_its_shape)
{
	struct hk_proc_result r = {0};
	json_t *j;

	start_cluster(1);
	ctl(&r, "replica", "stats", "--json", NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	j = parse(r.out);
	cr_assert_null(json_object_get(j, "nodes"), "%s", r.out);
	cr_assert_null(json_object_get(j, "totals"), "%s", r.out);
	cr_assert_eq(jint(j, "entries"), 0);
	jint(j, "hits");
	json_decref(j);

	ctl(&r, "replica", "stats", NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_assert(strstr(r.out, "table          on"), "%s", r.out);

	ctl(&r, "replica", "show", NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_assert_null(strstr(r.out, "FROM"), "%s", r.out);
	cr_assert_eq(hk_lines(r.out), 1, "only the header: %s", r.out);

	ctl(&r, "replica", "verify", "--json", NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	j = parse(r.out);
	cr_assert_eq(jint(j, "checked"), 0);
	cr_assert_eq(jint(j, "mismatches"), 0);
	cr_assert_null(json_object_get(j, "nodes"), "%s", r.out);
	json_decref(j);
	hk_proc_result_free(&r);
}

Test(hkctl_cluster, bad_arguments_exit_2_with_one_line)
{
	static const char *const cases[][4] = {
	    {"top", "--interval", "abc", "abc"}, {"top", "--interval", "5", "'5'"},
	    {"top", "--count", "-1", "-1"},	 {"top", "--json", NULL, "--json"},
	    {"nodes", "extra", NULL, "extra"},	 {"status", "extra", NULL, "extra"},
	};
	struct hk_proc_result r = {0};

	start_cluster(1);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		ctl(&r, cases[i][0], cases[i][1], cases[i][2], NULL);
		cr_assert_eq(r.status, 2, "hkctl %s %s %s: status %d (%s)", cases[i][0],
			     cases[i][1], cases[i][2] ?: "", r.status, r.err);
		cr_assert_eq(hk_lines(r.err), 1, "%s", r.err);
		cr_assert(strstr(r.err, cases[i][3]), "%s", r.err);
		cr_assert_str_eq(r.out, "");
	}
	hk_proc_result_free(&r);
}

/* ---- a disk attached to another node than the first ----------------------- */

static char disk_script[4096], disk_dir[64];

static void disk_teardown(void)
{
	char *down[] = {"/bin/bash", disk_script, "down", "--dir", disk_dir, NULL};
	struct hk_proc_result r = {0};
	char cmd[128];

	if (!disk_dir[0])
		return;
	hk_run(down, 60, &r);
	hk_proc_result_free(&r);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", disk_dir);
	if (system(cmd))
		fprintf(stderr, "cannot remove %s\n", disk_dir);
	disk_dir[0] = 0;
}

TestSuite(hkctl_disk, .fini = disk_teardown);

/* deploy/cluster.sh up -n 2 --disk-node n2, as a user makes it. */
static void disk_cluster_up(void)
{
	const char *src = getenv("HK_SOURCE_ROOT");
	char *argv[] = {"/bin/bash", disk_script,   "up",	"--dir", disk_dir,
			"-n",	     "2",	    "--memory", "64M",	 "--disk-size",
			"8M",	     "--disk-node", "n2",	NULL};
	struct hk_proc_result r = {0};

	cr_assert_not_null(src, "HK_SOURCE_ROOT not set by meson");
	snprintf(disk_script, sizeof(disk_script), "%s/deploy/cluster.sh", src);
	if (getenv("HK_BUILD_ROOT"))
		setenv("HK_BUILD_DIR", getenv("HK_BUILD_ROOT"), 1);
	/* Ports no other test process gets (tests/common/hk_ports.c). */
	cr_assert_eq(hk_port_base_env(3), 0, "no free block of test ports");
	snprintf(disk_dir, sizeof(disk_dir), "/tmp/hk-hkctld-XXXXXX");
	cr_assert_not_null(mkdtemp(disk_dir), "mkdtemp: %s", strerror(errno));
	memset(&cl, 0, sizeof(cl));
	hk_build_path("node/hkctl", cl.hkctl, sizeof(cl.hkctl));
	snprintf(cl.conf, sizeof(cl.conf), "%s/hk.conf", disk_dir);
	argv[4] = disk_dir;
	hk_run_checked(argv, 120, &r);
	cr_assert_eq(r.status, 0, "cluster.sh up -n 2 --disk-node n2: %s", r.err);
	hk_proc_result_free(&r);
}

Test(hkctl_disk, mkdata_goes_to_the_node_the_disk_is_attached_to)
{
	struct hk_proc_result r = {0};
	json_t *j;

	disk_cluster_up();
	ctl(&r, "disk", "mkdata", "--disk", "d0", "--size", "1M", NULL);
	cr_assert_eq(r.status, 0, "mkdata without --node: %s", r.err);
	cr_assert(strstr(r.out, "disk d0: 255 records (1 MiB)"), "%s", r.out);

	ctl(&r, "--json", "disk", "mkdata", "--disk", "d0", "--size", "1M", NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	j = parse(r.out);
	cr_assert(json_is_true(json_object_get(j, "reused")), "the second run wrote again: %s",
		  r.out);
	json_decref(j);

	/* An explicit --node still wins: n1 only forwards the disk. */
	ctl(&r, "--node", "n1", "disk", "mkdata", "--disk", "d0", "--size", "1M", NULL);
	cr_assert_eq(r.status, 1, "%s", r.err);
	cr_assert(strstr(r.err, "node n1 serves no disk 'd0'"), "%s", r.err);

	ctl(&r, "disk", "mkdata", "--disk", "d9", "--size", "1M", NULL);
	cr_assert_eq(r.status, 1, "%s", r.err);
	cr_assert_eq(hk_lines(r.err), 1, "%s", r.err);
	cr_assert(strstr(r.err, "has no [disk d9]"), "%s", r.err);
	hk_proc_result_free(&r);
}
