/*
 * guestos's kvdb workload and virtio-blk driver under QEMU (TCG, no
 * /dev/kvm needed). QEMU's microvm machine has virtio-mmio transports at
 * 0xfeb00000 + 512 * i; with acpi=off it appends a Linux-style
 * `virtio_mmio.device=512@BASE:IRQ` word per attached device to the
 * command line, which guestos parses as it parses hyperkernel's 4 KiB
 * windows. QEMU's virtio-mmio is legacy (version 1) unless told otherwise;
 * guestos drives version 2 only.
 *
 * Data sets come from kvdb-gen (HK_KVDB_GEN), written to /tmp. The guest's
 * exit value v becomes QEMU's status (v << 1) | 1 through isa-debug-exit.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hk_test.h"

#define QEMU "qemu-system-x86_64"
/* Per QEMU run; enforced by hk_run, not with Criterion's .timeout (leaks under ASan). */
#define QEMU_TIMEOUT_S	120
#define DATASET_SIZE	"16M"
#define DATASET_RECORDS 4095 /* 16 MiB / 4 KiB, less the superblock */
#define DATASET_SEED	"42"

#define STATUS_OK	1
#define STATUS_WORKLOAD 3
#define STATUS_CMDLINE	5

/* What a QEMU run gets besides the kernel: disk image, command line, vCPUs. */
struct vm {
	const char *disk;     /* raw image, or NULL for no disk */
	const char *append;   /* guestos command line */
	const char *smp;      /* "1" unless set */
	bool explicit_window; /* auto-kernel-cmdline=off: the test names the window */
	const char *blkdebug; /* blkdebug config for the disk, or NULL */
};

static const char *path_from_env(const char *var)
{
	hk_need_prog(QEMU);
	return hk_env_file(var);
}

/*
 * Boots guestos on QEMU microvm with at most one virtio-blk disk and waits
 * for it to exit: b->status is QEMU's exit status (128 + signal if killed),
 * b->out its serial output. QEMU is killed on timeout and dies with this
 * process if Criterion kills the test (hk_run).
 */
static void boot(struct hk_proc_result *b, const struct vm *vm)
{
	char machine[128], drive[4200], append[1024];
	const char *argv[40];
	unsigned n = 0;

	snprintf(machine, sizeof(machine), "microvm,acpi=off,rtc=off,pic=off,pit=off%s",
		 vm->explicit_window ? ",auto-kernel-cmdline=off" : "");
	/* The one device sits at the last of microvm's 8 transports (acpi=off). */
	snprintf(append, sizeof(append), "%s%s", vm->append,
		 vm->explicit_window ? " virtio_mmio.device=4K@0xfeb00e00:12" : "");
	argv[n++] = QEMU;
	argv[n++] = "-machine";
	argv[n++] = machine;
	argv[n++] = "-accel";
	argv[n++] = "tcg";
	argv[n++] = "-m";
	argv[n++] = "512M";
	argv[n++] = "-smp";
	argv[n++] = vm->smp ? vm->smp : "1";
	argv[n++] = "-nodefaults";
	argv[n++] = "-no-user-config";
	argv[n++] = "-display";
	argv[n++] = "none";
	argv[n++] = "-monitor";
	argv[n++] = "none";
	argv[n++] = "-serial";
	argv[n++] = "stdio";
	argv[n++] = "-no-reboot";
	argv[n++] = "-device";
	argv[n++] = "isa-debug-exit,iobase=0x501,iosize=4";
	argv[n++] = "-global";
	argv[n++] = "virtio-mmio.force-legacy=false";
	argv[n++] = "-kernel";
	argv[n++] = path_from_env("HK_GUESTOS");
	if (vm->disk) {
		if (vm->blkdebug)
			snprintf(drive, sizeof(drive),
				 "id=d0,file=blkdebug:%s:%s,format=raw,if=none", vm->blkdebug,
				 vm->disk);
		else
			snprintf(drive, sizeof(drive), "id=d0,file=%s,format=raw,if=none",
				 vm->disk);
		argv[n++] = "-drive";
		argv[n++] = drive;
		argv[n++] = "-device";
		argv[n++] = "virtio-blk-device,drive=d0,serial=kvdb-test";
	}
	argv[n++] = "-append";
	argv[n++] = append;
	argv[n] = NULL;

	hk_run_checked((char *const *)argv, QEMU_TIMEOUT_S, b);
	cr_log_info("disk %s, append '%s', status %d:\n%s", vm->disk ? vm->disk : "(none)", append,
		    b->status, b->out);
}

