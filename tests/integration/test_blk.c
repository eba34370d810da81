/*
 * virtio-blk end to end under `hkd run`: guestos's disk workloads
 * (guestos/blktest.c, guestos/blkbench.c, guestos/kvdb.c) against the
 * host's device model, disk backend and storage-replica table.
 *
 *   blkstress   randomized reads/writes/guest writes checked against a
 *               model: a missing replica invalidation shows up as stale
 *               data; with the table on and off;
 *   blkbad      malformed requests: each an I/O error, one stderr line
 *               each, device and disk intact;
 *   errors      a disk file truncated under a running guest, reads past
 *               the end, a data set too short for its superblock, a
 *               corrupt record: the guest sees and names the error, hkd
 *               keeps running and exits with the guest's status.
 *
 * Every test that boots a guest needs /dev/kvm and skips without it
 * (tests/run.sh runs this suite in a nested-SVM VM where it is absent).
 * Disks are sparse files under /tmp, removed before any assertion.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "hk_test.h"
#include "hyperkernel.h"

/* Guest exit value v gives status (v << 1) | 1. */
#define STATUS_OK	1
#define STATUS_WORKLOAD 3
#define STATUS_CRASHED	4

#define MIB (1024 * 1024)

static char hkd[4096];

static void setup(void)
{
	hk_build_path("node/hkd", hkd, sizeof(hkd));
}

TestSuite(blk, .init = setup);

static void need_kvm(void)
{
	char why[256];

	if (!hk_kvm_available(why, sizeof(why)))
		cr_skip_test("needs /dev/kvm: %s", why);
}

static const char *env_path(const char *var)
{
	const char *p = getenv(var);

	cr_assert(p && *p, "%s not set by meson", var);
	return p;
}

/* A sparse file of size bytes under /tmp; malloc'd path. */
static char *temp_disk(const char *tag, off_t size)
{
	char *path;
	int fd;

	cr_assert(asprintf(&path, "/tmp/hk-blk-%s-XXXXXX", tag) > 0);
	fd = mkstemp(path);
	cr_assert(fd >= 0, "mkstemp %s: %s", path, strerror(errno));
	if (ftruncate(fd, size) < 0) {
		int e = errno;

		close(fd);
		unlink(path);
		cr_assert_fail("ftruncate %s: %s", path, strerror(e));
	}
	close(fd);
	return path;
}

static void remove_disk(char *path)
{
	unlink(path);
	free(path);
}

/* A kvdb data set of size bytes (kvdb-gen), in a fresh temp file. */
static char *kvdb_disk(const char *tag, const char *size, const char *seed)
{
	char *path = temp_disk(tag, 0);
	char *argv[] = {(char *)env_path("HK_KVDB_GEN"), path, (char *)size, (char *)seed, NULL};
	struct hk_proc_result r;

	hk_run(argv, 60, &r);
	if (r.status != 0) {
		unlink(path);
		cr_assert_fail("kvdb-gen failed (%d): %s", r.status, r.err);
	}
	hk_proc_result_free(&r);
	return path;
}

/* argv of hkd run with one disk; replicas NULL: hkd's default (on). */
static void guest_argv(char *argv[16], const char *disk, const char *replicas, const char *cmdline)
{
	unsigned n = 0;

	argv[n++] = hkd;
	argv[n++] = "run";
	argv[n++] = "--kernel";
	argv[n++] = (char *)env_path("HK_GUESTOS");
	argv[n++] = "--memory";
	argv[n++] = "512M";
	argv[n++] = "--vcpus";
	argv[n++] = "2";
	argv[n++] = "--disk";
	argv[n++] = (char *)disk;
	if (replicas) {
		argv[n++] = "--replicas";
		argv[n++] = (char *)replicas;
	}
	argv[n++] = "--cmdline";
	argv[n++] = (char *)cmdline;
	argv[n] = NULL;
}

static void run_guest(const char *disk, const char *replicas, const char *cmdline, int timeout_s,
		      struct hk_proc_result *r)
{
	char *argv[16];

