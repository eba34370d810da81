/*
 * vCPU migration between two KVM VMs in one process, the mechanism
 * pooled mode uses between nodes (hyperkernel/vcpu_state.c):
 *
 *   pingpong   migkernel (tinykernel/migkernel.S) runs in VM A; its vCPU
 *              is parked mid-computation, saved, guest memory copied,
 *              restored into VM B (created with the vCPU parked), resumed
 *              there, and back, six times; the guest's sum of GPRs, vector
 *              registers and MXCSR, and its count of TSC reads that went
 *              backwards, must equal an unmigrated run's (0 backwards);
 *   malformed  truncated, wrong-version, wrong-index, wrong-size, absurd
 *              MSR count, foreign MSR, garbage, and a well-formed state
 *              KVM refuses half-way: each refused with one line, the
 *              vCPU's state unchanged (saved again: equal), and the guest
 *              still ends with the right sum.
 *
 * Save and restore times are printed (under the nested TCG VM they only
 * indicate).  Needs /dev/kvm; skips without it.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <linux/kvm.h>

#include "hk_test.h"
#include "hyperkernel.h"
#include "vcpu.pb-c.h"

#define MEM	      (64ull << 20)
#define ROUNDS	      32 /* migkernel.S */
#define MIGRATIONS    6
#define STATUS_OK     85 /* exit value 0x2a: the TSC never went backwards */
#define GUEST_TIMEOUT (600 * 1000)

/* Serial output of every VM of a test: the guest moves, its console is one. */
struct console {
	pthread_mutex_t lock;
	char buf[16384];
	size_t len;
	unsigned dots;
};

static void console_out(void *ctx, const char *buf, size_t len)
{
	struct console *c = ctx;

	pthread_mutex_lock(&c->lock);
	for (size_t i = 0; i < len; i++) {
		if (buf[i] == '.')
			c->dots++;
		if (c->len + 1 < sizeof(c->buf))
			c->buf[c->len++] = buf[i];
	}
	c->buf[c->len] = 0;
	pthread_mutex_unlock(&c->lock);
}

static void console_init(struct console *c)
{
	memset(c, 0, sizeof(*c));
	pthread_mutex_init(&c->lock, NULL);
}

static unsigned console_dots(struct console *c)
{
	unsigned n;

	pthread_mutex_lock(&c->lock);
	n = c->dots;
	pthread_mutex_unlock(&c->lock);
	return n;
}

/* "sum=... tsc_back=... vec=..." from the guest's last line. */
static void console_result(struct console *c, char *out, size_t size)
{
	char line[256];

	pthread_mutex_lock(&c->lock);
	hk_line_with(c->buf, "migkernel: sum=", line, sizeof(line));
	pthread_mutex_unlock(&c->lock);
	snprintf(out, size, "%s", line);
}

static double ms_since(uint64_t t0)
{
	return (double)(hk_now_ns() - t0) / 1e6;
}

static void need_kvm(void)
{
	char why[256];

	if (!hk_kvm_available(why, sizeof(why)))
		cr_skip_test("needs /dev/kvm: %s", why);
}

static struct hk_vm *vm_new(struct console *c, uint64_t start_parked)
{
	struct hk_vm_config cfg = {
	    .kernel_path = hk_env_file("HK_MIG_KERNEL"),
	    .memory = MEM,
	    .vcpus = 1,
	    .console = console_out,
	    .console_ctx = c,
	    .start_parked = start_parked,
	};
	struct hk_vm *vm;
	char err[256];
	int ret = hk_vm_create(&cfg, &vm, err, sizeof(err));

	cr_assert_eq(ret, 0, "hk_vm_create: %s", err);
	cr_assert_eq(hk_vm_start(vm), 0);
	return vm;
}

