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

#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "hk_test.h"

#define QEMU "qemu-system-x86_64"
/*
 * Per QEMU run (TCG: 64 MiB of memtest takes ~1 s). Enforced by hk_run rather
 * than with Criterion's .timeout, whose runner leaks under LeakSanitizer (2.4.1).
 */
#define QEMU_TIMEOUT_S 120

/* Exit statuses: guestos writes v to port 0x501, QEMU exits with (v << 1) | 1. */
#define STATUS_OK	 1
#define STATUS_WORKLOAD	 3
#define STATUS_CMDLINE	 5
#define STATUS_EXCEPTION 7
#define STATUS_TINY	 85

static const char *kernel_from_env(const char *var)
{
	hk_need_prog(QEMU);
	return hk_env_file(var);
}

/*
 * Boots kernel with QEMU, one vCPU unless smp says otherwise, and waits for
 * it to exit: b->status is QEMU's exit status (128 + signal if killed),
 * b->out its serial output. QEMU is killed on timeout and dies with this
 * process if Criterion kills the test (hk_run): no process is left behind.
 */
static void boot(struct hk_proc_result *b, const char *kernel, const char *append, const char *mem,
		 const char *smp)
{
	const char *argv[] = {
	    QEMU,
	    "-machine",
	    "q35",
	    "-accel",
	    /*
	     * Multi-threaded TCG (QEMU's default for x86 on x86, spelt out):
	     * one host thread per vCPU, so vCPUs really run at once and the
	     * host's store buffer shows through in the litmus tests.
	     */
	    "tcg,thread=multi",
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

	hk_run_checked((char *const *)argv, QEMU_TIMEOUT_S, b);
	cr_log_info("kernel %s, append '%s', status %d:\n%s", kernel, append ? append : "",
		    b->status, b->out);
}

static void boot_guestos(struct hk_proc_result *b, const char *append, const char *mem)
{
	boot(b, kernel_from_env("HK_GUESTOS"), append, mem, "1");
}

/* The value of the checksum line, which must be well-formed. */
static unsigned long long checksum_of(const struct hk_proc_result *b)
{
	char line[128];
	unsigned long long v;
	int end = 0;

	hk_line_with(b->out, "memtest checksum 0x", line, sizeof(line));
	cr_assert(sscanf(line, "memtest checksum 0x%16llx%n", &v, &end) == 1 &&
		      end == (int)strlen(line) && strlen(line) == 35,
		  "no well-formed checksum line in:\n%s", b->out);
	return v;
}

Test(guestos, memtest_64m_ok)
{
	static struct hk_proc_result b;
	char line[256];

	boot_guestos(&b, "memtest size=64M seed=7", "256M");
	cr_expect_eq(b.status, STATUS_OK, "status %d, want %d; output:\n%s", b.status, STATUS_OK,
		     b.out);
	hk_line_with(b.out, "guestos: 1 vCPU, ", line, sizeof(line));
	cr_expect(strstr(line, " MiB RAM, host via ports, cmdline \"memtest size=64M seed=7\""),
		  "banner '%s'", line);
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
	static struct hk_proc_result b;
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
	static struct hk_proc_result b;

	boot_guestos(&b, "memtest", "128M");
	cr_expect_eq(b.status, STATUS_OK, "output:\n%s", b.out);
	cr_expect(strstr(b.out, "memtest ok\n"), "output:\n%s", b.out);
	/* 128 MiB less the low 1 MiB, the kernel image and QEMU's reserved tail */
	cr_expect(strstr(b.out, " KiB at 0x") || strstr(b.out, " MiB at 0x"), "output:\n%s", b.out);
}

Test(guestos, memtest_reports_a_bad_word)
{
	static struct hk_proc_result b;

	boot_guestos(&b, "memtest size=8M corrupt=0x1234 shares=3", "256M");
	cr_expect_eq(b.status, STATUS_WORKLOAD, "output:\n%s", b.out);
	cr_expect(strstr(b.out, "memtest FAIL at 0x"), "no FAIL line in:\n%s", b.out);
	cr_expect(!strstr(b.out, "memtest ok"), "output:\n%s", b.out);
}

Test(guestos, bad_size_is_a_one_line_error)
{
	static struct hk_proc_result b;
	char line[512];

	boot_guestos(&b, "memtest size=banana", "256M");
	cr_expect_eq(b.status, STATUS_CMDLINE, "output:\n%s", b.out);
	/* the banner, then exactly one line naming the bad argument */
	cr_expect_eq(hk_lines(b.out), 2, "output:\n%s", b.out);
	hk_line_with(b.out, "memtest: ", line, sizeof(line));
	cr_expect(strstr(line, "size=banana"), "error line '%s'", line);
}

Test(guestos, unknown_workload_is_a_one_line_error)
{
	static struct hk_proc_result b;
	char line[512];

	boot_guestos(&b, "frobnicate now", "256M");
	cr_expect_eq(b.status, STATUS_CMDLINE, "output:\n%s", b.out);
	cr_expect_eq(hk_lines(b.out), 2, "output:\n%s", b.out);
	hk_line_with(b.out, "guestos: unknown workload", line, sizeof(line));
	cr_expect(strstr(line, "'frobnicate'"), "output:\n%s", b.out);
}

Test(guestos, hello)
{
	static struct hk_proc_result b;

	boot_guestos(&b, "hello", "256M");
	cr_expect_eq(b.status, STATUS_OK, "output:\n%s", b.out);
	cr_expect(strstr(b.out, "\nhello from vCPU 0\n"), "output:\n%s", b.out);
	cr_expect(!strstr(b.out, "hello from vCPU 1"), "output:\n%s", b.out);
}

/* Every vCPU prints, in index order, from ring 3. */
Test(guestos, hello_from_4_vcpus)
{
	static struct hk_proc_result b;

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
	static struct hk_proc_result b;

	boot(&b, kernel_from_env("HK_GUESTOS"), "hello hk.vcpus=2", "256M", "2");
	cr_expect_eq(b.status, STATUS_OK, "output:\n%s", b.out);
	cr_expect(strstr(b.out, "guestos: 1 vCPU, "), "output:\n%s", b.out);
	cr_expect(strstr(b.out, "\nhello from vCPU 0\n"), "output:\n%s", b.out);
}

Test(guestos, exception_is_reported)
{
	static struct hk_proc_result b;
	char line[512];

	boot_guestos(&b, "fault", "256M");
	cr_expect_eq(b.status, STATUS_EXCEPTION, "output:\n%s", b.out);
	hk_line_with(b.out, "guestos: exception 14 at RIP 0x", line, sizeof(line));
	cr_expect(strstr(line, " cr2 0x1000000000 ") && strstr(line, "ring 3"), "output:\n%s",
		  b.out);
}

/*
 * Ring 3 may do no port I/O and no software interrupt on any CPU (kvm_pvm
 * refuses both whatever IOPL and gate DPL say): guestos runs its tasks
 * with IOPL=0 and DPL-0 gates, so QEMU faults them too and a guest that
 * relied on either would fail here, not only on kvm_pvm.
 */
static void ring3_must_fault(const char *kind)
{
	static struct hk_proc_result b;
	char cmd[64], line[512];

	snprintf(cmd, sizeof(cmd), "fault kind=%s", kind);
	boot_guestos(&b, cmd, "256M");
	cr_expect_eq(b.status, STATUS_EXCEPTION, "%s: output:\n%s", kind, b.out);
	hk_line_with(b.out, "guestos: exception 13 at RIP 0x", line, sizeof(line));
	cr_expect(strstr(line, "ring 3"), "%s: no #GP in ring 3:\n%s", kind, b.out);
	cr_expect(!strstr(b.out, "fault: no exception"), "%s: output:\n%s", kind, b.out);
}

Test(guestos, ring3_port_io_faults)
{
	ring3_must_fault("port");
}

Test(guestos, ring3_software_interrupt_faults)
{
	ring3_must_fault("int");
}

/* ---- litmus: x86-TSO litmus tests between vCPUs 0 and 1 ---------------- */

struct litmus_result {
	unsigned long long iters, bad;	/* forbidden= or reordered= */
	unsigned long long outcomes[4]; /* r1r2 = 00, 01, 10, 11 */
};

/*
 * Parses the well-formed line of test `name` (mp, sb or sbfence): every
 * outcome counted, and the verdict is the count of the outcome it names
 * (10 for mp, 00 for sb and sbfence).
 */
static struct litmus_result litmus_of(const struct hk_proc_result *b, const char *name)
{
	bool judged = strcmp(name, "sb") != 0;
	struct litmus_result r;
	char prefix[64], line[512];
	const char *rest;
	int n, end = 0;

	snprintf(prefix, sizeof(prefix), "litmus: %s ", name);
	hk_line_with(b->out, prefix, line, sizeof(line));
	rest = line + strlen(prefix);
	if (judged)
		n = sscanf(rest,
			   "iters=%llu forbidden=%llu outcomes 00=%llu 01=%llu 10=%llu 11=%llu%n",
			   &r.iters, &r.bad, &r.outcomes[0], &r.outcomes[1], &r.outcomes[2],
			   &r.outcomes[3], &end);
	else
		n = sscanf(
		    rest,
		    "iters=%llu reordered=%llu (allowed on x86-TSO) outcomes 00=%llu 01=%llu "
		    "10=%llu 11=%llu%n",
		    &r.iters, &r.bad, &r.outcomes[0], &r.outcomes[1], &r.outcomes[2],
		    &r.outcomes[3], &end);
	cr_assert(line[0] && n == 6 && end == (int)strlen(rest), "no well-formed '%s' line in:\n%s",
		  prefix, b->out);
	cr_assert_eq(r.outcomes[0] + r.outcomes[1] + r.outcomes[2] + r.outcomes[3], r.iters,
		     "outcomes do not add up to iters in '%s'", line);
	cr_assert_eq(r.bad, r.outcomes[strcmp(name, "mp") == 0 ? 2 : 0], "verdict of '%s'", line);
	return r;
}

/*
 * MP and SB+mfence: no forbidden outcome, in x and y on different pages
 * and on one page. SB's reorderings are allowed, and only logged here.
 * Iterations are few: under TCG each handshake waits for the other vCPU's
 * host thread, which a loaded machine may not run at once (~1-7 s per
 * 20000 iterations measured on 2 shared cores).
 */
Test(guestos, litmus_all_forbidden_outcomes_are_zero)
{
	static struct hk_proc_result b;
	static const char *const layouts[] = {"split", "same"};
	static const unsigned long long iters[] = {20000, 5000};

	for (unsigned i = 0; i < 2; i++) {
		char append[128];
		struct litmus_result mp, sb, sbf;

		snprintf(append, sizeof(append),
			 "litmus test=all iters=%llu layout=%s guestos.sipi=2", iters[i],
			 layouts[i]);
		boot(&b, kernel_from_env("HK_GUESTOS"), append, "256M", "2");
		cr_assert_eq(b.status, STATUS_OK, "status %d; output:\n%s", b.status, b.out);
		cr_expect(strstr(b.out, "litmus: vCPUs 0 and 1 of 2, x at 0x"), "output:\n%s",
			  b.out);
		cr_expect(strstr(b.out, i ? "(same page)" : "(different pages)"), "output:\n%s",
			  b.out);
		mp = litmus_of(&b, "mp");
		sb = litmus_of(&b, "sb");
		sbf = litmus_of(&b, "sbfence");
		cr_expect(mp.iters == iters[i] && sb.iters == iters[i] && sbf.iters == iters[i],
			  "output:\n%s", b.out);
		cr_expect_eq(mp.bad, 0, "mp forbidden outcomes:\n%s", b.out);
		cr_expect_eq(sbf.bad, 0, "sbfence forbidden outcomes:\n%s", b.out);
		cr_expect(strstr(b.out, "\nlitmus ok\n"), "output:\n%s", b.out);
		cr_log_info("layout=%s: sb reordered %llu of %llu", layouts[i], sb.bad, sb.iters);
	}
}

/*
 * The harness can see a reordering: SB without a fence shows the host's
 * store buffer through multi-threaded TCG. It needs both vCPU threads on
 * a CPU at once, so it is skipped on a one-CPU host, and gets up to five
 * runs. Measured on 2 shared cores, per 20000 iterations: median ~40
 * reorderings (1 to 178) at load average 3.5-4.6, but 0 to 4 during a
 * burst at 4.7, hence 50000 a run (docs/testing.md).
 */
Test(guestos, litmus_sb_shows_store_buffering)
{
	static struct hk_proc_result b;
	unsigned long long seen = 0;

	if (sysconf(_SC_NPROCESSORS_ONLN) < 2)
		cr_skip_test("one host CPU: the two vCPU threads never run at once");
	for (unsigned seed = 1; seed <= 5 && !seen; seed++) {
		char append[128];

		snprintf(append, sizeof(append),
			 "litmus test=sb iters=50000 seed=%u guestos.sipi=2", seed);
		boot(&b, kernel_from_env("HK_GUESTOS"), append, "256M", "2");
		cr_assert_eq(b.status, STATUS_OK, "output:\n%s", b.out);
		seen = litmus_of(&b, "sb").bad;
		cr_log_info("seed %u: sb reordered %llu of 50000", seed, seen);
	}
	cr_expect_gt(seen, 0, "no store buffering seen in 5 runs of 50000 iterations");
}

/* More vCPUs than the pair: the others wait at the barriers, nothing hangs. */
Test(guestos, litmus_on_3_vcpus_uses_vcpus_0_and_1)
{
	static struct hk_proc_result b;

	boot(&b, kernel_from_env("HK_GUESTOS"), "litmus test=mp iters=5000 guestos.sipi=3", "256M",
	     "3");
	cr_assert_eq(b.status, STATUS_OK, "output:\n%s", b.out);
	cr_expect(strstr(b.out, "litmus: vCPUs 0 and 1 of 3, "), "output:\n%s", b.out);
	cr_expect_eq(litmus_of(&b, "mp").bad, 0, "output:\n%s", b.out);
	cr_expect(!strstr(b.out, "litmus: sb"), "only mp was asked for:\n%s", b.out);
}

/*
 * inject=7 makes every 7th iteration produce the forbidden outcome by
 * construction: the harness must count exactly 20000 / 7 of them and
 * fail, or a broken machine would pass too.
 */
Test(guestos, litmus_counts_injected_forbidden_outcomes)
{
	static struct hk_proc_result b;
	struct litmus_result mp, sb, sbf;

	boot(&b, kernel_from_env("HK_GUESTOS"), "litmus iters=20000 inject=7 guestos.sipi=2",
	     "256M", "2");
	cr_assert_eq(b.status, STATUS_WORKLOAD, "status %d; output:\n%s", b.status, b.out);
	mp = litmus_of(&b, "mp");
	sb = litmus_of(&b, "sb");
	sbf = litmus_of(&b, "sbfence");
	cr_expect_eq(mp.bad, 20000 / 7, "mp forbidden %llu:\n%s", mp.bad, b.out);
	cr_expect_eq(sbf.bad, 20000 / 7, "sbfence forbidden %llu:\n%s", sbf.bad, b.out);
	cr_expect_geq(sb.bad, 20000 / 7, "sb reordered %llu:\n%s", sb.bad, b.out);
	cr_expect(strstr(b.out, "\nlitmus FAIL: forbidden outcomes observed\n"), "output:\n%s",
		  b.out);
	cr_expect(!strstr(b.out, "litmus ok"), "output:\n%s", b.out);
}

/*
 * sync=64: a handshake every 64 iterations, each iteration on locations
 * of its own (what makes a million iterations across nodes affordable).
 * No forbidden outcome in either layout; iterations that raced (mp 01,
 * sb/sbfence 11) are logged, not required: on a loaded host the two vCPU
 * threads may not overlap at all.
 */
Test(guestos, litmus_sync_every_64_has_no_forbidden_outcome)
{
	static struct hk_proc_result b;
	static const char *const layouts[] = {"split", "same"};

	for (unsigned i = 0; i < 2; i++) {
		char append[128];
		struct litmus_result mp, sb, sbf;

		snprintf(append, sizeof(append),
			 "litmus test=all iters=100000 sync=64 layout=%s guestos.sipi=2",
			 layouts[i]);
		boot(&b, kernel_from_env("HK_GUESTOS"), append, "256M", "2");
		cr_assert_eq(b.status, STATUS_OK, "status %d; output:\n%s", b.status, b.out);
		cr_expect(strstr(b.out, ", sync=64, seed 1\n"), "output:\n%s", b.out);
		mp = litmus_of(&b, "mp");
		sb = litmus_of(&b, "sb");
		sbf = litmus_of(&b, "sbfence");
		cr_expect(mp.iters == 100000 && sb.iters == 100000 && sbf.iters == 100000,
			  "output:\n%s", b.out);
		cr_expect_eq(mp.bad, 0, "mp forbidden outcomes:\n%s", b.out);
		cr_expect_eq(sbf.bad, 0, "sbfence forbidden outcomes:\n%s", b.out);
		cr_expect(strstr(b.out, "\nlitmus ok\n"), "output:\n%s", b.out);
		cr_log_info("sync=64 layout=%s: raced mp %llu sb %llu sbfence %llu, sb reordered "
			    "%llu",
			    layouts[i], mp.outcomes[1], sb.outcomes[3], sbf.outcomes[3], sb.bad);
	}
}

/* The counting holds without a handshake per iteration too. */
Test(guestos, litmus_sync_every_64_counts_injected_forbidden_outcomes)
{
	static struct hk_proc_result b;

	boot(&b, kernel_from_env("HK_GUESTOS"),
	     "litmus iters=20000 sync=64 inject=7 guestos.sipi=2", "256M", "2");
	cr_assert_eq(b.status, STATUS_WORKLOAD, "status %d; output:\n%s", b.status, b.out);
	cr_expect_eq(litmus_of(&b, "mp").bad, 20000 / 7, "output:\n%s", b.out);
	cr_expect_eq(litmus_of(&b, "sbfence").bad, 20000 / 7, "output:\n%s", b.out);
	cr_expect_geq(litmus_of(&b, "sb").bad, 20000 / 7, "output:\n%s", b.out);
	cr_expect(strstr(b.out, "\nlitmus FAIL: forbidden outcomes observed\n"), "output:\n%s",
		  b.out);
}

Test(guestos, litmus_on_one_vcpu_is_a_one_line_error)
{
	static struct hk_proc_result b;
	char line[512];

	boot_guestos(&b, "litmus test=all", "256M");
	cr_expect_eq(b.status, STATUS_CMDLINE, "output:\n%s", b.out);
	cr_expect_eq(hk_lines(b.out), 2, "output:\n%s", b.out);
	hk_line_with(b.out, "litmus: ", line, sizeof(line));
	cr_expect(strstr(line, "needs at least 2 vCPUs, has 1"), "error line '%s'", line);
}

Test(guestos, litmus_bad_argument_is_a_one_line_error)
{
	static struct hk_proc_result b;
	static const char *const bad[] = {"test=dekker",     "iters=0",	  "iters=lots",
					  "layout=diagonal", "inject=0",  "speed=11",
					  "sync=0",	     "sync=4097", "sync=often"};
	char append[128], line[512];

	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(append, sizeof(append), "litmus %s guestos.sipi=2", bad[i]);
		boot(&b, kernel_from_env("HK_GUESTOS"), append, "256M", "2");
		cr_expect_eq(b.status, STATUS_CMDLINE, "'%s': output:\n%s", append, b.out);
		cr_expect_eq(hk_lines(b.out), 2, "'%s': output:\n%s", append, b.out);
		hk_line_with(b.out, "litmus: bad argument ", line, sizeof(line));
		cr_expect(strstr(line, bad[i]), "'%s': error line '%s'", append, line);
	}
}

