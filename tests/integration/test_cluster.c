/*
 * deploy/cluster.sh as a user runs it: up writes a config and a disk and
 * returns once the daemon answers; status reports it; down leaves no
 * process, socket or pid file behind.  No guest is booted, so this runs
 * without /dev/kvm.
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
	long pid = 0;
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s.pid", dir, node);
	f = fopen(path, "r");
	if (!f)
		return 0;
	if (fscanf(f, "%ld", &pid) != 1)
		pid = 0;
	fclose(f);
	return (pid_t)pid;
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

	cluster(&r, "up", "-n", "3");
	cr_assert_neq(r.status, 0);
	cr_assert(strstr(r.err, "P3"), "%s", r.err);
	hk_proc_result_free(&r);
	cluster(&r, "up", "--frobnicate", "1");
	cr_assert_neq(r.status, 0);
	cr_assert(strstr(r.err, "--frobnicate"), "%s", r.err);
	hk_proc_result_free(&r);
	cluster(&r, "up", "--memory", "lots");
	cr_assert_neq(r.status, 0, "a bad size must stop up");
	hk_proc_result_free(&r);
}