/* "PREFIX0x<16 hex digits>" as the whole line. */
static uint64_t hex_line(const char *out, const char *prefix)
{
	char line[256], *hex, *end = NULL;
	unsigned long long v = 0;

	hk_line_with(out, prefix, line, sizeof(line));
	hex = line + strlen(prefix);
	if (strlen(line) == strlen(prefix) + 18 && strncmp(hex, "0x", 2) == 0)
		v = strtoull(hex + 2, &end, 16);
	cr_assert(end && *end == '\0' && end == hex + 18, "no well-formed '%s' line in:\n%s",
		  prefix, out);
	return v;
}

static uint64_t checksum_of(const struct hk_proc_result *b)
{
	return hex_line(b->out, "kvdb checksum ");
}

static uint64_t loaded_state_of(const struct hk_proc_result *b)
{
	return hex_line(b->out, "kvdb: loaded state ");
}

static unsigned long wrote_back(const struct hk_proc_result *b)
{
	char line[256];
	unsigned long n;

	hk_line_with(b->out, "kvdb: wrote back ", line, sizeof(line));
	cr_assert(sscanf(line, "kvdb: wrote back %lu records", &n) == 1, "output:\n%s", b->out);
	return n;
}

/* A fresh file name under /tmp; the file exists (empty) until the test removes it. */
static char *temp_path(const char *tag)
{
	char *p = NULL;
	int fd;

	cr_assert(asprintf(&p, "/tmp/hk-kvdb-%s-XXXXXX", tag) > 0);
	fd = mkstemp(p);
	cr_assert(fd >= 0, "mkstemp: %s", strerror(errno));
	close(fd);
	return p;
}

/* kvdb-gen PATH 16M 42; returns the data-set checksum it reports. */
static uint64_t generate(const char *path)
{
	char *argv[] = {(char *)path_from_env("HK_KVDB_GEN"), (char *)path, DATASET_SIZE,
			DATASET_SEED, NULL};
	struct hk_proc_result r;
	unsigned long long csum;
	const char *p;

	cr_assert(hk_run(argv, 60, &r) == 0);
	cr_assert(r.status == 0, "kvdb-gen exited %d: %s%s", r.status, r.out, r.err);
	p = strstr(r.out, "data-set checksum 0x");
	cr_assert(p && sscanf(p, "data-set checksum 0x%llx", &csum) == 1, "kvdb-gen said: %s",
		  r.out);
	hk_proc_result_free(&r);
	return csum;
}

static void copy_file(const char *from, const char *to)
{
	static char buf[1 << 20];
	int in = open(from, O_RDONLY | O_CLOEXEC), out;
	ssize_t n;

	cr_assert(in >= 0, "%s: %s", from, strerror(errno));
	out = open(to, O_WRONLY | O_TRUNC | O_CLOEXEC);
	cr_assert(out >= 0, "%s: %s", to, strerror(errno));
	while ((n = read(in, buf, sizeof(buf))) > 0)
		cr_assert(write(out, buf, (size_t)n) == n, "%s: %s", to, strerror(errno));
	cr_assert(n == 0, "%s: %s", from, strerror(errno));
	close(in);
	close(out);
}

static bool same_file(const char *a, const char *b)
{
	static char ba[1 << 20], bb[1 << 20];
	int fa = open(a, O_RDONLY | O_CLOEXEC), fb = open(b, O_RDONLY | O_CLOEXEC);
	bool same = fa >= 0 && fb >= 0;

	while (same) {
		ssize_t na = read(fa, ba, sizeof(ba)), nb = read(fb, bb, sizeof(bb));

		if (na != nb || na < 0 || memcmp(ba, bb, (size_t)na) != 0)
			same = false;
		if (na <= 0)
			break;
	}
	if (fa >= 0)
		close(fa);
	if (fb >= 0)
		close(fb);
	return same;
}

static void flip_byte(const char *path, off_t off)
{
	int fd = open(path, O_RDWR | O_CLOEXEC);
	unsigned char c;

	cr_assert(fd >= 0, "%s: %s", path, strerror(errno));
	cr_assert(pread(fd, &c, 1, off) == 1);
	c ^= 0x20;
	cr_assert(pwrite(fd, &c, 1, off) == 1);
	close(fd);
}

static void expect_ok(const struct hk_proc_result *b)
{
	char line[256];

	cr_assert_eq(b->status, STATUS_OK, "status %d, want %d; output:\n%s", b->status, STATUS_OK,
		     b->out);
	cr_expect_str_eq(hk_line_with(b->out, "kvdb: loading ", line, sizeof(line)),
			 "kvdb: loading 4095 records (16 MiB) from disk 0");
	hk_line_with(b->out, "kvdb: loaded ", line, sizeof(line));
	cr_expect(strstr(line, "kvdb: loaded 4095 records in ") && strstr(line, " tsc cycles"),
		  "output:\n%s", b->out);
	cr_expect(strstr(b->out, "\nkvdb: serving\n"), "output:\n%s", b->out);
	cr_expect(strstr(b->out, "\nkvdb: ops "), "output:\n%s", b->out);
	cr_expect(strstr(b->out, "\nkvdb ok\n"), "output:\n%s", b->out);
	cr_expect(!strstr(b->out, "corrupt"), "output:\n%s", b->out);
}

