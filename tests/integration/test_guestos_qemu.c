/*
 * Boots guestos and the tiny PVH kernel under QEMU (TCG, no /dev/kvm
 * needed) and checks what a user sees: the serial output and the exit
 * status that isa-debug-exit turns the guest's exit value v into,
 * (v << 1) | 1. meson passes the kernels as HK_GUESTOS and HK_TINY_KERNEL.
 *
 * QEMU starts only the boot vCPU of a PVH kernel. guestos.sipi=N makes
 * guestos wake N-1 more processors itself (INIT/SIPI), which then enter
 * pvh_entry as hyperkernel's vCPUs do, so the SMP paths run here too;
 * memtest's shares= argument splits the work as N vCPUs would.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define QEMU "qemu-system-x86_64"
/*
 * Per QEMU run (TCG: 64 MiB of memtest takes ~1 s). Enforced here rather than
 * with Criterion's .timeout, whose runner leaks under LeakSanitizer (2.4.1).
 */
#define QEMU_TIMEOUT_MS 120000
#define OUT_MAX		65536

/* Exit statuses: guestos writes v to port 0x501, QEMU exits with (v << 1) | 1. */
#define STATUS_OK	 1
#define STATUS_WORKLOAD	 3
#define STATUS_CMDLINE	 5
#define STATUS_EXCEPTION 7
#define STATUS_TINY	 85

struct boot {
	int status; /* QEMU's exit status; -1 if killed */
	bool timed_out;
	size_t len;
	char out[OUT_MAX]; /* serial output, NUL-terminated */
};

static bool qemu_in_path(void)
{
	const char *path = getenv("PATH");
	char buf[4096];

	while (path && *path) {
		size_t n = strcspn(path, ":");

		if (n && n < sizeof(buf) - sizeof(QEMU) - 1) {
			snprintf(buf, sizeof(buf), "%.*s/%s", (int)n, path, QEMU);
			if (access(buf, X_OK) == 0)
				return true;
		}
		path += n + (path[n] == ':');
	}
	return false;
}

static const char *kernel_from_env(const char *var)
{
	const char *p = getenv(var);

	if (!qemu_in_path())
		cr_skip_test(QEMU " not installed");
	cr_assert(p && *p, "%s is not set (tests/integration/meson.build sets it)", var);
	cr_assert(access(p, R_OK) == 0, "%s=%s: %s", var, p, strerror(errno));
	return p;
}

static long ms_left(const struct timespec *deadline)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (deadline->tv_sec - now.tv_sec) * 1000 + (deadline->tv_nsec - now.tv_nsec) / 1000000;
}

/* Reads the child's stdout until EOF or the deadline; false on timeout. */
static bool drain(int fd, struct boot *b)
{
	struct timespec deadline;
	char scratch[4096];

	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += QEMU_TIMEOUT_MS / 1000;
	for (;;) {
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		long left = ms_left(&deadline);
		ssize_t n;

		if (left <= 0)
			return false;
		if (poll(&pfd, 1, (int)left) < 0) {
			if (errno == EINTR)
				continue;
			return false;
		}
		if (!pfd.revents)
			continue;
		if (b->len < sizeof(b->out) - 1)
			n = read(fd, b->out + b->len, sizeof(b->out) - 1 - b->len);
		else
			n = read(fd, scratch, sizeof(scratch)); /* keep QEMU from blocking */
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return true;
		if (b->len < sizeof(b->out) - 1)
			b->len += (size_t)n;
	}
}

/*
 * Boots kernel with QEMU, one vCPU unless smp says otherwise, and waits for
 * it to exit. QEMU is killed on timeout and dies with this process
 * (PR_SET_PDEATHSIG) if Criterion kills the test: no process is left behind.
 */
static void boot(struct boot *b, const char *kernel, const char *append, const char *mem,
		 const char *smp)
{
	const char *argv[] = {
	    QEMU,
	    "-machine",
	    "q35",
	    "-accel",
	    "tcg",
	    "-m",
	    mem,
	    "-smp",
	    smp,
	    "-nodefaults",
	    "-no-user-config",
	    "-display",
	    "none",
	    "-monitor",
	    "none",
	    "-serial",
	    "stdio",
	    "-no-reboot",
	    "-device",
	    "isa-debug-exit,iobase=0x501,iosize=4",
	    "-kernel",
	    kernel,
	    append ? "-append" : NULL,
	    append,
	    NULL,
	};
	pid_t parent = getpid(), pid;
	int fds[2], st;

	memset(b, 0, sizeof(*b));
	cr_assert(pipe2(fds, O_CLOEXEC) == 0, "pipe2: %s", strerror(errno));
	pid = fork();
	cr_assert(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		int null = open("/dev/null", O_RDONLY);

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent || null < 0 || dup2(null, STDIN_FILENO) < 0 ||
		    dup2(fds[1], STDOUT_FILENO) < 0)
			_exit(127);
		execvp(QEMU, (char *const *)argv);
		_exit(127);
	}
	close(fds[1]);
	if (!drain(fds[0], b)) {
		b->timed_out = true;
		kill(pid, SIGKILL);
	}
	close(fds[0]);
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	b->out[b->len] = '\0';
	b->status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
	cr_assert(!b->timed_out, "QEMU timed out after %d ms; output:\n%s", QEMU_TIMEOUT_MS,
		  b->out);
	cr_log_info("kernel %s, append '%s', status %d:\n%s", kernel, append ? append : "",
		    b->status, b->out);
}