/* Wait for the guest to end; asserts it exited (not crashed) in time. */
static void vm_finish(struct hk_vm *vm, struct console *c, char *sum, size_t size)
{
	struct hk_vm_result res;

	cr_assert_eq(hk_vm_wait(vm, GUEST_TIMEOUT, &res), 0, "guest still running after %d s",
		     GUEST_TIMEOUT / 1000);
	console_result(c, sum, size);
	cr_assert_eq(res.state, HK_VM_EXITED, "guest did not exit: %s; console:\n%s", res.reason,
		     c->buf);
	cr_assert_eq(res.exit_status, STATUS_OK,
		     "guest exit status %d (43: its TSC went backwards): %s", res.exit_status, sum);
}

/* The sum an unmigrated run prints. */
static void reference_sum(char *sum, size_t size)
{
	struct console c;
	struct hk_vm *vm;
	uint64_t t0 = hk_now_ns();

	console_init(&c);
	vm = vm_new(&c, 0);
	vm_finish(vm, &c, sum, size);
	hk_vm_destroy(vm);
	cr_log_info("unmigrated run: %.0f ms, %s", ms_since(t0), sum);
	fprintf(stderr, "vcpu-migrate: unmigrated run %.0f ms: %s\n", ms_since(t0), sum);
}

static void wait_dots(struct console *c, struct hk_vm *vm, unsigned n)
{
	struct hk_vm_result res;
	uint64_t t0 = hk_now_ns();

	while (console_dots(c) < n) {
		hk_vm_result(vm, &res);
		cr_assert_eq(res.state, HK_VM_RUNNING, "guest ended before round %u: %s", n,
			     res.reason);
		cr_assert_lt(ms_since(t0), GUEST_TIMEOUT, "no round %u after %d s", n,
			     GUEST_TIMEOUT / 1000);
		nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL);
	}
}