/* ---- psort: a parallel merge sort over a shared, locked work queue -------- */

static unsigned long long psort_checksum_of(const struct hk_proc_result *b)
{
	char line[128];
	unsigned long long v;
	int end = 0;

	hk_line_with(b->out, "psort checksum 0x", line, sizeof(line));
	cr_assert(sscanf(line, "psort checksum 0x%16llx%n", &v, &end) == 1 &&
		      end == (int)strlen(line) && strlen(line) == 33,
		  "no well-formed checksum line in:\n%s", b->out);
	return v;
}

static unsigned long long psort_boot(struct hk_proc_result *b, const char *args, unsigned vcpus)
{
	char append[192], smp[8];

	snprintf(append, sizeof(append), "psort %s guestos.sipi=%u", args, vcpus);
	snprintf(smp, sizeof(smp), "%u", vcpus);
	boot(b, kernel_from_env("HK_GUESTOS"), append, "256M", smp);
	cr_assert_eq(b->status, STATUS_OK, "'%s': status %d, output:\n%s", append, b->status,
		     b->out);
	cr_expect(strstr(b->out, "\npsort ok\n"), "output:\n%s", b->out);
	return psort_checksum_of(b);
}

/*
 * The sorted array is unique, so its checksum is the same on 1, 2 and 4
 * vCPUs and with another chunk size (other tasks, other merge passes);
 * another seed changes it.
 */