	guest_argv(argv, disk, replicas, cmdline);
	hk_run(argv, timeout_s, r);
}

/* Every line of text contains needle (and there are n of them). */
static bool every_line_has(const char *text, const char *needle, int *n)
{
	const char *p = text;

	*n = 0;
	while (*p) {
		const char *nl = strchr(p, '\n');
		size_t len = nl ? (size_t)(nl - p) + 1 : strlen(p);
		char *line = strndup(p, len);
		bool has = strstr(line, needle) != NULL;

		free(line);
		if (!has)
			return false;
		(*n)++;
		p += len;
	}
	return true;
}

/* ---- blkstress ----------------------------------------------------------- */

static void stress(const char *replicas, const char *cmdline)
{
	char *disk = temp_disk("stress", 4 * MIB);
	struct hk_proc_result r;

	run_guest(disk, replicas, cmdline, 150, &r);
	remove_disk(disk);
	cr_assert(!r.timed_out, "blkstress timed out; console:\n%s", r.out);
	cr_assert(strstr(r.out, "\nblkstress ok\n"),
		  "no 'blkstress ok' (status %d); stderr:\n%s\nconsole:\n%s", r.status, r.err,
		  r.out);
	cr_assert_eq(r.status, STATUS_OK, "status %d; stderr:\n%s", r.status, r.err);
	cr_assert(strstr(r.out, "blkstress: 20000 ops ("), "console:\n%s", r.out);
	cr_assert(!strstr(r.err, "hyperkernel:"), "hkd complained:\n%s", r.err);
	hk_proc_result_free(&r);
}

/* Reads served from replica frames (copied or in place) must never be stale. */
Test(blk, blkstress_with_replicas)
{
	need_kvm();
	stress(NULL, "blkstress ops=20000 seed=1");
}

/* The baseline: every read from the disk. Same checks, another seed. */
Test(blk, blkstress_without_replicas)
{
	need_kvm();
	stress("off", "blkstress ops=20000 seed=2");
}

/*
 * Write tracking (hyperkernel/wtrack.c).  The crowded blkstress below
 * under each tracker by name, and the race the KVM dirty log opens: a
 * guest write to a replica page between the serve's harvest and its copy.
 * HK_SERVE_DELAY_US widens that window to milliseconds while vCPU 1
 * writes bytes into pages whose blocks vCPU 0 reads into other pages; hkd
 * must notice (it harvests the copied pages again) and serve from the
 * disk.  hkd-wtrack-mutant skips that second harvest: the same run must
 * then read stale data, or this test could not tell.
 */
#define CROWDED "blkstress ops=6000 seed=3 pages=8 blocks=12"

static void run_tracked(const char *bin, const char *wt, const char *cmdline,
			struct hk_proc_result *r)
{
	char *disk = temp_disk("wtrack", MIB);
	char *argv[] = {
	    (char *)bin, "run",	      "--kernel",	  (char *)env_path("HK_GUESTOS"),
	    "--memory",	 "512M",      "--vcpus",	  "2",
	    "--disk",	 disk,	      "--write-tracking", (char *)wt,
	    "--stats",	 "--cmdline", (char *)cmdline,	  NULL};

	hk_run(argv, 150, r);
	remove_disk(disk);
	if (r->status == 2 && strstr(r->err, "lacks KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2"))
		cr_skip_test("this KVM has no manual dirty log: %s", r->err);
}

static void tracked_ok(const char *wt, const char *name)
{
	struct hk_proc_result r;
	char want[64];

	need_kvm();
	run_tracked(hkd, wt, CROWDED, &r);
	cr_assert(strstr(r.out, "\nblkstress ok\n"), "%s: status %d; stderr:\n%s\nconsole:\n%s", wt,
		  r.status, r.err, r.out);
	snprintf(want, sizeof(want), "write_tracking=%s ", name);
	cr_assert(strstr(r.err, want), "%s: stderr:\n%s", wt, r.err);
	hk_proc_result_free(&r);
}