/* All guest RAM of from into to, through hk_mem_read/hk_mem_write. */
static void copy_memory(struct hk_vm *from, struct hk_vm *to)
{
	struct hk_mem_range r[2];
	unsigned n = hk_mem_ranges(hk_vm_mem(from), r);
	const uint64_t chunk = 2ull << 20;
	uint8_t *buf = malloc(chunk);

	cr_assert(buf);
	for (unsigned i = 0; i < n; i++)
		for (uint64_t off = 0; off < r[i].len; off += chunk) {
			uint64_t len = r[i].len - off < chunk ? r[i].len - off : chunk;

			cr_assert_eq(hk_mem_read(hk_vm_mem(from), r[i].gpa + off, buf, len), 0);
			cr_assert_eq(hk_mem_write(hk_vm_mem(to), r[i].gpa + off, buf, len), 0);
		}
	free(buf);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static double median(double *v, unsigned n)
{
	qsort(v, n, sizeof(v[0]), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

Test(vcpu_migrate, pingpong)
{
	char ref[256], sum[256], err[256];
	double save_us[MIGRATIONS], restore_us[MIGRATIONS], copy_ms[MIGRATIONS];
	struct hk_vm *vm[2];
	struct console c;
	struct hk_vm_result res;
	unsigned cur = 0, msrs = 0;
	size_t msg_len = 0;

	need_kvm();
	reference_sum(ref, sizeof(ref));
	cr_assert(strstr(ref, "tsc_back=0000000000000000"), "reference run: %s", ref);

	console_init(&c);
	vm[0] = vm_new(&c, 0);
	vm[1] = vm_new(&c, 1); /* vCPU 0 placed on the other "node" */
	for (unsigned k = 0; k < MIGRATIONS; k++) {
		struct hk_vm *src = vm[cur], *dst = vm[cur ^ 1];
		uint8_t *buf = NULL;
		size_t len = 0;
		uint64_t t;

		wait_dots(&c, src, (k + 1) * ROUNDS / (MIGRATIONS + 1));
		if (k == 0)
			cr_assert_eq(hk_vm_vcpu_save(src, 0, &buf, &len, err, sizeof(err)), -EBUSY,
				     "a running vCPU must not be saved");
		cr_assert_eq(hk_vm_vcpu_park(src, 0), 0);

		t = hk_now_ns();
		cr_assert_eq(hk_vm_vcpu_save(src, 0, &buf, &len, err, sizeof(err)), 0, "save: %s",
			     err);
		save_us[k] = ms_since(t) * 1000;
		t = hk_now_ns();
		copy_memory(src, dst);
		copy_ms[k] = ms_since(t);
		t = hk_now_ns();
		cr_assert_eq(hk_vm_vcpu_restore(dst, 0, buf, len, err, sizeof(err)), 0,
			     "restore: %s", err);
		restore_us[k] = ms_since(t) * 1000;
		cr_assert_eq(hk_vm_vcpu_resume(dst, 0), 0);
		if (k == 0) {
			Hk__Vcpu__VcpuState *m = hk__vcpu__vcpu_state__unpack(NULL, len, buf);

			cr_assert(m);
			msrs = (unsigned)m->n_msr_indices;
			hk__vcpu__vcpu_state__free_unpacked(m, NULL);
		}
		free(buf);
		msg_len = len;
		cur ^= 1;
	}
	vm_finish(vm[cur], &c, sum, sizeof(sum));
	/* The VM the guest left still holds its vCPU parked, not ended. */
	hk_vm_result(vm[cur ^ 1], &res);
	cr_expect_eq(res.state, HK_VM_RUNNING, "the other VM ended: %s", res.reason);
	hk_vm_destroy(vm[0]);
	hk_vm_destroy(vm[1]);

	cr_assert_str_eq(sum, ref, "migrated run differs from the unmigrated one");
	{
		double save_med = median(save_us, MIGRATIONS); /* sorts */
		double restore_med = median(restore_us, MIGRATIONS);

		fprintf(stderr,
			"vcpu-migrate: %d migrations, state message %zu bytes (%u MSRs); save "
			"median %.0f us (max %.0f), restore median %.0f us (max %.0f), guest "
			"memory copy median %.1f ms per %llu MiB\n",
			MIGRATIONS, msg_len, msrs, save_med, save_us[MIGRATIONS - 1], restore_med,
			restore_us[MIGRATIONS - 1], median(copy_ms, MIGRATIONS),
			(unsigned long long)(MEM >> 20));
	}
}

/* ---- malformed messages --------------------------------------------------- */

static uint8_t *pack(const Hk__Vcpu__VcpuState *m, size_t *len)
{
	uint8_t *buf;

	*len = hk__vcpu__vcpu_state__get_packed_size(m);
	buf = malloc(*len + 1);
	cr_assert(buf);
	hk__vcpu__vcpu_state__pack(m, buf);
	return buf;
}

/* A copy of the saved state with one thing changed, refused with a line naming it. */
static void expect_refused(struct hk_vm *vm, const uint8_t *buf, size_t len, const char *what,
			   const char *needle)
{
	char err[256] = "";
	int ret = hk_vm_vcpu_restore(vm, 0, buf, len, err, sizeof(err));

	cr_assert_lt(ret, 0, "%s: accepted", what);
	cr_assert(err[0] && !strchr(err, '\n'), "%s: error is not one line: '%s'", what, err);
	cr_assert(strstr(err, needle), "%s: error '%s' does not mention '%s'", what, err, needle);
	fprintf(stderr, "vcpu-migrate: %-22s -> %s\n", what, err);
}

/* The state fields of two messages, all but the TSC reading and its time. */
static void expect_same_state(const Hk__Vcpu__VcpuState *a, const Hk__Vcpu__VcpuState *b)
{
	const struct {
		const char *name;
		const ProtobufCBinaryData *x, *y;
	} f[] = {
	    {"regs", &a->regs, &b->regs},
	    {"sregs", &a->sregs, &b->sregs},
	    {"xsave", &a->xsave, &b->xsave},
	    {"xcrs", &a->xcrs, &b->xcrs},
	    {"debugregs", &a->debugregs, &b->debugregs},
	    {"events", &a->events, &b->events},
	};

	for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++) {
		cr_assert_eq(f[i].x->len, f[i].y->len, "%s changed size", f[i].name);
		cr_assert(memcmp(f[i].x->data, f[i].y->data, f[i].x->len) == 0,
			  "%s changed by a refused restore", f[i].name);
	}
	cr_assert_eq(a->n_msr_indices, b->n_msr_indices);
	for (size_t i = 0; i < a->n_msr_indices; i++) {
		cr_assert_eq(a->msr_indices[i], b->msr_indices[i]);
		cr_assert_eq(a->msr_values[i], b->msr_values[i], "MSR 0x%x changed",
			     a->msr_indices[i]);
	}
}

#define MSR_PAT 0x277

Test(vcpu_migrate, malformed)
{
	char ref[256], sum[256], err[256];
	struct console c;
	struct hk_vm *vm;
	Hk__Vcpu__VcpuState *m, *again;
	uint8_t *buf, *bad, *buf2;
	size_t len, bad_len, len2;

	need_kvm();
	reference_sum(ref, sizeof(ref));
	console_init(&c);
	vm = vm_new(&c, 0);
	wait_dots(&c, vm, ROUNDS / 4);
	cr_assert_eq(hk_vm_vcpu_park(vm, 0), 0);
	cr_assert_eq(hk_vm_vcpu_save(vm, 0, &buf, &len, err, sizeof(err)), 0, "save: %s", err);
	m = hk__vcpu__vcpu_state__unpack(NULL, len, buf);
	cr_assert(m);
	cr_assert_eq(m->version, HK_VCPU_STATE_VERSION);
	cr_assert_gt(m->n_msr_indices, 0, "no MSRs saved");

	expect_refused(vm, buf, len / 2, "truncated", "vCPU state");
	expect_refused(vm, (const uint8_t *)"\xff\xff\xff\xff garbage", 12, "garbage",
		       "vCPU state");
	expect_refused(vm, buf, 1u << 20, "oversized", "at most");

	m->version = 2;
	bad = pack(m, &bad_len);
	expect_refused(vm, bad, bad_len, "version 2", "version");
	free(bad);
	m->version = HK_VCPU_STATE_VERSION;

	m->index = 3;
	bad = pack(m, &bad_len);
	expect_refused(vm, bad, bad_len, "other vCPU", "vCPU 3");
	free(bad);
	m->index = 0;

	m->sregs.len -= 8;
	bad = pack(m, &bad_len);
	expect_refused(vm, bad, bad_len, "short sregs", "sregs");
	free(bad);
	m->sregs.len += 8;

	{
		size_t n = m->n_msr_indices, big = 10000;
		uint32_t *idx = m->msr_indices, *many = calloc(big, sizeof(*many));
		uint64_t *val = m->msr_values, *vals = calloc(big, sizeof(*vals));

		cr_assert(many && vals);
		for (size_t i = 0; i < big; i++)
			many[i] = 0xc0000081; /* STAR, over and over */
		m->msr_indices = many;
		m->msr_values = vals;
		m->n_msr_indices = m->n_msr_values = big;
		bad = pack(m, &bad_len);
		expect_refused(vm, bad, bad_len, "10000 MSRs", "MSRs");
		free(bad);
		m->n_msr_values = 3;
		m->n_msr_indices = 2;
		bad = pack(m, &bad_len);
		expect_refused(vm, bad, bad_len, "unpaired MSRs", "values");
		free(bad);
		m->msr_indices = idx;
		m->msr_values = val;
		m->n_msr_indices = m->n_msr_values = n;
		free(many);
		free(vals);
	}
	{
		uint32_t keep = m->msr_indices[0];

		m->msr_indices[0] = 0x10; /* IA32_TSC: moves in its own field */
		bad = pack(m, &bad_len);
		expect_refused(vm, bad, bad_len, "foreign MSR", "0x10");
		free(bad);
		m->msr_indices[0] = keep;
	}
	{
		/*
		 * Well-formed but refused by KVM half-way: registers scrambled
		 * (a guest resumed with them would crash or print another
		 * sum) and a PAT with reserved memory types, which KVM_SET_MSRS
		 * rejects after sregs, xcrs, xsave and regs were written.  All
		 * of them must be put back.
		 */
		size_t n = m->n_msr_indices, pat = n;
		uint32_t *idx = calloc(n + 1, sizeof(*idx));
		uint64_t *val = calloc(n + 1, sizeof(*val));
		uint32_t *keep_idx = m->msr_indices;
		uint64_t *keep_val = m->msr_values;
		uint8_t regs[sizeof(struct kvm_regs)];

		cr_assert(idx && val);
		memcpy(idx, m->msr_indices, n * sizeof(*idx));
		memcpy(val, m->msr_values, n * sizeof(*val));
		for (size_t i = 0; i < n; i++)
			if (idx[i] == MSR_PAT)
				pat = i;
		idx[pat] = MSR_PAT;
		val[pat] = 0x0202020202020202ull; /* type 2 is reserved */
		m->msr_indices = idx;
		m->msr_values = val;
		m->n_msr_indices = m->n_msr_values = pat == n ? n + 1 : n;
		memcpy(regs, m->regs.data, sizeof(regs));
		memset(m->regs.data, 0x5a, m->regs.len);
		bad = pack(m, &bad_len);
		expect_refused(vm, bad, bad_len, "PAT KVM refuses", "put back");
		free(bad);
		memcpy(m->regs.data, regs, sizeof(regs));
		m->msr_indices = keep_idx;
		m->msr_values = keep_val;
		m->n_msr_indices = m->n_msr_values = n;
		free(idx);
		free(val);
	}

	/* Nothing the refused messages carried reached the vCPU. */
	cr_assert_eq(hk_vm_vcpu_save(vm, 0, &buf2, &len2, err, sizeof(err)), 0, "save: %s", err);
	again = hk__vcpu__vcpu_state__unpack(NULL, len2, buf2);
	cr_assert(again);
	expect_same_state(m, again);
	cr_assert_geq(again->tsc, m->tsc, "guest TSC went backwards while parked");

	cr_assert_eq(hk_vm_vcpu_resume(vm, 0), 0);
	vm_finish(vm, &c, sum, sizeof(sum));
	hk_vm_destroy(vm);
	cr_assert_str_eq(sum, ref, "the guest's result changed after refused restores");

	hk__vcpu__vcpu_state__free_unpacked(m, NULL);
	hk__vcpu__vcpu_state__free_unpacked(again, NULL);
	free(buf);
	free(buf2);
}

/* Parking API edges that need no second VM. */
Test(vcpu_migrate, park_edges)
{
	char err[256];
	struct console c;
	struct hk_vm *vm;
	struct hk_vm_result res;
	uint8_t *buf;
	size_t len;

	need_kvm();
	console_init(&c);
	vm = vm_new(&c, 1); /* parked from the start: runs nothing */
	cr_assert_eq(hk_vm_vcpu_park(vm, 1), -EINVAL);
	cr_assert_eq(hk_vm_vcpu_resume(vm, 7), -EINVAL);
	cr_assert_eq(hk_vm_vcpu_save(vm, 2, &buf, &len, err, sizeof(err)), -EINVAL);
	nanosleep(&(struct timespec){.tv_nsec = 200 * 1000000}, NULL);
	cr_assert_eq(console_dots(&c), 0, "a vCPU that starts parked ran");
	hk_vm_result(vm, &res);
	cr_assert_eq(res.state, HK_VM_RUNNING, "a parked vCPU ended the guest: %s", res.reason);
	cr_assert_eq(hk_vm_vcpu_park(vm, 0), 0, "parking a parked vCPU");
	cr_assert_eq(hk_vm_vcpu_resume(vm, 0), 0);
	wait_dots(&c, vm, 1);
	/* Park and resume at once, a few times: no lost wake-up, no hang. */
	for (int i = 0; i < 20; i++) {
		cr_assert_eq(hk_vm_vcpu_park(vm, 0), 0);
		cr_assert_eq(hk_vm_vcpu_resume(vm, 0), 0);
	}
	cr_assert_eq(hk_vm_vcpu_park(vm, 0), 0);
	/* Stopping a guest whose only vCPU is parked must not hang. */
	hk_vm_stop(vm, "test over");
	cr_assert_eq(hk_vm_vcpu_park(vm, 0), -ESRCH);
	cr_assert_eq(hk_vm_vcpu_resume(vm, 0), -ESRCH);
	hk_vm_destroy(vm);
}
