/*
 * deploy/cluster.sh as a user runs it: up writes a config and a disk and
 * returns once the daemons answer (and, with -n > 1, have formed the
 * cluster); status reports them; down leaves no process, socket or pid file
 * behind.  No guest is booted, so this runs without /dev/kvm.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hk_test.h"

static char script[4096], hkctl[4096], dir[64];

static void setup(void)
{
	const char *src = getenv("HK_SOURCE_ROOT");

	cr_assert_not_null(src, "HK_SOURCE_ROOT not set by meson");
	snprintf(script, sizeof(script), "%s/deploy/cluster.sh", src);
	hk_build_path("node/hkctl", hkctl, sizeof(hkctl));
	/* cluster.sh must use the binaries of the build under test. */
	if (getenv("HK_BUILD_ROOT"))
		setenv("HK_BUILD_DIR", getenv("HK_BUILD_ROOT"), 1);
	snprintf(dir, sizeof(dir), "/tmp/hk-cluster-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
}

static void teardown(void)
{
	char *down[] = {"/bin/bash", script, "down", "--dir", dir, NULL};
	struct hk_proc_result r;
	char cmd[128];

	hk_run(down, 60, &r); /* harmless when already down */
	hk_proc_result_free(&r);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd))
		fprintf(stderr, "cannot remove %s\n", dir);
}

TestSuite(cluster, .init = setup, .fini = teardown);

static void cluster(struct hk_proc_result *r, const char *verb, const char *a1, const char *a2)
{
	char *argv[] = {"/bin/bash", script, (char *)verb, "--dir", dir, (char *)a1, (char *)a2,
			NULL};

	hk_run(argv, 120, r);
}

static pid_t read_pid(const char *node)
{
	char path[128];

	snprintf(path, sizeof(path), "%s/%s.pid", dir, node);
	return hk_read_pid(path);
}

Test(cluster, up_status_down_leaves_nothing)
{
	struct hk_proc_result r;
	char conf[128], sock[128], disk[128];
	struct stat st;
	pid_t pid;

	cluster(&r, "up", "--disk-size", "64M");
	cr_assert_eq(r.status, 0, "up: %s %s", r.out, r.err);
	cr_assert(strstr(r.out, "node n1 up"), "%s", r.out);
	hk_proc_result_free(&r);

	snprintf(conf, sizeof(conf), "%s/hk.conf", dir);
	snprintf(sock, sizeof(sock), "%s/n1.sock", dir);
	snprintf(disk, sizeof(disk), "%s/d0.img", dir);
	cr_assert_eq(stat(disk, &st), 0, "no data disk");
	cr_assert_eq(st.st_size, 64 << 20);
	pid = read_pid("n1");
	cr_assert_gt(pid, 0);
	cr_assert_eq(kill(pid, 0), 0, "daemon not running");

	char *status[] = {hkctl, "--config", conf, "--json", "status", NULL};

	hk_run(status, 30, &r);
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_assert(strstr(r.out, "\"d0\""), "%s", r.out);
	hk_proc_result_free(&r);

	cluster(&r, "status", NULL, NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	cr_assert(strstr(r.out, "node n1: running"), "%s", r.out);
	hk_proc_result_free(&r);

	cluster(&r, "up", NULL, NULL);
	cr_assert_neq(r.status, 0, "a second up must refuse");
	cr_assert(strstr(r.err, "already running"), "%s", r.err);
	hk_proc_result_free(&r);

	cluster(&r, "down", NULL, NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	hk_proc_result_free(&r);
	cr_assert_neq(kill(pid, 0), 0, "daemon %d still running after down", (int)pid);
	cr_assert_neq(access(sock, F_OK), 0, "socket left behind");
	cr_assert_eq(read_pid("n1"), 0, "pid file left behind");

	cluster(&r, "status", NULL, NULL);
	cr_assert_neq(r.status, 0);
	cr_assert(strstr(r.out, "not running"), "%s", r.out);
	hk_proc_result_free(&r);
}

Test(cluster, bad_arguments)
{
	struct hk_proc_result r;

	cluster(&r, "up", "-n", "0");
	cr_assert_neq(r.status, 0);
	cr_assert(strstr(r.err, "-n"), "%s", r.err);
	hk_proc_result_free(&r);
	cluster(&r, "up", "-n", "65");
	cr_assert_neq(r.status, 0);
	cr_assert(strstr(r.err, "at most 64"), "%s", r.err);
	hk_proc_result_free(&r);
	cluster(&r, "up", "--port-base", "80");
	cr_assert_neq(r.status, 0);
	cr_assert(strstr(r.err, "--port-base"), "%s", r.err);
	hk_proc_result_free(&r);
	cluster(&r, "up", "--frobnicate", "1");
	cr_assert_neq(r.status, 0);
	cr_assert(strstr(r.err, "--frobnicate"), "%s", r.err);
	hk_proc_result_free(&r);
	cluster(&r, "up", "--memory", "lots");
	cr_assert_neq(r.status, 0, "a bad size must stop up");
	hk_proc_result_free(&r);
}

/* Three daemons on loopback: up returns with the cluster formed. */
Test(cluster, three_nodes_form_a_cluster_and_go_down_cleanly)
{
	static const char *const names[] = {"n1", "n2", "n3"};
	struct hk_proc_result r;
	char conf[128];
	pid_t pids[3];

	/* Ports of our own, so parallel runs do not collide. */
	cr_assert_eq(hk_port_base_env(3), 0, "no free block of test ports");
	cluster(&r, "up", "-n", "3");
	cr_assert_eq(r.status, 0, "up -n 3: %s", r.err);
	hk_proc_result_free(&r);
	for (int i = 0; i < 3; i++) {
		pids[i] = read_pid(names[i]);
		cr_assert_gt(pids[i], 0, "no pid file for %s", names[i]);
	}

	snprintf(conf, sizeof(conf), "%s/hk.conf", dir);
	{
		char *argv[] = {hkctl, "--config", conf, "nodes", "--json", NULL};

		hk_run(argv, 30, &r);
		cr_assert_eq(r.status, 0, "%s", r.err);
		cr_assert(strstr(r.out, "\"up\": 3") || strstr(r.out, "\"up\":3"), "%s", r.out);
		hk_proc_result_free(&r);
	}

	cluster(&r, "down", NULL, NULL);
	cr_assert_eq(r.status, 0, "%s", r.err);
	hk_proc_result_free(&r);
	for (int i = 0; i < 3; i++) {
		char sock[128];

		snprintf(sock, sizeof(sock), "%s/%s.sock", dir, names[i]);
		cr_assert_neq(kill(pids[i], 0), 0, "%s still running after down", names[i]);
		cr_assert_neq(access(sock, F_OK), 0, "%s left behind", sock);
	}
	unsetenv("HK_PORT_BASE");
}