Test(blk, blkstress_tracking_writes_with_uffd)
{
	tracked_ok("uffd", "uffd");
}

Test(blk, blkstress_tracking_writes_with_kvm_dirty_log)
{
	tracked_ok("kvm", "kvm-dirty-log");
}

Test(blk, a_guest_write_during_a_served_copy_is_caught)
{
	char mutant[4096];
	struct hk_proc_result r;

	need_kvm();
	hk_build_path("node/hkd-wtrack-mutant", mutant, sizeof(mutant));
	setenv("HK_SERVE_DELAY_US", "3000", 1);
	run_tracked(hkd, "kvm", CROWDED, &r);
	cr_assert(strstr(r.out, "\nblkstress ok\n"), "status %d; stderr:\n%s\nconsole:\n%s",
		  r.status, r.err, r.out);
	hk_proc_result_free(&r);

	run_tracked(mutant, "kvm", CROWDED, &r);
	unsetenv("HK_SERVE_DELAY_US");
	cr_assert(strstr(r.out, "blkstress: stale data in block "),
		  "the mutant (no harvest after the copy) was not caught: status %d; console:\n%s",
		  r.status, r.out);
	cr_assert_eq(r.status, STATUS_WORKLOAD, "status %d", r.status);
	hk_proc_result_free(&r);
}

/* Few pages and blocks: nearly every request lands on a page or block in use. */
Test(blk, blkstress_crowded)
{
	struct hk_proc_result r;
	char *disk;

	need_kvm();
	disk = temp_disk("crowded", MIB);
	run_guest(disk, NULL, "blkstress ops=6000 seed=3 pages=8 blocks=12", 150, &r);
	remove_disk(disk);
	cr_assert_eq(r.status, STATUS_OK, "status %d; stderr:\n%s\nconsole:\n%s", r.status, r.err,
		     r.out);
	cr_assert(strstr(r.out, "\nblkstress ok\n"), "console:\n%s", r.out);
	hk_proc_result_free(&r);
}

/* ---- blkbad -------------------------------------------------------------- */

/*
 * Each malformed request completes with an I/O error (unknown types:
 * unsupported), hkd says so in one stderr line per I/O error, the device
 * never needs a reset, and hkd ends with the guest's own status.
 */
Test(blk, malformed_requests_get_io_errors)
{
	struct hk_proc_result r;
	int expected, lines;
	char *disk;

	need_kvm();
	disk = temp_disk("bad", 32 * MIB);
	run_guest(disk, NULL, "blkbad", 120, &r);
	remove_disk(disk);
	cr_assert(!strstr(r.out, "NEEDS_RESET"), "the device needed a reset:\n%s\nstderr:\n%s",
		  r.out, r.err);
	cr_assert_eq(r.status, STATUS_OK, "status %d; stderr:\n%s\nconsole:\n%s", r.status, r.err,
		     r.out);
	cr_assert(strstr(r.out, "\nblkbad ok\n"), "console:\n%s", r.out);
	expected = hk_count(r.out, ": I/O error as expected\n");
	cr_assert_geq(expected, 20, "console:\n%s", r.out);
	cr_assert_eq(hk_count(r.out, ": unsupported as expected\n"), 2, "console:\n%s", r.out);
	cr_assert(every_line_has(r.err, ": I/O error to guest", &lines),
		  "stderr has other lines:\n%s", r.err);
	cr_assert_eq(lines, expected, "%d I/O errors in the guest, %d stderr lines:\n%s", expected,
		     lines, r.err);
	hk_proc_result_free(&r);
}

/* ---- errors ---------------------------------------------------------------- */

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf = NULL;
	size_t len = 0;

	if (!f)
		return strdup("");
	if (getdelim(&buf, &len, '\0', f) < 0) {
		free(buf);
		buf = strdup("");
	}
	fclose(f);
	return buf;
}