/*
 * The round trip: load, serve, write back; the next boot loads exactly the
 * state the last one ended with, and a boot from a pristine copy of the
 * same data set ends with the same checksum as the first boot did.
 */
Test(kvdb, loads_serves_and_writes_back)
{
	static struct hk_proc_result b;
	char *base = temp_path("base"), *img = temp_path("a");
	struct vm vm = {.disk = img, .append = "kvdb ops=4000 seed=5"};
	uint64_t dataset, first, second;
	char line[256];

	dataset = generate(base);
	copy_file(base, img);

	boot(&b, &vm);
	expect_ok(&b);
	hk_line_with(b.out, "kvdb: ops ", line, sizeof(line));
	cr_expect(strncmp(line, "kvdb: ops 4000 gets ", 20) == 0 && strstr(line, " puts ") &&
		      strlen(line) > 11 && strcmp(line + strlen(line) - 11, " tsc cycles") == 0,
		  "ops line '%s'", line);
	cr_expect_eq(loaded_state_of(&b), dataset, "loaded 0x%lx, kvdb-gen said 0x%lx",
		     loaded_state_of(&b), dataset);
	cr_expect(wrote_back(&b) > 0, "output:\n%s", b.out);
	cr_expect(strstr(b.out, "id \"kvdb-test\""), "no disk id in:\n%s", b.out);
	first = checksum_of(&b);
	cr_expect_neq(first, dataset, "puts did not change the state");
	cr_expect(!same_file(base, img), "nothing was written back");

	boot(&b, &vm);
	expect_ok(&b);
	cr_expect_eq(loaded_state_of(&b), first, "second boot loaded 0x%lx, first ended 0x%lx",
		     loaded_state_of(&b), first);
	second = checksum_of(&b);
	cr_expect_neq(second, first, "second boot's puts did not change the state");

	copy_file(base, img);
	boot(&b, &vm);
	expect_ok(&b);
	cr_expect_eq(checksum_of(&b), first, "same image, same ops: 0x%lx then 0x%lx", first,
		     checksum_of(&b));

	unlink(base);
	unlink(img);
	free(base);
	free(img);
}

/*
 * writeback=0 leaves the disk alone; the checksum does not depend on the
 * number of vCPUs that verified and indexed the records, nor on whether
 * the window came from QEMU (512 bytes) or the command line (4 KiB).
 */
Test(kvdb, checksum_independent_of_vcpus_and_window)
{
	static struct hk_proc_result b;
	char *base = temp_path("base"), *img = temp_path("b");
	struct vm vm = {.disk = img, .append = "kvdb ops=3000 seed=9 writeback=0"};
	uint64_t dataset, one;

	dataset = generate(base);
	copy_file(base, img);

	boot(&b, &vm);
	expect_ok(&b);
	cr_expect_eq(wrote_back(&b), 0);
	one = checksum_of(&b);
	cr_expect(same_file(base, img), "writeback=0 changed the disk");

	vm.append = "kvdb ops=3000 seed=9 writeback=0 guestos.sipi=3";
	vm.smp = "3";
	boot(&b, &vm);
	expect_ok(&b);
	cr_expect(strstr(b.out, "guestos: 3 vCPUs, "), "output:\n%s", b.out);
	cr_expect_eq(loaded_state_of(&b), dataset);
	cr_expect_eq(checksum_of(&b), one, "3 vCPUs: 0x%lx, 1 vCPU: 0x%lx", checksum_of(&b), one);

	vm.append = "kvdb ops=3000 seed=9 writeback=0";
	vm.smp = NULL;
	vm.explicit_window = true;
	boot(&b, &vm);
	expect_ok(&b);
	cr_expect(strstr(b.out, "virtio-blk at 0xfeb00e00"), "output:\n%s", b.out);
	cr_expect_eq(checksum_of(&b), one);

	vm.explicit_window = false;
	vm.append = "kvdb ops=3000 seed=10 writeback=0";
	boot(&b, &vm);
	expect_ok(&b);
	cr_expect_neq(checksum_of(&b), one, "the ops seed does not change the checksum");
	cr_expect(same_file(base, img), "writeback=0 changed the disk");

	unlink(base);
	unlink(img);
	free(base);
	free(img);
}

