/*
 * KVM's own counters through its binary statistics (KVM_GET_STATS_FD,
 * Linux 5.14; Documentation/virt/kvm/api.rst).  A stats fd of a VM or a
 * vCPU starts with a struct kvm_stats_header, then an id string, one
 * struct kvm_stats_desc (flags, size in u64s, offset into the data block,
 * name_size bytes of name) per statistic, and the data block.  Only the
 * data changes for the life of the fd, so the header and descriptors are
 * read once at boot and each value is one pread at its offset.  Such a
 * pread takes no vCPU lock: a vCPU inside KVM_RUN does not hold it up,
 * and concurrent readers need no lock of ours either.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "hk_internal.h"

struct hk_kvm_stats {
	int fd;
	struct kvm_stats_header hdr;
	size_t desc_size; /* one descriptor with its name */
	uint8_t *desc;	  /* hdr.num_desc of them */
};

/* The stats hk shows, in this order.  A name this kernel lacks is left out. */
static const struct {
	const char *name;
	bool vcpu;
} shown[] = {
    {"pages_4k", false},
    {"pages_2m", false},
    {"pages_1g", false},
    {"nx_lpage_splits", false},
    {"mmu_shadow_zapped", false},
    {"remote_tlb_flush", false},
    {"exits", true},
    {"io_exits", true},
    {"mmio_exits", true},
    {"halt_exits", true},
    {"signal_exits", true},
    {"pf_taken", true},
    {"pf_fixed", true},
    {"pf_spurious", true},
    {"pf_emulate", true},
    {"tlb_flush", true},
    {"insn_emulation", true},
};

_Static_assert(sizeof(shown) / sizeof(shown[0]) <= HK_KVM_STATS_SHOWN, "HK_KVM_STATS_SHOWN");

static const struct kvm_stats_desc *stats_desc(const struct hk_kvm_stats *s, unsigned i)
{
	return (const struct kvm_stats_desc *)(s->desc + (size_t)i * s->desc_size);
}

int hk_kvm_stats_open(int kvm_obj_fd, struct hk_kvm_stats **out, char *err, size_t errlen)
{
	struct hk_kvm_stats *s;
	size_t len;
	ssize_t n;
	int ret;

	*out = NULL;
	s = calloc(1, sizeof(*s));
	if (!s) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	s->fd = ioctl(kvm_obj_fd, KVM_GET_STATS_FD, NULL);
	if (s->fd < 0) {
		ret = -errno;
		/* Kernels before 5.14 do not know the ioctl: not an error,
		 * the counters are just not there. */
		snprintf(err, errlen, "this kernel offers no KVM_GET_STATS_FD (%s)",
			 strerror(errno));
		if (ret == -ENOTTY || ret == -EINVAL)
			ret = -ENOTSUP;
		goto fail;
	}
	n = pread(s->fd, &s->hdr, sizeof(s->hdr), 0);
	if (n != (ssize_t)sizeof(s->hdr)) {
		ret = n < 0 ? -errno : -EIO;
		snprintf(err, errlen, "KVM stats header: short read");
		goto fail;
	}
	/* The kernel is trusted, but a layout we misread must not turn into
	 * reads past our buffer: 4096 stats of 256-byte names is far more
	 * than any kernel has. */
	if (s->hdr.num_desc > 4096 || s->hdr.name_size == 0 || s->hdr.name_size > 256) {
		snprintf(err, errlen, "KVM stats header: %u stats with %u-byte names",
			 s->hdr.num_desc, s->hdr.name_size);
		ret = -EINVAL;
		goto fail;
	}
	s->desc_size = sizeof(struct kvm_stats_desc) + s->hdr.name_size;
	len = s->desc_size * s->hdr.num_desc;
	s->desc = malloc(len ? len : 1);
	if (!s->desc) {
		snprintf(err, errlen, "out of memory");
		ret = -ENOMEM;
		goto fail;
	}
	n = pread(s->fd, s->desc, len, s->hdr.desc_offset);
	if (n != (ssize_t)len) {
		ret = n < 0 ? -errno : -EIO;
		snprintf(err, errlen, "KVM stats descriptors: short read");
		goto fail;
	}
	for (unsigned i = 0; i < s->hdr.num_desc; i++) /* names always end */
		((struct kvm_stats_desc *)stats_desc(s, i))->name[s->hdr.name_size - 1] = 0;
	*out = s;
	return 0;
fail:
	hk_kvm_stats_close(s);
	return ret;
}

void hk_kvm_stats_close(struct hk_kvm_stats *s)
{
	if (!s)
		return;
	if (s->fd >= 0)
		close(s->fd);
	free(s->desc);
	free(s);
}

static int stats_read(const struct hk_kvm_stats *s, const struct kvm_stats_desc *d, uint64_t *v)
{
	ssize_t n = pread(s->fd, v, sizeof(*v), (off_t)s->hdr.data_offset + d->offset);

	return n == (ssize_t)sizeof(*v) ? 0 : n < 0 ? -errno : -EIO;
}

/* A scalar: histograms (size > 1) have no one value to show. */
static bool stats_scalar(const struct kvm_stats_desc *d)
{
	uint32_t type = d->flags & KVM_STATS_TYPE_MASK;

	return d->size == 1 && type != KVM_STATS_TYPE_LINEAR_HIST &&
	       type != KVM_STATS_TYPE_LOG_HIST;
}

