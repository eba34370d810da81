/*
 * KVM's binary stats (kvm_stats.c) on a real VM: a guest of four
 * instructions writes to the debug-exit port; its exits, page faults and
 * installed mappings must show in KVM's own counters.  Needs /dev/kvm.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "elf_builder.h"
#include "hyperkernel.h"

static struct hk_vm *vm;
static char kpath[] = "/tmp/hk-kvmstats-XXXXXX";
static char err[256];

/* At the PVH entry (32-bit, flat): mov al, 0x2a; mov dx, 0x501; out dx, al; hlt */
static const uint8_t guest_code[] = {0xb0, 0x2a, 0x66, 0xba, 0x01, 0x05, 0xee, 0xf4};

static void need_kvm_stats(void)
{
	char why[256];
	int fd, has;

	if (!hk_kvm_available(why, sizeof(why)))
		cr_skip_test("needs /dev/kvm: %s", why);
	fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	cr_assert_geq(fd, 0);
	has = ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_BINARY_STATS_FD);
	close(fd);
	if (has <= 0)
		cr_skip_test("this kernel has no KVM_CAP_BINARY_STATS_FD");
}

static void create_vm(void)
{
	struct eb_image im;
	struct hk_vm_config cfg = {.kernel_path = kpath, .memory = 64ull << 20, .vcpus = 2};
	int fd;

	eb_build(&im);
	memcpy(im.buf + EB_CODE_OFF + 0x10, guest_code, sizeof(guest_code));
	fd = mkstemp(kpath);
	cr_assert_geq(fd, 0, "mkstemp: %s", strerror(errno));
	cr_assert_eq(write(fd, im.buf, sizeof(im.buf)), (ssize_t)sizeof(im.buf));
	close(fd);
	/* vCPU 1 never runs: its counters add nothing but must not break sums. */
	cfg.start_parked = 2;
	cr_assert_eq(hk_vm_create(&cfg, &vm, err, sizeof(err)), 0, "%s", err);
}

static void teardown(void)
{
	hk_vm_destroy(vm);
	vm = NULL;
	unlink(kpath);
}

TestSuite(kvm_stats, .fini = teardown);

/* The value named in out[0..n), or -1 when absent. */
static long long find(const struct hk_kvm_stat *out, int n, const char *name)
{
	for (int i = 0; i < n; i++)
		if (!strcmp(out[i].name, name))
			return (long long)out[i].value;
	return -1;
}

Test(kvm_stats, a_guest_run_shows_exits_faults_and_mappings)
{
	struct hk_kvm_stat before[HK_KVM_STATS_SHOWN], after[HK_KVM_STATS_SHOWN];
	struct hk_vm_result res;
	int nb, na;

	need_kvm_stats();
	create_vm();
	nb = hk_vm_kvm_stats(vm, before, HK_KVM_STATS_SHOWN, err, sizeof(err));
	cr_assert_gt(nb, 0, "no KVM stats on a kernel that has them: %s", err);
	cr_assert_eq(find(before, nb, "exits"), 0, "exits before the guest ran");

	cr_assert_eq(hk_vm_start(vm), 0);
	cr_assert_eq(hk_vm_wait(vm, 30000, &res), 0, "the guest did not end");
	cr_assert_eq(res.state, HK_VM_EXITED, "guest: %s", res.reason);
	cr_assert_eq(res.exit_status, (0x2a << 1) | 1);

	/* Readable after the guest ended: the VM lives until the next boot. */
	na = hk_vm_kvm_stats(vm, after, HK_KVM_STATS_SHOWN, err, sizeof(err));
	cr_assert_eq(na, nb, "the set of stats changed: %d then %d", nb, na);
	cr_assert_geq(find(after, na, "exits"), 1);
	cr_assert_geq(find(after, na, "io_exits"), 1, "the out to 0x501 is an I/O exit");
	/* The code page was not mapped before the guest fetched from it. */
	cr_assert_geq(find(after, na, "pf_fixed"), 1);
	cr_assert_gt(find(after, na, "pages_4k") + find(after, na, "pages_2m"),
		     find(before, nb, "pages_4k") + find(before, nb, "pages_2m"),
		     "no mapping installed by the run");
	for (int i = 0; i < na; i++) {
		static const char *const vm_side[] = {"pages_4k",	   "pages_2m",
						      "pages_1g",	   "nx_lpage_splits",
						      "mmu_shadow_zapped", "remote_tlb_flush"};
		bool on_vm = false;

		cr_assert_str_eq(after[i].name, before[i].name);
		for (size_t k = 0; k < sizeof(vm_side) / sizeof(vm_side[0]); k++)
			on_vm |= !strcmp(after[i].name, vm_side[k]);
		cr_assert_eq(after[i].vcpu, !on_vm, "%s: vm/vcpu", after[i].name);
	}
}

struct seen {
	char names[128][64];
	bool vcpu[128];
	uint64_t value[128];
	unsigned n;
};

static void see(void *ctx, const struct hk_kvm_stat *st)
{
	struct seen *s = ctx;

	if (s->n == 128)
		return;
	snprintf(s->names[s->n], sizeof(s->names[0]), "%s", st->name);
	s->vcpu[s->n] = st->vcpu;
	s->value[s->n++] = st->value;
}

static int seen_at(const struct seen *s, const char *name)
{
	for (unsigned i = 0; i < s->n; i++)
		if (!strcmp(s->names[i], name))
			return (int)i;
	return -1;
}

/*
 * foreach visits every scalar the kernel has; the shown list is a subset
 * of it (so a stat this kernel lacks is never made up as a zero), with the
 * same VM/vCPU side and, once the guest ended, the same values.
 */
Test(kvm_stats, shown_stats_are_the_kernels_own)
{
	struct hk_kvm_stat shown[HK_KVM_STATS_SHOWN];
	struct hk_vm_result res;
	static struct seen s;
	int n, k;

	need_kvm_stats();
	create_vm();
	cr_assert_eq(hk_vm_start(vm), 0);
	cr_assert_eq(hk_vm_wait(vm, 30000, &res), 0);
	hk_vm_stop(vm, "test"); /* no vCPU runs: values stand still */
	cr_assert_eq(hk_vm_kvm_stats_foreach(vm, see, &s), 0);
	k = seen_at(&s, "pages_4k");
	cr_assert(k >= 0 && !s.vcpu[k], "pages_4k is a VM stat on x86");
	k = seen_at(&s, "exits");
	cr_assert(k >= 0 && s.vcpu[k], "exits is a vCPU stat");
	cr_assert_gt(s.n, 20, "only %u stats visited", s.n);
	n = hk_vm_kvm_stats(vm, shown, HK_KVM_STATS_SHOWN, err, sizeof(err));
	cr_assert_gt(n, 0, "%s", err);
	for (int i = 0; i < n; i++) {
		k = seen_at(&s, shown[i].name);
		cr_assert_geq(k, 0, "%s shown but not the kernel's", shown[i].name);
		cr_assert_eq(s.vcpu[k], shown[i].vcpu, "%s: vm/vcpu", shown[i].name);
		cr_assert_eq(s.value[k], shown[i].value, "%s: %llu vs %llu", shown[i].name,
			     (unsigned long long)s.value[k], (unsigned long long)shown[i].value);
	}
	/* max bounds what is filled */
	cr_assert_eq(hk_vm_kvm_stats(vm, shown, 2, err, sizeof(err)), 2);
}
