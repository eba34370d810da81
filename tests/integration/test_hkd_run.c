/*
 * `hkd run`: boot real kernels in the foreground and check what they
 * print and how they exit.  Tests that need /dev/kvm skip with a clear
 * message where it is absent; the input-checking tests run everywhere,
 * because hkd validates its arguments and the kernel image before it
 * opens /dev/kvm.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "hk_test.h"
#include "hyperkernel.h"

static char hkd[4096];

static void setup(void)
{
	hk_build_path("node/hkd", hkd, sizeof(hkd));
}

TestSuite(hkd_run, .init = setup);

static void need_kvm(void)
{
	char why[256];

	if (!hk_kvm_available(why, sizeof(why)))
		cr_skip_test("needs /dev/kvm: %s", why);
}

static const char *guestos(void)
{
	const char *p = getenv("HK_GUESTOS");

	cr_assert_not_null(p, "HK_GUESTOS not set by meson");
	return p;
}

static void assert_one_line_error(const struct hk_proc_result *r, const char *needle)
{
	cr_assert(strstr(r->err, needle), "stderr '%s' does not mention '%s'", r->err, needle);
	cr_assert_eq(hk_lines(r->err), 1, "expected one line on stderr, got: %s", r->err);
}

Test(hkd_run, malformed_elf_is_a_clear_error)
{
	static const char junk[] = "\x7f" "ELF this is not a kernel";
	char *path = hk_write_temp("junk", junk, sizeof(junk));
	char *argv[] = {hkd, "run", "--kernel", path, "--memory", "64M", NULL};
	struct hk_proc_result r;

	hk_run(argv, 30, &r);
	unlink(path);
	free(path);
	cr_assert_eq(r.status, 2, "status %d, stderr %s", r.status, r.err);
	assert_one_line_error(&r, "kernel:");
	hk_proc_result_free(&r);
}

Test(hkd_run, bad_memory_size)
{
	char *argv[] = {hkd, "run", "--kernel", (char *)guestos(), "--memory", "12Q", NULL};
	struct hk_proc_result r;

	hk_run(argv, 30, &r);
	cr_assert_eq(r.status, 2);
	assert_one_line_error(&r, "--memory");
	hk_proc_result_free(&r);
}

Test(hkd_run, unaligned_memory_size)
{
	char *argv[] = {hkd, "run", "--kernel", (char *)guestos(), "--memory", "100001K", NULL};
	struct hk_proc_result r;

	hk_run(argv, 30, &r);
	cr_assert_eq(r.status, 2);
	assert_one_line_error(&r, "2 MiB");
	hk_proc_result_free(&r);
}

Test(hkd_run, missing_kernel_file)
{
	char *argv[] = {hkd, "run", "--kernel", "/nonexistent/kernel", NULL};
	struct hk_proc_result r;

	hk_run(argv, 30, &r);
	cr_assert_eq(r.status, 2);
	assert_one_line_error(&r, "/nonexistent/kernel");
	hk_proc_result_free(&r);
}

Test(hkd_run, bad_vcpu_count)
{
	char *argv[] = {hkd, "run", "--kernel", (char *)guestos(), "--vcpus", "65", NULL};
	struct hk_proc_result r;

	hk_run(argv, 30, &r);
	cr_assert_eq(r.status, 2);
	assert_one_line_error(&r, "--vcpus");
	hk_proc_result_free(&r);
}

Test(hkd_run, tiny_foreign_kernel)
{
	char *argv[] = {hkd, "run", "--kernel", getenv("HK_TINY_KERNEL"), "--memory", "256M",
			NULL};
	struct hk_proc_result r;

	need_kvm();
	hk_run(argv, 120, &r);
	cr_assert_eq(r.status, (0x2a << 1) | 1, "status %d, stderr %s", r.status, r.err);
	cr_assert(strstr(r.out, "tiny kernel ok"), "console: %s", r.out);
	hk_proc_result_free(&r);
}

static char *memtest_checksum(const char *out)
{
	const char *p = strstr(out, "memtest checksum ");

	cr_assert_not_null(p, "no checksum in: %s", out);
	return strndup(p, strcspn(p, "\n"));
}

static char *run_memtest(const char *memory, const char *vcpus, const char *cmdline,
			 long *maxrss_kb)
{
	char *argv[] = {hkd, "run", "--kernel", (char *)guestos(), "--memory", (char *)memory,
			"--vcpus", (char *)vcpus, "--cmdline", (char *)cmdline, NULL};
	struct hk_proc_result r;
	char *sum;

	hk_run(argv, 500, &r);
	cr_assert_eq(r.status, 1, "memtest status %d (want 1 = ok); stderr %s; console %s",
		     r.status, r.err, r.out);
	cr_assert(strstr(r.out, "memtest ok"), "console: %s", r.out);
	sum = memtest_checksum(r.out);
	if (maxrss_kb)
		*maxrss_kb = r.maxrss_kb;
	hk_proc_result_free(&r);
	return sum;
}

Test(hkd_run, memtest_two_vcpus_one_gib)
{
	need_kvm();
	free(run_memtest("1G", "2", "memtest", NULL));
}

Test(hkd_run, checksum_does_not_depend_on_vcpu_count)
{
	char *a, *b;

	need_kvm();
	a = run_memtest("256M", "1", "memtest size=128M seed=5", NULL);
	b = run_memtest("256M", "4", "memtest size=128M seed=5", NULL);
	cr_assert_str_eq(a, b);
	free(a);
	free(b);
}

Test(hkd_run, one_tib_guest_touching_256m_stays_small)
{
	long rss;

	need_kvm();
	free(run_memtest("1T", "2", "memtest size=256M", &rss));
	cr_assert_lt(rss, 1024 * 1024, "hkd peak RSS %ld MiB for a 1 TiB guest", rss >> 10);
}

Test(hkd_run, every_vcpu_comes_up)
{
	char *argv[] = {hkd, "run", "--kernel", (char *)guestos(), "--vcpus", "4", "--cmdline",
			"hello", NULL};
	struct hk_proc_result r;

	need_kvm();
	hk_run(argv, 120, &r);
	cr_assert_eq(r.status, 1, "status %d: %s %s", r.status, r.err, r.out);
	cr_assert_eq(hk_count(r.out, "hello from vCPU"), 4, "console: %s", r.out);
	/* Ring 3 reached hkd through the service page (each vCPU also checked
	 * that the page named it), not through ports. */
	cr_assert(strstr(r.out, ", host via service page, "), "console: %s", r.out);
	cr_assert(!strstr(r.out, "names vCPU"), "console: %s", r.out);
	hk_proc_result_free(&r);
}