Test(guestos, psort_checksum_same_on_1_2_4_vcpus)
{
	static struct hk_proc_result b;
	unsigned long long one, v;

	one = psort_boot(&b, "n=256K chunk=4096 seed=3", 1);
	cr_expect(strstr(b.out, "psort: 262144 keys (2048 KiB) at 0x") &&
		      strstr(b.out, ", chunk 4096, seed 3 on 1 vCPU\n"),
		  "output:\n%s", b.out);
	cr_expect(strstr(b.out, "psort: 512 tasks, per vCPU min 512 max 512\n"), "output:\n%s",
		  b.out);

	v = psort_boot(&b, "n=256K chunk=4096 seed=3", 2);
	cr_expect_eq(v, one, "2 vCPUs: checksum 0x%llx, 1 vCPU: 0x%llx", v, one);
	cr_expect(strstr(b.out, "psort: 512 tasks, per vCPU min "), "output:\n%s", b.out);

	v = psort_boot(&b, "n=256K chunk=4096 seed=3", 4);
	cr_expect_eq(v, one, "4 vCPUs: checksum 0x%llx, 1 vCPU: 0x%llx", v, one);

	v = psort_boot(&b, "n=262144 chunk=3000 seed=3", 3);
	cr_expect_eq(v, one, "chunk=3000 on 3 vCPUs: checksum 0x%llx, 0x%llx before", v, one);

	v = psort_boot(&b, "n=256K chunk=4096 seed=4", 2);
	cr_expect_neq(v, one, "seed does not change the checksum");
}