/* Starts argv with stdout and stderr in two files (a merged log splits lines). */
static pid_t spawn2(char *const argv[], const char *out_path, const char *err_path)
{
	pid_t pid = fork();

	if (pid == 0) {
		int in = open("/dev/null", O_RDONLY);
		int out = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		int err = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

		if (in < 0 || out < 0 || err < 0)
			_exit(127);
		dup2(in, 0);
		dup2(out, 1);
		dup2(err, 2);
		execv(argv[0], argv);
		_exit(127);
	}
	return pid;
}

/*
 * The disk file shrinks under a running guest: reads of the lost tail fail
 * on the host (one line each), reach the guest as I/O errors, the device
 * still serves the rest, and hkd exits with the guest's status.
 */
Test(blk, disk_truncated_under_a_running_guest)
{
	char *argv[16], *disk, *out_path, *err_path, *out = NULL, *err;
	double deadline;
	int st = -1, status = -1, lines;
	bool truncated = false, exited = false;
	pid_t pid;

	need_kvm();
	disk = temp_disk("trunc", 16 * MIB);
	guest_argv(argv, disk, NULL, "blkbench size=16M req=64K depth=4 passes=1000000");
	cr_assert(asprintf(&out_path, "%s.out", disk) > 0 &&
		  asprintf(&err_path, "%s.err", disk) > 0);
	pid = spawn2(argv, out_path, err_path);
	deadline = now_s() + 120;
	/* Truncate once a first pass has read the whole disk. */
	while (now_s() < deadline) {
		if (waitpid(pid, &st, WNOHANG) == pid) {
			exited = true;
			break;
		}
		free(out);
		out = slurp(out_path);
		if (!truncated && strstr(out, "blkbench: read 16777216 bytes")) {
			truncated = truncate(disk, 8 * MIB) == 0;
			if (!truncated)
				break;
		}
		usleep(50000);
	}
	if (!exited) {
		kill(pid, SIGKILL);
		waitpid(pid, &st, 0);
	}
	free(out);
	out = slurp(out_path);
	err = slurp(err_path);
	unlink(out_path);
	unlink(err_path);
	free(out_path);
	free(err_path);
	remove_disk(disk);
	status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
	cr_assert(truncated, "never saw a first pass (status %d):\n%s\nstderr:\n%s", status, out,
		  err);
	cr_assert(exited, "hkd still running 120 s later:\n%s\nstderr:\n%s", out, err);
	cr_assert_eq(status, STATUS_WORKLOAD,
		     "status %d (want 3: the guest saw the error):\n%s\nstderr:\n%s", status, out,
		     err);
	cr_assert(every_line_has(err, " failed: Input/output error", &lines) && lines > 0,
		  "stderr:\n%s", err);
	cr_assert(strstr(err, "hyperkernel: d0: read at byte "), "stderr:\n%s", err);
	cr_assert(strstr(out, "blkbench: read of 65536 bytes at byte ") &&
		      strstr(out, " failed: I/O error (status 1)\n"),
		  "guest saw no I/O error:\n%s", out);
	cr_assert(strstr(out, "blkbench: disk 0 still answers after the errors\n"), "%s", out);
	free(out);
	free(err);
}

/*
 * blkbench told to read past the end of an 8 MiB disk: the four requests
 * beyond it fail alone (the device refuses them, one line each), the eight
 * before it succeed in the same batches.
 */
Test(blk, reads_past_the_end_fail_alone)
{
	struct hk_proc_result r;
	int lines;
	char *disk;

	need_kvm();
	disk = temp_disk("short", 8 * MIB);
	run_guest(disk, NULL, "blkbench size=12M req=1M depth=8", 120, &r);
	remove_disk(disk);
	cr_assert_eq(r.status, STATUS_WORKLOAD, "status %d; stderr:\n%s\nconsole:\n%s", r.status,
		     r.err, r.out);
	cr_assert(strstr(r.out, "blkbench: read of 1048576 bytes at byte ") &&
		      strstr(r.out, " failed: I/O error (status 1)\n"),
		  "console:\n%s", r.out);
	cr_assert(strstr(r.out, "blkbench: pass 1: 4 of 12 requests failed\n"), "console:\n%s",
		  r.out);
	cr_assert(strstr(r.out, "blkbench: disk 0 still answers after the errors\n"), "%s", r.out);
	cr_assert(every_line_has(r.err, "transfer past the end of the disk", &lines), "stderr:\n%s",
		  r.err);
	cr_assert_eq(lines, 4, "stderr:\n%s", r.err);
	hk_proc_result_free(&r);
}

