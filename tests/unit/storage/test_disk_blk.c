/*
 * storage/ disks that need root: block devices through loop devices
 * (512-byte and 4096-byte logical blocks), and a file system that refuses
 * O_DIRECT (ramfs).  Each test skips with the reason when it cannot set up
 * its device; loop devices are detached and mounts undone in .fini, which
 * runs even after a failed assertion (but not after cr_skip_test, so the
 * skips clean up first).
 */
#include <sys/mount.h>
#include <sys/wait.h>

#include "disk_test.h"

#define MiB (1024ull * 1024)

static char loopdev[64];
static char ramdir[96];

static void blk_fini(void)
{
	if (loopdev[0]) {
		char cmd[128];
		snprintf(cmd, sizeof cmd, "losetup -d %s", loopdev);
		if (system(cmd) != 0)
			fprintf(stderr, "could not detach %s\n", loopdev);
	}
	if (ramdir[0])
		umount2(ramdir, MNT_DETACH);
	tmp_fini();
}

TestSuite(disk_blk, .init = tmp_init, .fini = blk_fini);

/* A loop device over a fresh file of size bytes, or skip the test saying why. */
static const char *loop_attach(uint64_t size, unsigned sector)
{
	char *file = tmp_file("loop.img"), cmd[256], why[400] = "";
	FILE *p;

	make_file(file, size);
	snprintf(cmd, sizeof cmd, "losetup -f --show -b %u %s 2>&1", sector, file);
	free(file);
	p = popen(cmd, "r");
	if (!p) {
		blk_fini();
		cr_skip_test("popen(losetup): %s", strerror(errno));
	}
	if (!fgets(loopdev, sizeof loopdev, p))
		loopdev[0] = '\0';
	loopdev[strcspn(loopdev, "\n")] = '\0';
	int st = pclose(p);
	if (st != 0 || strncmp(loopdev, "/dev/loop", 9) != 0) {
		snprintf(why, sizeof why, "no loop device here (%s: %s)", cmd,
			 loopdev[0] ? loopdev : "failed");
		loopdev[0] = '\0';
		blk_fini(); /* Criterion skips .fini after cr_skip_test */
		cr_skip_test("%s", why);
	}
	return loopdev;
}

DISK_TEST(disk_blk, loop_device_round_trip)
{
	const char *dev = loop_attach(8 * MiB, 512);
	struct hk_disk_config cfg = {.name = "b0", .path = dev, .create = true};
	struct hk_disk *d = open_ok(&cfg);
	static uint8_t buf[70000] __attribute__((aligned(4096)));

	cr_assert_str_eq(hk_disk_backend(d), "blk");
	cr_assert_eq(hk_disk_size(d), 8 * MiB);
	cr_assert_eq(hk_disk_block_size(d), 512);
	cr_assert(hk_disk_uses_direct(d));

	fill(buf, 65536, 1 * MiB, 1);
	cr_assert_eq(hk_disk_pwrite(d, buf, 65536, 1 * MiB), 0);
	fill(buf + 1, 3, 1, 2);
	cr_assert_eq(hk_disk_pwrite(d, buf + 1, 3, 1), 0);
	fill(buf, 70000, 8 * MiB - 70000, 3);
	cr_assert_eq(hk_disk_pwrite(d, buf, 70000, 8 * MiB - 70000), 0); /* ends at the end */
	cr_assert_eq(hk_disk_flush(d), 0);
	cr_assert_eq(hk_disk_pread(d, buf, 2, 8 * MiB - 1), -EINVAL);
	cr_assert_eq(hk_disk_pwrite(d, buf, 512, 8 * MiB), -ENOSPC);

	memset(buf, 0, sizeof buf);
	cr_assert_eq(hk_disk_pread(d, buf, 65536, 1 * MiB), 0);
	cr_assert_eq(check(buf, 65536, 1 * MiB, 1), -1);
	cr_assert_eq(hk_disk_pread(d, buf + 5, 3, 1), 0);
	cr_assert_eq(check(buf + 5, 3, 1, 2), -1);
	hk_disk_close(d);

	/* A fresh open sees it; a larger configured size is refused by name. */
	cfg = (struct hk_disk_config){.name = "b0", .path = dev};
	d = open_ok(&cfg);
	cr_assert_eq(hk_disk_pread(d, buf, 70000, 8 * MiB - 70000), 0);
	cr_assert_eq(check(buf, 70000, 8 * MiB - 70000, 3), -1);

	/* Opened O_EXCL: a second user of the device is refused. */
	char err[256], want[256];
	struct hk_disk *d2 = NULL;
	cr_assert_eq(hk_disk_open(&cfg, &d2, err, sizeof err), -EBUSY, "%s", err);
	hk_disk_close(d);

	cfg.size = 16 * MiB;
	cr_assert_eq(hk_disk_open(&cfg, &d2, err, sizeof err), -EINVAL);
	snprintf(want, sizeof want, "disk b0: %s is 8388608 bytes, configured 16777216", dev);
	cr_assert_str_eq(err, want);
}