/* A flipped key after sorting: out of order, or not the keys generated. */
Test(guestos, psort_reports_a_bad_key)
{
	static struct hk_proc_result b;

	boot(&b, kernel_from_env("HK_GUESTOS"),
	     "psort n=64K chunk=1024 corrupt=1000 guestos.sipi=2", "256M", "2");
	cr_expect_eq(b.status, STATUS_WORKLOAD, "output:\n%s", b.out);
	cr_expect(strstr(b.out, "psort FAIL: "), "no FAIL line in:\n%s", b.out);
	cr_expect(!strstr(b.out, "psort ok"), "output:\n%s", b.out);

	/* the last key, flipped downwards or upwards: the sums catch what order cannot */
	boot(&b, kernel_from_env("HK_GUESTOS"), "psort n=64K chunk=1024 corrupt=65535", "256M",
	     "1");
	cr_expect_eq(b.status, STATUS_WORKLOAD, "output:\n%s", b.out);
	cr_expect(strstr(b.out, "psort FAIL: "), "no FAIL line in:\n%s", b.out);
}

Test(guestos, psort_bad_argument_is_a_one_line_error)
{
	static struct hk_proc_result b;
	static const char *const bad[] = {"n=banana", "n=0", "chunk=8", "corrupt=x", "sorted=yes"};
	char append[128], line[512];

	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(append, sizeof(append), "psort %s", bad[i]);
		boot_guestos(&b, append, "256M");
		cr_expect_eq(b.status, STATUS_CMDLINE, "'%s': output:\n%s", append, b.out);
		cr_expect_eq(hk_lines(b.out), 2, "'%s': output:\n%s", append, b.out);
		hk_line_with(b.out, "psort: bad argument ", line, sizeof(line));
		cr_expect(strstr(line, bad[i]), "'%s': error line '%s'", append, line);
	}
	/* more keys than RAM: says how much it needs */
	boot_guestos(&b, "psort n=64M", "256M");
	cr_expect_eq(b.status, STATUS_CMDLINE, "output:\n%s", b.out);
	cr_expect_eq(hk_lines(b.out), 2, "output:\n%s", b.out);
	hk_line_with(b.out, "psort: ", line, sizeof(line));
	cr_expect(strstr(line, "n=67108864 needs 1024 MiB"), "error line '%s'", line);
}

Test(tinykernel, prints_and_exits_85)
{
	static struct hk_proc_result b;

	boot(&b, kernel_from_env("HK_TINY_KERNEL"), NULL, "64M", "1");
	cr_expect_eq(b.status, STATUS_TINY, "output:\n%s", b.out);
	cr_expect_str_eq(b.out, "tiny kernel ok\n");
}