/* A flipped byte in block 7 (record 6) is found, named, and never served. */
Test(kvdb, corrupt_record_is_reported)
{
	static struct hk_proc_result b;
	char *img = temp_path("corrupt");
	struct vm vm = {.disk = img, .append = "kvdb ops=100"};
	char line[256];

	generate(img);
	flip_byte(img, 7 * 4096 + 1000);
	boot(&b, &vm);
	cr_expect_eq(b.status, STATUS_WORKLOAD, "output:\n%s", b.out);
	hk_line_with(b.out, "kvdb: record ", line, sizeof(line));
	cr_expect(strncmp(line, "kvdb: record 6 at block 7 corrupt", 33) == 0, "output:\n%s",
		  b.out);
	cr_expect(!strstr(b.out, "kvdb: serving") && !strstr(b.out, "kvdb ok"), "output:\n%s",
		  b.out);

	/* The same on 2 vCPUs, where another vCPU may be the one that finds it. */
	vm.append = "kvdb ops=100 guestos.sipi=2";
	vm.smp = "2";
	boot(&b, &vm);
	cr_expect_eq(b.status, STATUS_WORKLOAD, "output:\n%s", b.out);
	cr_expect(strstr(b.out, "\nkvdb: record 6 at block 7 corrupt"), "output:\n%s", b.out);

	unlink(img);
	free(img);
}

Test(kvdb, bad_superblock_is_an_error)
{
	static struct hk_proc_result b;
	char *img = temp_path("zero");
	struct vm vm = {.disk = img, .append = "kvdb"};

	cr_assert(truncate(img, 4 << 20) == 0, "truncate: %s", strerror(errno));
	boot(&b, &vm);
	cr_expect_eq(b.status, STATUS_WORKLOAD, "output:\n%s", b.out);
	cr_expect(strstr(b.out, "\nkvdb: disk 0: bad superblock (magic 0x00000000"), "output:\n%s",
		  b.out);
	cr_expect(!strstr(b.out, "kvdb ok"), "output:\n%s", b.out);
	unlink(img);
	free(img);
}

/* QEMU's blkdebug fails one read: the error reaches the workload, which stops. */
Test(kvdb, io_error_is_reported)
{
	static struct hk_proc_result b;
	char *img = temp_path("eio"), *cfg = temp_path("blkdebug");
	static const char rule[] = "[inject-error]\nevent = \"read_aio\"\nerrno = \"5\"\n"
				   "sector = \"4104\"\n";
	struct vm vm = {.disk = img, .append = "kvdb ops=100", .blkdebug = cfg};
	FILE *f;

	generate(img);
	f = fopen(cfg, "w");
	cr_assert(f && fputs(rule, f) >= 0 && fclose(f) == 0, "%s: %s", cfg, strerror(errno));
	boot(&b, &vm);
	cr_expect_eq(b.status, STATUS_WORKLOAD, "output:\n%s", b.out);
	cr_expect(strstr(b.out, "\nkvdb: disk 0: read of ") &&
		      strstr(b.out, " failed: I/O error (status 1)\n"),
		  "output:\n%s", b.out);
	cr_expect(!strstr(b.out, "kvdb: serving"), "output:\n%s", b.out);
	unlink(img);
	unlink(cfg);
	free(img);
	free(cfg);
}

Test(kvdb, missing_disk_is_an_error)
{
	static struct hk_proc_result b;
	char *img = temp_path("nodisk");
	struct vm vm = {.append = "kvdb"};
	char line[256];

	boot(&b, &vm);
	cr_expect_eq(b.status, STATUS_WORKLOAD, "output:\n%s", b.out);
	cr_expect_eq(hk_lines(b.out), 2, "the banner and one line; output:\n%s", b.out);
	cr_expect(strstr(hk_line_with(b.out, "kvdb: ", line, sizeof(line)), "no disk"),
		  "output:\n%s", b.out);

	/* A disk that is not there: disk=1 with one device. */
	vm.disk = img;
	vm.append = "kvdb disk=1";
	generate(img);
	boot(&b, &vm);
	cr_expect_eq(b.status, STATUS_WORKLOAD, "output:\n%s", b.out);
	cr_expect(strstr(b.out, "no disk 1"), "output:\n%s", b.out);
	unlink(img);
	free(img);
}

Test(kvdb, bad_command_line)
{
	static struct hk_proc_result b;
	static const char *const bad[] = {
	    "kvdb ops=banana",
	    "kvdb writeback=2",
	    "kvdb frob=1",
	    "kvdb virtio_mmio.device=512@banana:12",
	    "kvdb virtio_mmio.device=16@0xfeb00e00:12",
	};
	char *img = temp_path("cmdline");
	struct vm vm = {.disk = img};

	generate(img);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		vm.append = bad[i];
		boot(&b, &vm);
		cr_expect_eq(b.status, STATUS_CMDLINE, "'%s': status %d; output:\n%s", bad[i],
			     b.status, b.out);
		cr_expect(hk_lines(b.out) <= 2, "'%s': more than one error line:\n%s", bad[i],
			  b.out);
		cr_expect(!strstr(b.out, "kvdb: loading"), "output:\n%s", b.out);
	}
	unlink(img);
	free(img);
}