/* 4096-byte logical blocks: 512-byte guest sectors become read-modify-writes. */
DISK_TEST(disk_blk, loop_device_4k_blocks)
{
	const char *dev = loop_attach(4 * MiB, 4096);
	struct hk_disk_config cfg = {.name = "b4k", .path = dev, .queue_depth = 16};
	struct hk_disk *d = open_ok(&cfg);
	static uint8_t base[16384] __attribute__((aligned(4096)));
	static uint8_t sec[8][512], back[16384];

	cr_assert_eq(hk_disk_block_size(d), 4096);
	fill(base, sizeof base, 0, 5);
	cr_assert_eq(hk_disk_pwrite(d, base, sizeof base, 0), 0);

	/* Eight 512-byte sectors, two per 4 KiB block, all at once. */
	struct waiter w = WAITER_INIT;
	struct tio t[8];
	struct hk_disk_io *ios[8];
	for (unsigned k = 0; k < 8; k++) {
		uint64_t off = (k / 2) * 4096 + (k % 2 ? 3584 : 512);
		fill(sec[k], 512, off, 6);
		memcpy(base + off, sec[k], 512);
		tio_set(&t[k], &w, HK_DISK_WRITE, off, sec[k], 512);
		ios[k] = &t[k].io;
	}
	cr_assert_eq(hk_disk_submit(d, ios, 8), 0);
	wait_for(&w, 8);
	cr_assert_eq(w.errors, 0, "%d", w.first_error);
	cr_assert_eq(hk_disk_pread(d, back, sizeof back, 0), 0);
	for (unsigned i = 0; i < sizeof back; i++)
		cr_assert_eq(back[i], base[i], "byte %u", i);

	struct hk_disk_stats st;
	hk_disk_get_stats(d, &st);
	cr_assert_eq(st.rmw, 8);
	cr_assert_gt(st.lock_waits, 0);
	hk_disk_close(d);
}

/* ---- a file system without O_DIRECT ---------------------------------------------- */

static void ram_mount(void)
{
	snprintf(ramdir, sizeof ramdir, "%s/ram", tmp_dir);
	cr_assert_eq(mkdir(ramdir, 0700), 0);
	if (mount("none", ramdir, "ramfs", 0, "mode=0700") != 0) {
		char why[160];
		snprintf(why, sizeof why, "cannot mount ramfs: %s", strerror(errno));
		ramdir[0] = '\0';
		blk_fini();
		cr_skip_test("%s", why);
	}
}

DISK_TEST(disk_blk, auto_falls_back_without_odirect)
{
	ram_mount();
	char path[160], err[256];
	struct hk_disk *d = NULL;
	snprintf(path, sizeof path, "%s/r0.img", ramdir);

	/* direct = on: refused by name, and the file it created is gone again */
	struct hk_disk_config cfg = {.name = "r0",
				     .path = path,
				     .size = 1 * MiB,
				     .create = true,
				     .direct = HK_DISK_DIRECT_ON};
	cr_assert_eq(hk_disk_open(&cfg, &d, err, sizeof err), -EINVAL);
	cr_assert_not_null(strstr(err, "disk r0: "), "%s", err);
	cr_assert_not_null(strstr(err, "refuses O_DIRECT"), "%s", err);
	cr_assert_eq(access(path, F_OK), -1);

	/* auto: buffered, with a note to log */
	cfg.direct = HK_DISK_DIRECT_AUTO;
	d = open_ok(&cfg);
	cr_assert_not(hk_disk_uses_direct(d));
	cr_assert_not_null(strstr(hk_disk_note(d), "refuses O_DIRECT"), "%s", hk_disk_note(d));
	cr_assert_eq(hk_disk_block_size(d), 512);
	uint8_t b[3] = {1, 2, 3}, c[3];
	cr_assert_eq(hk_disk_pwrite(d, b, 3, 1), 0);
	cr_assert_eq(hk_disk_pread(d, c, 3, 1), 0);
	cr_assert_eq(memcmp(b, c, 3), 0);
	hk_disk_close(d);
}