static void boot_guestos(struct boot *b, const char *append, const char *mem)
{
	boot(b, kernel_from_env("HK_GUESTOS"), append, mem, "1");
}

/* The line starting with prefix, copied without its newline; "" if none. */
static const char *line_with(const struct boot *b, const char *prefix, char *buf, size_t size)
{
	for (const char *p = b->out; *p;) {
		size_t n = strcspn(p, "\n");

		if (strncmp(p, prefix, strlen(prefix)) == 0) {
			snprintf(buf, size, "%.*s", (int)n, p);
			return buf;
		}
		p += n + (p[n] == '\n');
	}
	buf[0] = '\0';
	return buf;
}

static unsigned count_lines(const struct boot *b)
{
	unsigned n = 0;

	for (const char *p = b->out; *p; p++)
		n += *p == '\n';
	return n;
}

/* The value of the checksum line, which must be well-formed. */
static unsigned long long checksum_of(const struct boot *b)
{
	char line[128];
	unsigned long long v;
	int end = 0;

	line_with(b, "memtest checksum 0x", line, sizeof(line));
	cr_assert(sscanf(line, "memtest checksum 0x%16llx%n", &v, &end) == 1 &&
		      end == (int)strlen(line) && strlen(line) == 35,
		  "no well-formed checksum line in:\n%s", b->out);
	return v;
}

Test(guestos, memtest_64m_ok)
{
	static struct boot b;
	char line[256];

	boot_guestos(&b, "memtest size=64M seed=7", "256M");
	cr_expect_eq(b.status, STATUS_OK, "status %d, want %d; output:\n%s", b.status, STATUS_OK,
		     b.out);
	line_with(&b, "guestos: 1 vCPU, ", line, sizeof(line));
	cr_expect(strstr(line, " MiB RAM, cmdline \"memtest size=64M seed=7\""), "banner '%s'",
		  line);
	cr_expect(strstr(b.out, "memtest: 64 MiB at 0x") && strstr(b.out, " seed 7 on 1 vCPU\n"),
		  "no size line in:\n%s", b.out);
	cr_expect(strstr(b.out, "memtest: first-touch fill+verify "), "no timing line:\n%s", b.out);
	checksum_of(&b);
	cr_expect(strstr(b.out, "\nmemtest ok\n"), "no 'memtest ok' in:\n%s", b.out);
	cr_expect(!strstr(b.out, "FAIL"), "FAIL in:\n%s", b.out);
}

/*
 * The checksum is a function of (size, seed) alone: the same with a split
 * into 1 or 7 shares (as 1 or 7 vCPUs would split it), on 3 vCPUs, with
 * twice the RAM, and with extra passes. A different seed changes it.
 */
Test(guestos, memtest_checksum_depends_on_size_and_seed_only)
{
	static struct boot b;
	unsigned long long one, seven, other_seed;

	boot_guestos(&b, "memtest size=16M seed=7 shares=1", "256M");
	cr_assert_eq(b.status, STATUS_OK, "output:\n%s", b.out);
	one = checksum_of(&b);

	boot_guestos(&b, "memtest size=16M seed=7 shares=7 passes=2", "512M");
	cr_assert_eq(b.status, STATUS_OK, "output:\n%s", b.out);
	seven = checksum_of(&b);
	cr_expect_eq(seven, one, "checksum 0x%llx with shares/RAM/passes, 0x%llx without", seven,
		     one);
	cr_expect(strstr(b.out, "memtest: pass 1 fill+verify 16777216 bytes ") &&
		      strstr(b.out, "memtest: pass 2 fill+verify 16777216 bytes "),
		  "no pass lines in:\n%s", b.out);

	boot(&b, kernel_from_env("HK_GUESTOS"), "memtest size=16M seed=7 guestos.sipi=3", "256M",
	     "3");
	cr_assert_eq(b.status, STATUS_OK, "output:\n%s", b.out);
	cr_expect(strstr(b.out, " seed 7 on 3 vCPUs\n"), "output:\n%s", b.out);
	cr_expect_eq(checksum_of(&b), one, "checksum changed on 3 vCPUs");

	boot_guestos(&b, "memtest size=16M seed=8", "256M");
	cr_assert_eq(b.status, STATUS_OK, "output:\n%s", b.out);
	other_seed = checksum_of(&b);
	cr_expect_neq(other_seed, one, "seed does not change the checksum");
}