/*
 * What kvm_pvm refuses, every hypervisor refuses for guestos: a ring-3
 * port access or software interrupt is an exception (status 7), not a
 * device access, so no test passes here that would fail there.
 */
static void ring3_must_fault(const char *kind)
{
	char cmd[64];
	char *argv[] = {hkd, "run", "--kernel", (char *)guestos(), "--cmdline", cmd, NULL};
	struct hk_proc_result r;

	need_kvm();
	snprintf(cmd, sizeof(cmd), "fault kind=%s", kind);
	hk_run(argv, 120, &r);
	cr_assert_eq(r.status, 7, "%s: status %d: %s %s", kind, r.status, r.err, r.out);
	cr_assert(strstr(r.out, "guestos: exception ") && strstr(r.out, "ring 3"),
		  "%s: console: %s", kind, r.out);
	cr_assert(!strstr(r.out, "fault: no exception"), "%s: console: %s", kind, r.out);
	hk_proc_result_free(&r);
}

Test(hkd_run, ring3_port_io_faults)
{
	ring3_must_fault("port");
}

Test(hkd_run, ring3_software_interrupt_faults)
{
	ring3_must_fault("int");
}

Test(hkd_run, guest_rejects_bad_cmdline)
{
	char *argv[] = {hkd, "run", "--kernel", (char *)guestos(), "--cmdline",
			"memtest size=banana", NULL};
	struct hk_proc_result r;

	need_kvm();
	hk_run(argv, 120, &r);
	cr_assert_eq(r.status, 5, "status %d: %s", r.status, r.out);
	hk_proc_result_free(&r);
}

/* The guest's console when `hkd run` exits with want; the caller frees it. */
static char *run_guest(const char *vcpus, const char *cmdline, int want)
{
	char *argv[] = {hkd, "run", "--kernel", (char *)guestos(), "--memory", "256M", "--vcpus",
			(char *)vcpus, "--cmdline", (char *)cmdline, NULL};
	struct hk_proc_result r;
	char *out;

	hk_run(argv, 300, &r);
	cr_assert_eq(r.status, want, "'%s' on %s vCPUs: status %d (want %d); stderr %s; console %s",
		     cmdline, vcpus, r.status, want, r.err, r.out);
	out = strdup(r.out);
	hk_proc_result_free(&r);
	return out;
}

/*
 * x86-TSO between two KVM vCPUs, and the counting of forbidden outcomes
 * (inject=). Few iterations: the suite's VM has one CPU, so every
 * handshake waits for the host to switch vCPU threads (~7 ms).
 */
Test(hkd_run, litmus_two_vcpus)
{
	char *out;

	need_kvm();
	out = run_guest("2", "litmus iters=500", 1);
	cr_assert(strstr(out, "litmus: mp iters=500 forbidden=0 ") &&
		      strstr(out, "litmus: sbfence iters=500 forbidden=0 ") &&
		      strstr(out, "\nlitmus ok\n"),
		  "console: %s", out);
	free(out);

	out = run_guest("2", "litmus test=mp iters=200 inject=20", 3);
	cr_assert(strstr(out, "litmus: mp iters=200 forbidden=10 "), "console: %s", out);
	free(out);
}

/* psort's lock and shared pages between KVM vCPUs: same checksum on 1 and 4. */
Test(hkd_run, psort_checksum_does_not_depend_on_vcpu_count)
{
	char *a, *b;

	need_kvm();
	a = run_guest("1", "psort n=256K chunk=4096 seed=3", 1);
	b = run_guest("4", "psort n=256K chunk=4096 seed=3", 1);
	cr_assert(strstr(a, "\npsort ok\n") && strstr(b, "\npsort ok\n"), "consoles:\n%s\n%s", a,
		  b);
	cr_assert(strstr(a, "psort checksum 0x") && strstr(b, "psort checksum 0x"),
		  "consoles:\n%s\n%s", a, b);
	cr_assert_str_eq(strstr(a, "psort checksum 0x"), strstr(b, "psort checksum 0x"));
	free(a);
	free(b);
}