/* A data set cut short before boot: kvdb names the mismatch and fails. */
Test(blk, kvdb_on_a_truncated_data_set)
{
	struct hk_proc_result r;
	char *disk;

	need_kvm();
	disk = kvdb_disk("kvshort", "16M", "42");
	cr_assert_eq(truncate(disk, 8 * MIB), 0);
	run_guest(disk, NULL, "kvdb ops=1000", 120, &r);
	remove_disk(disk);
	cr_assert_eq(r.status, STATUS_WORKLOAD, "status %d; stderr:\n%s\nconsole:\n%s", r.status,
		     r.err, r.out);
	cr_assert(strstr(r.out, "kvdb: disk 0: bad superblock (size: 4095 records, the disk holds "
				"2048 blocks)\n"),
		  "console:\n%s", r.out);
	cr_assert(!strstr(r.out, "kvdb ok"), "console:\n%s", r.out);
	hk_proc_result_free(&r);
}

/* One flipped byte in block 7 (record 6): found, named, exit value 1. */
Test(blk, kvdb_reports_a_corrupt_record)
{
	struct hk_proc_result r;
	unsigned char c;
	char *disk;
	int fd;

	need_kvm();
	disk = kvdb_disk("kvbad", "16M", "42");
	fd = open(disk, O_RDWR);
	cr_assert(fd >= 0);
	cr_assert_eq(pread(fd, &c, 1, 7 * 4096 + 1000), 1);
	c ^= 0x40;
	cr_assert_eq(pwrite(fd, &c, 1, 7 * 4096 + 1000), 1);
	close(fd);
	run_guest(disk, NULL, "kvdb ops=1000", 120, &r);
	remove_disk(disk);
	cr_assert_eq(r.status, STATUS_WORKLOAD, "status %d; stderr:\n%s\nconsole:\n%s", r.status,
		     r.err, r.out);
	cr_assert(strstr(r.out, "\nkvdb: record 6 at block 7 corrupt (checksum mismatch)\n"),
		  "console:\n%s", r.out);
	cr_assert(!strstr(r.out, "kvdb ok"), "console:\n%s", r.out);
	hk_proc_result_free(&r);
}

/* ---- blkbench ---------------------------------------------------------------- */

Test(blk, blkbench_reads_and_writes)
{
	struct hk_proc_result w, rd;
	char *disk;

	need_kvm();
	disk = temp_disk("bench", 16 * MIB);
	run_guest(disk, NULL, "blkbench mode=write req=256K depth=8", 120, &w);
	run_guest(disk, NULL, "blkbench", 120, &rd);
	remove_disk(disk);
	cr_assert_eq(w.status, STATUS_OK, "status %d; stderr:\n%s\nconsole:\n%s", w.status, w.err,
		     w.out);
	cr_assert(strstr(w.out, "\nblkbench: write 16777216 bytes in "), "console:\n%s", w.out);
	cr_assert(strstr(w.out, " tsc cycles (req 262144, depth 8)\n"), "console:\n%s", w.out);
	cr_assert_eq(rd.status, STATUS_OK, "status %d; stderr:\n%s\nconsole:\n%s", rd.status,
		     rd.err, rd.out);
	cr_assert(strstr(rd.out, "\nblkbench: read 16777216 bytes in "), "console:\n%s", rd.out);
	cr_assert(strstr(rd.out, " tsc cycles (req 1048576, depth 32)\n"), "console:\n%s", rd.out);
	cr_assert(strstr(rd.out, "\nblkbench ok\n"), "console:\n%s", rd.out);
	hk_proc_result_free(&w);
	hk_proc_result_free(&rd);
}