/* Default size: all RAM above the kernel, from the start_info memory map. */
Test(guestos, memtest_default_size_uses_memmap)
{
	static struct boot b;

	boot_guestos(&b, "memtest", "128M");
	cr_expect_eq(b.status, STATUS_OK, "output:\n%s", b.out);
	cr_expect(strstr(b.out, "memtest ok\n"), "output:\n%s", b.out);
	/* 128 MiB less the low 1 MiB, the kernel image and QEMU's reserved tail */
	cr_expect(strstr(b.out, " KiB at 0x") || strstr(b.out, " MiB at 0x"), "output:\n%s", b.out);
}

Test(guestos, memtest_reports_a_bad_word)
{
	static struct boot b;

	boot_guestos(&b, "memtest size=8M corrupt=0x1234 shares=3", "256M");
	cr_expect_eq(b.status, STATUS_WORKLOAD, "output:\n%s", b.out);
	cr_expect(strstr(b.out, "memtest FAIL at 0x"), "no FAIL line in:\n%s", b.out);
	cr_expect(!strstr(b.out, "memtest ok"), "output:\n%s", b.out);
}

Test(guestos, bad_size_is_a_one_line_error)
{
	static struct boot b;
	char line[512];

	boot_guestos(&b, "memtest size=banana", "256M");
	cr_expect_eq(b.status, STATUS_CMDLINE, "output:\n%s", b.out);
	/* the banner, then exactly one line naming the bad argument */
	cr_expect_eq(count_lines(&b), 2, "output:\n%s", b.out);
	line_with(&b, "memtest: ", line, sizeof(line));
	cr_expect(strstr(line, "size=banana"), "error line '%s'", line);
}

Test(guestos, unknown_workload_is_a_one_line_error)
{
	static struct boot b;
	char line[512];

	boot_guestos(&b, "frobnicate now", "256M");
	cr_expect_eq(b.status, STATUS_CMDLINE, "output:\n%s", b.out);
	cr_expect_eq(count_lines(&b), 2, "output:\n%s", b.out);
	line_with(&b, "guestos: unknown workload", line, sizeof(line));
	cr_expect(strstr(line, "'frobnicate'"), "output:\n%s", b.out);
}

Test(guestos, hello)
{
	static struct boot b;

	boot_guestos(&b, "hello", "256M");
	cr_expect_eq(b.status, STATUS_OK, "output:\n%s", b.out);
	cr_expect(strstr(b.out, "\nhello from vCPU 0\n"), "output:\n%s", b.out);
	cr_expect(!strstr(b.out, "hello from vCPU 1"), "output:\n%s", b.out);
}

/* Every vCPU prints, in index order, from ring 3. */
Test(guestos, hello_from_4_vcpus)
{
	static struct boot b;

	boot(&b, kernel_from_env("HK_GUESTOS"), "hello guestos.sipi=4", "256M", "4");
	cr_expect_eq(b.status, STATUS_OK, "output:\n%s", b.out);
	cr_expect(strstr(b.out, "guestos: 4 vCPUs, ") &&
		      strstr(b.out, "\nhello from vCPU 0\nhello from vCPU 1\n"
				    "hello from vCPU 2\nhello from vCPU 3\n"),
		  "output:\n%s", b.out);
}

/* QEMU starts only the boot vCPU of a PVH kernel: guestos must not wait for others. */
Test(guestos, hello_with_qemu_smp2_runs_on_boot_vcpu)
{
	static struct boot b;

	boot(&b, kernel_from_env("HK_GUESTOS"), "hello hk.vcpus=2", "256M", "2");
	cr_expect_eq(b.status, STATUS_OK, "output:\n%s", b.out);
	cr_expect(strstr(b.out, "guestos: 1 vCPU, "), "output:\n%s", b.out);
	cr_expect(strstr(b.out, "\nhello from vCPU 0\n"), "output:\n%s", b.out);
}

Test(guestos, exception_is_reported)
{
	static struct boot b;
	char line[512];

	boot_guestos(&b, "fault", "256M");
	cr_expect_eq(b.status, STATUS_EXCEPTION, "output:\n%s", b.out);
	line_with(&b, "guestos: exception 14 at RIP 0x", line, sizeof(line));
	cr_expect(strstr(line, " cr2 0x1000000000 ") && strstr(line, "ring 3"), "output:\n%s",
		  b.out);
}

Test(tinykernel, prints_and_exits_85)
{
	static struct boot b;

	boot(&b, kernel_from_env("HK_TINY_KERNEL"), NULL, "64M", "1");
	cr_expect_eq(b.status, STATUS_TINY, "output:\n%s", b.out);
	cr_expect_str_eq(b.out, "tiny kernel ok\n");
}