/* O(stats) name lookup: some 60 per vCPU, and status asks rarely. */
int hk_kvm_stats_get(const struct hk_kvm_stats *s, const char *name, uint64_t *value,
		     uint32_t *flags)
{
	for (unsigned i = 0; i < s->hdr.num_desc; i++) {
		const struct kvm_stats_desc *d = stats_desc(s, i);

		if (strcmp(d->name, name) || !stats_scalar(d))
			continue;
		if (flags)
			*flags = d->flags;
		return stats_read(s, d, value);
	}
	return -ENOENT;
}

int hk_kvm_stats_foreach(const struct hk_kvm_stats *s, hk_kvm_stats_fn fn, void *ctx)
{
	for (unsigned i = 0; i < s->hdr.num_desc; i++) {
		const struct kvm_stats_desc *d = stats_desc(s, i);
		uint64_t v;
		int ret;

		if (!stats_scalar(d))
			continue;
		ret = stats_read(s, d, &v);
		if (ret)
			return ret;
		fn(ctx, d->name, d->flags, v);
	}
	return 0;
}

/* ---- the VM's and its vCPUs' stats fds, per boot ---- */

void hk_vm_kvm_stats_open(struct hk_vm *vm)
{
	char err[128];
	int ret;

	vm->kstats_why[0] = 0;
	ret = hk_kvm_stats_open(vm->vm_fd, &vm->kstats, err, sizeof(err));
	for (unsigned i = 0; !ret && i < vm->n_vcpus; i++)
		ret = hk_kvm_stats_open(vm->vcpus[i].fd, &vm->vcpus[i].kstats, err, sizeof(err));
	if (ret) {
		/* The guest runs all the same; status says why there are none. */
		snprintf(vm->kstats_why, sizeof(vm->kstats_why), "%s", err);
		hk_vm_kvm_stats_close(vm);
	}
}

/* Before the VM's and vCPUs' fds: each stats fd holds a reference to the
 * VM, which would otherwise outlive its close (and its memory slots). */
void hk_vm_kvm_stats_close(struct hk_vm *vm)
{
	hk_kvm_stats_close(vm->kstats);
	vm->kstats = NULL;
	for (unsigned i = 0; i < vm->n_vcpus; i++) {
		hk_kvm_stats_close(vm->vcpus[i].kstats);
		vm->vcpus[i].kstats = NULL;
	}
}

static int vm_stats_none(struct hk_vm *vm, char *why, size_t whylen)
{
	snprintf(why, whylen, "%s", *vm->kstats_why ? vm->kstats_why : "no KVM VM booted");
	return -ENOTSUP;
}

/* Summed over vCPUs, except peaks (the largest any vCPU saw). */
static int vcpu_sum(struct hk_vm *vm, const char *name, uint64_t *sum)
{
	uint32_t flags = 0;
	uint64_t v;
	int ret;

	*sum = 0;
	for (unsigned i = 0; i < vm->n_vcpus; i++) {
		ret = hk_kvm_stats_get(vm->vcpus[i].kstats, name, &v, &flags);
		if (ret)
			return ret;
		if ((flags & KVM_STATS_TYPE_MASK) == KVM_STATS_TYPE_PEAK)
			*sum = v > *sum ? v : *sum;
		else
			*sum += v;
	}
	return 0;
}

int hk_vm_kvm_stats(struct hk_vm *vm, struct hk_kvm_stat *out, unsigned max, char *why,
		    size_t whylen)
{
	unsigned n = 0;

	if (!vm->kstats)
		return vm_stats_none(vm, why, whylen);
	for (size_t i = 0; i < sizeof(shown) / sizeof(shown[0]) && n < max; i++) {
		uint64_t v;
		int ret = shown[i].vcpu ? vcpu_sum(vm, shown[i].name, &v)
					: hk_kvm_stats_get(vm->kstats, shown[i].name, &v, NULL);

		if (ret == -ENOENT)
			continue; /* not on this kernel: absent, not zero */
		if (ret) {
			snprintf(why, whylen, "KVM stat %s: %s", shown[i].name, strerror(-ret));
			return ret;
		}
		out[n].name = shown[i].name;
		out[n].value = v;
		out[n].vcpu = shown[i].vcpu;
		n++;
	}
	return (int)n;
}

struct each_ctx {
	struct hk_vm *vm;
	hk_kvm_stat_fn fn;
	void *ctx;
	int ret;
};

static void each_vm(void *ctx, const char *name, uint32_t flags, uint64_t value)
{
	struct each_ctx *e = ctx;
	struct hk_kvm_stat st = {.name = name, .value = value, .vcpu = false};

	e->fn(e->ctx, &st);
}

static void each_vcpu(void *ctx, const char *name, uint32_t flags, uint64_t value)
{
	struct each_ctx *e = ctx;
	struct hk_kvm_stat st = {.name = name, .vcpu = true};
	int ret = vcpu_sum(e->vm, name, &st.value);

	if (ret && !e->ret)
		e->ret = ret;
	else if (!ret)
		e->fn(e->ctx, &st);
}

int hk_vm_kvm_stats_foreach(struct hk_vm *vm, hk_kvm_stat_fn fn, void *ctx)
{
	struct each_ctx e = {.vm = vm, .fn = fn, .ctx = ctx};
	int ret;

	if (!vm->kstats)
		return -ENOTSUP;
	ret = hk_kvm_stats_foreach(vm->kstats, each_vm, &e);
	/* vCPU 0's names, each summed over every vCPU: O(stats^2 * vCPUs),
	 * a few thousand string compares per vCPU; callers are tools. */
	if (!ret && vm->n_vcpus)
		ret = hk_kvm_stats_foreach(vm->vcpus[0].kstats, each_vcpu, &e);
	return ret ? ret : e.ret;
}
