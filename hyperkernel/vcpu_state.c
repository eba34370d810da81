/*
 * A vCPU's whole architectural state as one protobuf message
 * (proto/vcpu.proto), for moving a vCPU between nodes.
 *
 * What moves: REGS, SREGS, XSAVE (KVM_SET_FPU alone corrupts vector state),
 * XCRS, the MSRs listed below, DEBUGREGS, VCPU_EVENTS and the guest TSC.
 * Restore order: SREGS (paging mode, EFER, CR4.OSXSAVE, which the other
 * parts are checked against), XCRS (XCR0 says which XSAVE components are
 * valid), XSAVE, REGS, MSRS, DEBUGREGS, VCPU_EVENTS (KVM_SET_REGS drops a
 * pending exception, so events come after it), then the TSC.  Not moved:
 * LAPIC/IOAPIC/PIT state (hk creates no in-kernel irqchip), nested
 * virtualization state, the guest PMU, kvmclock's VM-wide offset
 * (KVM_SET_CLOCK, set once per VM, not per vCPU).
 *
 * Both ends must hold the vCPU stopped (hk_vm_vcpu_park or not yet
 * started): KVM finishes pending port I/O and MMIO before it parks, so the
 * state read here is never half an instruction.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>

#include "hk_internal.h"
#include "vcpu.pb-c.h"

#define MSR_IA32_TSC 0x10

/* Larger than any real message (an AMX XSAVE area is ~11 KiB): refused unread. */
#define STATE_MAX_BYTES (256u << 10)

#define XSAVE_LEGACY_BYTES 4096u /* struct kvm_xsave */

/*
 * The MSRs that hold guest state a long-mode guest relies on, each kept
 * only when this host's KVM lists it (KVM_GET_MSR_INDEX_LIST) unless
 * marked unlisted, and only when KVM_GET_MSRS accepts it.  Left out on
 * purpose: EFER and APIC_BASE (in sregs), FS/GS base (the segment bases
 * in sregs), the TSC (its own field, restored through the TSC offset),
 * TSC_DEADLINE and the x2APIC range (they live in the in-kernel LAPIC,
 * which hk does not create), machine-check banks (hk sets up none),
 * PMU counters, kvmclock's wall-clock MSR (VM-wide: KVM writes it into
 * guest memory once, and the page moves with memory), and read-only
 * model MSRs that every node configures alike (ARCH_CAPABILITIES,
 * PLATFORM_INFO, FEAT_CTL, UCODE_REV).
 */
/* One line per group reads better than one per entry. */
/* clang-format off */
static const struct migrated_msr {
	uint32_t index;
	bool unlisted; /* ask KVM even if its index list leaves it out */
} migrated_msrs[] = {
	/* SYSENTER CS/ESP/EIP: the 32-bit fast system call of compat processes. */
	{0x174}, {0x175}, {0x176},
	/* SYSCALL/SYSRET: selectors (STAR), 64-bit and compat entry points
	 * (LSTAR, CSTAR), RFLAGS bits cleared on entry (SFMASK). */
	{0xc0000081}, {0xc0000082}, {0xc0000083}, {0xc0000084},
	/* KERNEL_GS_BASE: what SWAPGS swaps in at kernel entry; sregs has only the live GS. */
	{0xc0000102},
	/* TSC_AUX: what RDTSCP and RDPID return; Linux keeps the CPU number there. */
	{0xc0000103},
	/* TSC_ADJUST: guest-visible; a host write only records it, the TSC moves apart. */
	{0x3b},
	/* PAT: the memory types the guest's page-table entries select. */
	{0x277},
	/* MISC_ENABLE: fast strings, MWAIT enable and the like, which a guest may toggle. */
	{0x1a0},
	/* SPEC_CTRL: the guest's speculation mitigations (IBRS, STIBP, SSBD);
	 * dropping it would silently switch them off. */
	{0x48},
	/* XSS: supervisor state components managed by XSAVES (CET, PT). */
	{0xda0},
	/* DEBUGCTL: single-step on branches, LBR; DR0-7 move in debugregs. */
	{0x1d9},
	/* MTRRs: KVM does not list them but keeps what the guest wrote, and
	 * the guest reads them back (Linux checks all CPUs agree).  Default
	 * type, fixed ranges, eight variable pairs (KVM's MTRRcap.VCNT). */
	{0x2ff, true}, {0x250, true}, {0x258, true}, {0x259, true},
	{0x268, true}, {0x269, true}, {0x26a, true}, {0x26b, true},
	{0x26c, true}, {0x26d, true}, {0x26e, true}, {0x26f, true},
	{0x200, true}, {0x201, true}, {0x202, true}, {0x203, true},
	{0x204, true}, {0x205, true}, {0x206, true}, {0x207, true},
	{0x208, true}, {0x209, true}, {0x20a, true}, {0x20b, true},
	{0x20c, true}, {0x20d, true}, {0x20e, true}, {0x20f, true},
	/* KVM paravirtual, per vCPU (KVM_GET_SUPPORTED_CPUID offers the KVM
	 * leaves, so a Linux guest uses them): the guest registered a page by
	 * GPA (kvmclock new and old, steal time, PV EOI) or a mode (poll
	 * control, async page faults) that the destination must keep serving.
	 * The async-PF vector precedes its enable: KVM refuses the enable
	 * without it. */
	{0x4b564d01}, {0x12}, {0x4b564d03}, {0x4b564d04}, {0x4b564d05},
	{0x4b564d06}, {0x4b564d02},
};
/* clang-format on */

#define N_MIGRATED_MSRS (sizeof(migrated_msrs) / sizeof(migrated_msrs[0]))

_Static_assert(N_MIGRATED_MSRS <= HK_VCPU_STATE_MAX_MSRS, "raise HK_VCPU_STATE_MAX_MSRS");

static bool msr_migrated(uint32_t index)
{
	for (size_t i = 0; i < N_MIGRATED_MSRS; i++)
		if (migrated_msrs[i].index == index)
			return true;
	return false;
}

/* Everything KVM_SET_* takes, in host form. */
struct vcpu_regs_all {
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	struct kvm_xcrs xcrs;
	struct kvm_debugregs debugregs;
	struct kvm_vcpu_events events;
	struct kvm_xsave *xsave; /* xsave_len bytes */
	size_t xsave_len;
	struct kvm_msrs *msrs; /* with room for HK_VCPU_STATE_MAX_MSRS entries */
};

static void regs_all_free(struct vcpu_regs_all *s)
{
	free(s->xsave);
	free(s->msrs);
	s->xsave = NULL;
	s->msrs = NULL;
}

static struct kvm_msrs *msrs_alloc(void)
{
	return calloc(1, sizeof(struct kvm_msrs) +
			     HK_VCPU_STATE_MAX_MSRS * sizeof(struct kvm_msr_entry));
}

/* Bytes KVM_GET_XSAVE2 / KVM_SET_XSAVE move on this VM (4096 before XSAVE2). */
static size_t xsave_size(struct hk_vm *vm)
{
	int r = ioctl(vm->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2);

	return r > (int)XSAVE_LEGACY_BYTES ? (size_t)r : XSAVE_LEGACY_BYTES;
}

static int get_xsave(struct hk_vcpu *v, struct vcpu_regs_all *s, char *err, size_t errlen)
{
	s->xsave_len = xsave_size(v->vm);
	s->xsave = calloc(1, s->xsave_len);
	if (!s->xsave) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	if (ioctl(v->fd, s->xsave_len > XSAVE_LEGACY_BYTES ? KVM_GET_XSAVE2 : KVM_GET_XSAVE,
		  s->xsave) < 0) {
		int ret = -errno;

		snprintf(err, errlen, "vCPU %u: KVM_GET_XSAVE: %s", v->index, strerror(errno));
		return ret;
	}
	return 0;
}

/* Every part but the MSRs and the TSC. */
static int get_regs_all(struct hk_vcpu *v, struct vcpu_regs_all *s, char *err, size_t errlen)
{
	static const struct {
		unsigned long req;
		size_t off;
		const char *name;
	} parts[] = {
	    {KVM_GET_REGS, offsetof(struct vcpu_regs_all, regs), "KVM_GET_REGS"},
	    {KVM_GET_SREGS, offsetof(struct vcpu_regs_all, sregs), "KVM_GET_SREGS"},
	    {KVM_GET_XCRS, offsetof(struct vcpu_regs_all, xcrs), "KVM_GET_XCRS"},
	    {KVM_GET_DEBUGREGS, offsetof(struct vcpu_regs_all, debugregs), "KVM_GET_DEBUGREGS"},
	    {KVM_GET_VCPU_EVENTS, offsetof(struct vcpu_regs_all, events), "KVM_GET_VCPU_EVENTS"},
	};

	for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
		if (ioctl(v->fd, parts[i].req, (char *)s + parts[i].off) < 0) {
			int ret = -errno;

			snprintf(err, errlen, "vCPU %u: %s: %s", v->index, parts[i].name,
				 strerror(errno));
			return ret;
		}
	}
	return get_xsave(v, s, err, errlen);
}

/* KVM's MSR index list (emulated and saved MSRs); malloc'd. */
static struct kvm_msr_list *msr_index_list(struct hk_vm *vm)
{
	struct kvm_msr_list probe = {.nmsrs = 0}, *list;

	if (ioctl(vm->kvm_fd, KVM_GET_MSR_INDEX_LIST, &probe) < 0 && errno != E2BIG)
		return NULL;
	list = calloc(1, sizeof(*list) + (probe.nmsrs + 1) * sizeof(list->indices[0]));
	if (!list)
		return NULL;
	list->nmsrs = probe.nmsrs;
	if (ioctl(vm->kvm_fd, KVM_GET_MSR_INDEX_LIST, list) < 0) {
		free(list);
		return NULL;
	}
	return list;
}

/*
 * Read the migrated MSRs KVM knows into s->msrs.  KVM_GET_MSRS stops at
 * the first MSR it refuses and says how many it read: that one is dropped
 * and the rest asked again.
 */
static int get_msrs(struct hk_vcpu *v, struct vcpu_regs_all *s, char *err, size_t errlen)
{
	struct kvm_msr_list *list = msr_index_list(v->vm);
	struct kvm_msrs *m = msrs_alloc();
	unsigned n = 0, done = 0;
	int ret = 0;

	if (!list || !m) {
		snprintf(err, errlen, "vCPU %u: cannot read KVM's MSR index list: %s", v->index,
			 list ? "out of memory" : strerror(errno));
		ret = list ? -ENOMEM : -errno;
		goto out;
	}
	for (size_t i = 0; i < N_MIGRATED_MSRS; i++) {
		bool listed = migrated_msrs[i].unlisted;

		for (uint32_t j = 0; j < list->nmsrs && !listed; j++)
			listed = list->indices[j] == migrated_msrs[i].index;
		if (listed)
			m->entries[n++].index = migrated_msrs[i].index;
	}
	while (done < n) {
		struct {
			struct kvm_msrs hdr;
			struct kvm_msr_entry e[HK_VCPU_STATE_MAX_MSRS];
		} q = {.hdr.nmsrs = n - done};
		int got;

		memcpy(q.e, &m->entries[done], (n - done) * sizeof(q.e[0]));
		got = ioctl(v->fd, KVM_GET_MSRS, &q);
		if (got < 0) {
			ret = -errno;
			snprintf(err, errlen, "vCPU %u: KVM_GET_MSRS: %s", v->index,
				 strerror(errno));
			goto out;
		}
		memcpy(&m->entries[done], q.e, got * sizeof(q.e[0]));
		done += got;
		if (done < n) { /* entries[done] refused: drop it */
			memmove(&m->entries[done], &m->entries[done + 1],
				(n - done - 1) * sizeof(m->entries[0]));
			n--;
		}
	}
	m->nmsrs = n;
	s->msrs = m;
	m = NULL;
out:
	free(list);
	free(m);
	return ret;
}

static int msr_read1(struct hk_vcpu *v, uint32_t index, uint64_t *val)
{
	struct {
		struct kvm_msrs hdr;
		struct kvm_msr_entry e;
	} q = {.hdr.nmsrs = 1, .e.index = index};

	int r = ioctl(v->fd, KVM_GET_MSRS, &q);

	if (r != 1)
		return r < 0 ? -errno : -EIO;
	*val = q.e.data;
	return 0;
}

static uint64_t realtime_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* The vCPU to work on, checked: it exists and nothing runs it. */
static struct hk_vcpu *stopped_vcpu(struct hk_vm *vm, unsigned index, char *err, size_t errlen,
				    int *ret)
{
	struct hk_vcpu *v;

	if (index >= vm->n_vcpus || vm->vcpus[index].fd < 0) {
		snprintf(err, errlen, "vCPU %u: no such vCPU (the guest has %u)", index,
			 vm->n_vcpus);
		*ret = -EINVAL;
		return NULL;
	}
	v = &vm->vcpus[index];
	if (!hk_vcpu_is_stopped(v)) {
		snprintf(err, errlen, "vCPU %u is running: park it first", index);
		*ret = -EBUSY;
		return NULL;
	}
	return v;
}

static ProtobufCBinaryData bin(const void *p, size_t len)
{
	return (ProtobufCBinaryData){.len = len, .data = (uint8_t *)p};
}

int hk_vm_vcpu_save(struct hk_vm *vm, unsigned index, uint8_t **buf, size_t *len, char *err,
		    size_t errlen)
{
	Hk__Vcpu__VcpuState msg = HK__VCPU__VCPU_STATE__INIT;
	struct vcpu_regs_all s = {0};
	uint32_t idx[HK_VCPU_STATE_MAX_MSRS];
	uint64_t val[HK_VCPU_STATE_MAX_MSRS];
	struct hk_vcpu *v;
	int ret, khz;

	v = stopped_vcpu(vm, index, err, errlen, &ret);
	if (!v)
		return ret;
	if ((ret = get_regs_all(v, &s, err, errlen)) || (ret = get_msrs(v, &s, err, errlen)))
		goto out;
	ret = msr_read1(v, MSR_IA32_TSC, &msg.tsc);
	if (ret) {
		snprintf(err, errlen, "vCPU %u: cannot read the guest TSC: %s", index,
			 strerror(-ret));
		goto out;
	}
	msg.saved_realtime_ns = realtime_ns();
	khz = ioctl(v->fd, KVM_GET_TSC_KHZ, 0);
	msg.tsc_khz = khz > 0 ? (uint32_t)khz : 0;

	msg.version = HK_VCPU_STATE_VERSION;
	msg.index = index;
	msg.regs = bin(&s.regs, sizeof(s.regs));
	msg.sregs = bin(&s.sregs, sizeof(s.sregs));
	msg.xsave = bin(s.xsave, s.xsave_len);
	msg.xcrs = bin(&s.xcrs, sizeof(s.xcrs));
	msg.debugregs = bin(&s.debugregs, sizeof(s.debugregs));
	msg.events = bin(&s.events, sizeof(s.events));
	for (unsigned i = 0; i < s.msrs->nmsrs; i++) {
		idx[i] = s.msrs->entries[i].index;
		val[i] = s.msrs->entries[i].data;
	}
	msg.n_msr_indices = msg.n_msr_values = s.msrs->nmsrs;
	msg.msr_indices = idx;
	msg.msr_values = val;

	*len = hk__vcpu__vcpu_state__get_packed_size(&msg);
	*buf = malloc(*len ? *len : 1);
	if (!*buf) {
		snprintf(err, errlen, "out of memory");
		ret = -ENOMEM;
		goto out;
	}
	hk__vcpu__vcpu_state__pack(&msg, *buf);
	ret = 0;
out:
	regs_all_free(&s);
	return ret;
}

/* ---- restore ------------------------------------------------------------- */

#define EVENTS_KNOWN_FLAGS                                                                         \
	(KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SIPI_VECTOR |                       \
	 KVM_VCPUEVENT_VALID_SHADOW | KVM_VCPUEVENT_VALID_SMM | KVM_VCPUEVENT_VALID_PAYLOAD |      \
	 KVM_VCPUEVENT_VALID_TRIPLE_FAULT)

/* Check a field's length against the struct it carries. */
static int check_len(const ProtobufCBinaryData *b, size_t want, const char *name, char *err,
		     size_t errlen)
{
	if (b->len == want)
		return 0;
	snprintf(err, errlen, "vCPU state: %s is %zu bytes, struct kvm_%s is %zu", name, b->len,
		 name, want);
	return -EINVAL;
}

/*
 * Every check that needs no ioctl, then the message turned into host form
 * (into *s).  Nothing on the vCPU is touched.
 */
static int state_parse(struct hk_vm *vm, unsigned index, const Hk__Vcpu__VcpuState *m,
		       struct vcpu_regs_all *s, char *err, size_t errlen)
{
	size_t xlen = xsave_size(vm);
	int ret;

	if (m->version != HK_VCPU_STATE_VERSION) {
		snprintf(err, errlen, "vCPU state: format version %u, this hk reads version %d",
			 m->version, HK_VCPU_STATE_VERSION);
		return -EINVAL;
	}
	if (m->index != index) {
		snprintf(err, errlen, "vCPU state: saved from vCPU %u, cannot become vCPU %u",
			 m->index, index);
		return -EINVAL;
	}
	if ((ret = check_len(&m->regs, sizeof(s->regs), "regs", err, errlen)) ||
	    (ret = check_len(&m->sregs, sizeof(s->sregs), "sregs", err, errlen)) ||
	    (ret = check_len(&m->xcrs, sizeof(s->xcrs), "xcrs", err, errlen)) ||
	    (ret = check_len(&m->debugregs, sizeof(s->debugregs), "debugregs", err, errlen)) ||
	    (ret = check_len(&m->events, sizeof(s->events), "vcpu_events", err, errlen)))
		return ret;
	/* A smaller area (from a host without XSAVE2) is the same layout,
	 * zero beyond; a larger one names components this KVM cannot hold. */
	if (m->xsave.len < XSAVE_LEGACY_BYTES || m->xsave.len > xlen) {
		snprintf(err, errlen, "vCPU state: xsave is %zu bytes, this KVM takes %u to %zu",
			 m->xsave.len, XSAVE_LEGACY_BYTES, xlen);
		return -EINVAL;
	}
	if (m->n_msr_indices != m->n_msr_values) {
		snprintf(err, errlen, "vCPU state: %zu MSR indices but %zu values",
			 m->n_msr_indices, m->n_msr_values);
		return -EINVAL;
	}
	if (m->n_msr_indices > HK_VCPU_STATE_MAX_MSRS) {
		snprintf(err, errlen, "vCPU state: %zu MSRs, at most %d", m->n_msr_indices,
			 HK_VCPU_STATE_MAX_MSRS);
		return -EINVAL;
	}
	for (size_t i = 0; i < m->n_msr_indices; i++) {
		if (!msr_migrated(m->msr_indices[i])) {
			snprintf(err, errlen, "vCPU state: MSR 0x%x is not one hk migrates",
				 m->msr_indices[i]);
			return -EINVAL;
		}
		for (size_t j = 0; j < i; j++)
			if (m->msr_indices[j] == m->msr_indices[i]) {
				snprintf(err, errlen, "vCPU state: MSR 0x%x given twice",
					 m->msr_indices[i]);
				return -EINVAL;
			}
	}

	memcpy(&s->regs, m->regs.data, sizeof(s->regs));
	memcpy(&s->sregs, m->sregs.data, sizeof(s->sregs));
	memcpy(&s->xcrs, m->xcrs.data, sizeof(s->xcrs));
	memcpy(&s->debugregs, m->debugregs.data, sizeof(s->debugregs));
	memcpy(&s->events, m->events.data, sizeof(s->events));
	if (s->xcrs.nr_xcrs > KVM_MAX_XCRS || s->xcrs.flags) {
		snprintf(err, errlen,
			 "vCPU state: xcrs holds %u registers (at most %d), flags 0x%x",
			 s->xcrs.nr_xcrs, KVM_MAX_XCRS, s->xcrs.flags);
		return -EINVAL;
	}
	if (s->debugregs.flags) {
		snprintf(err, errlen, "vCPU state: debugregs flags 0x%llx, must be 0",
			 (unsigned long long)s->debugregs.flags);
		return -EINVAL;
	}
	if (s->events.flags & ~EVENTS_KNOWN_FLAGS) {
		snprintf(err, errlen, "vCPU state: vcpu_events flags 0x%x has unknown bits",
			 s->events.flags);
		return -EINVAL;
	}
	/* The NMI state in the message is whole: tell KVM to take it. */
	s->events.flags |= KVM_VCPUEVENT_VALID_NMI_PENDING;
	s->events.flags &= ~KVM_VCPUEVENT_VALID_SIPI_VECTOR; /* no in-kernel LAPIC */

	s->xsave_len = xlen;
	s->xsave = calloc(1, xlen);
	s->msrs = msrs_alloc();
	if (!s->xsave || !s->msrs) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	memcpy(s->xsave, m->xsave.data, m->xsave.len);
	s->msrs->nmsrs = m->n_msr_indices;
	for (size_t i = 0; i < m->n_msr_indices; i++) {
		s->msrs->entries[i].index = m->msr_indices[i];
		s->msrs->entries[i].data = m->msr_values[i];
	}
	return 0;
}

/* The dest vCPU's current values of the MSRs in want (same order), to put back on failure. */
static int get_msrs_like(struct hk_vcpu *v, const struct kvm_msrs *want, struct kvm_msrs **out,
			 char *err, size_t errlen)
{
	struct kvm_msrs *m = msrs_alloc();
	int got;

	if (!m) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	m->nmsrs = want->nmsrs;
	for (unsigned i = 0; i < want->nmsrs; i++)
		m->entries[i].index = want->entries[i].index;
	got = ioctl(v->fd, KVM_GET_MSRS, m);
	if (got != (int)m->nmsrs) {
		if (got < 0)
			snprintf(err, errlen, "vCPU %u: KVM_GET_MSRS: %s", v->index,
				 strerror(errno));
		else
			snprintf(err, errlen, "vCPU state: this host's KVM does not know MSR 0x%x",
				 m->entries[got].index);
		free(m);
		return got < 0 ? -errno : -EINVAL;
	}
	*out = m;
	return 0;
}

/*
 * Write s in the documented order; returns the number of parts written
 * (all 7 on success) and fills err when one fails.  MSRs already equal to
 * cur's value are not written: KVM gives some of them side effects (a
 * kvmclock write re-registers the page), and an equal value changes
 * nothing the guest can see.
 */
#define N_PARTS 7

static unsigned put_regs_all(struct hk_vcpu *v, const struct vcpu_regs_all *s,
			     const struct kvm_msrs *cur, char *err, size_t errlen)
{
	unsigned part = 0;
	const char *what = NULL;

	for (; part < N_PARTS; part++) {
		int r = 0;

		switch (part) {
		case 0:
			what = "KVM_SET_SREGS";
			r = ioctl(v->fd, KVM_SET_SREGS, &s->sregs);
			break;
		case 1:
			what = "KVM_SET_XCRS";
			/* A host without XSAVE reports no XCRs and refuses to set any. */
			if (s->xcrs.nr_xcrs)
				r = ioctl(v->fd, KVM_SET_XCRS, &s->xcrs);
			break;
		case 2:
			what = "KVM_SET_XSAVE";
			r = ioctl(v->fd, KVM_SET_XSAVE, s->xsave);
			break;
		case 3:
			what = "KVM_SET_REGS";
			r = ioctl(v->fd, KVM_SET_REGS, &s->regs);
			break;
		case 4: {
			struct {
				struct kvm_msrs hdr;
				struct kvm_msr_entry e[HK_VCPU_STATE_MAX_MSRS];
			} q = {.hdr.nmsrs = 0};

			what = "KVM_SET_MSRS";
			for (unsigned i = 0; i < s->msrs->nmsrs; i++)
				if (!cur || cur->entries[i].data != s->msrs->entries[i].data)
					q.e[q.hdr.nmsrs++] = s->msrs->entries[i];
			r = q.hdr.nmsrs ? ioctl(v->fd, KVM_SET_MSRS, &q) : 0;
			if (r >= 0 && (unsigned)r < q.hdr.nmsrs) {
				snprintf(err, errlen, "vCPU %u: KVM refused MSR 0x%x = 0x%llx",
					 v->index, q.e[r].index, (unsigned long long)q.e[r].data);
				return part;
			}
			r = r < 0 ? -1 : 0;
			break;
		}
		case 5:
			what = "KVM_SET_DEBUGREGS";
			r = ioctl(v->fd, KVM_SET_DEBUGREGS, &s->debugregs);
			break;
		case 6:
			what = "KVM_SET_VCPU_EVENTS";
			r = ioctl(v->fd, KVM_SET_VCPU_EVENTS, &s->events);
			break;
		}
		if (r < 0) {
			snprintf(err, errlen, "vCPU %u: %s: %s", v->index, what, strerror(errno));
			return part;
		}
	}
	return part;
}

/*
 * The guest TSC continues from tsc plus the real time since it was read,
 * so it never goes backwards and stays in step with vCPUs that kept
 * running.  KVM's per-vCPU TSC offset (KVM_VCPU_TSC_OFFSET) sets it
 * exactly: new offset = current offset + (target - current guest TSC).
 * Writing IA32_TSC instead goes through KVM's TSC "synchronization"
 * heuristic, which may snap a value within a second of another vCPU's to
 * that vCPU's offset, i.e. backwards; it is only the fallback for kernels
 * older than 5.16.
 */
static int put_tsc(struct hk_vcpu *v, uint64_t tsc, uint32_t khz, uint64_t saved_rt, char *err,
		   size_t errlen)
{
	struct kvm_device_attr attr = {.group = KVM_VCPU_TSC_CTRL, .attr = KVM_VCPU_TSC_OFFSET};
	struct {
		struct kvm_msrs hdr;
		struct kvm_msr_entry e;
	} q = {.hdr.nmsrs = 1, .e.index = MSR_IA32_TSC};
	uint64_t now = realtime_ns(), target = tsc, offset = 0, cur = 0;
	int ret;

	if (khz && now > saved_rt)
		target += (uint64_t)((unsigned __int128)(now - saved_rt) * khz / 1000000u);
	if (ioctl(v->fd, KVM_HAS_DEVICE_ATTR, &attr) < 0) {
		q.e.data = target;
		ret = ioctl(v->fd, KVM_SET_MSRS, &q);
		if (ret == 1)
			return 0;
		ret = ret < 0 ? -errno : -EINVAL;
		goto fail;
	}
	attr.addr = (uint64_t)(uintptr_t)&offset;
	if (ioctl(v->fd, KVM_GET_DEVICE_ATTR, &attr) < 0) {
		ret = -errno;
		goto fail;
	}
	ret = msr_read1(v, MSR_IA32_TSC, &cur);
	if (ret)
		goto fail;
	offset += target - cur; /* modulo 2^64, as the hardware adds it */
	if (ioctl(v->fd, KVM_SET_DEVICE_ATTR, &attr) < 0) {
		ret = -errno;
		goto fail;
	}
	return 0;
fail:
	snprintf(err, errlen, "vCPU %u: cannot set the guest TSC: %s", v->index, strerror(-ret));
	return ret;
}

int hk_vm_vcpu_restore(struct hk_vm *vm, unsigned index, const uint8_t *buf, size_t len, char *err,
		       size_t errlen)
{
	Hk__Vcpu__VcpuState *m = NULL;
	struct vcpu_regs_all s = {0}, old = {0};
	struct kvm_msrs *old_msrs = NULL;
	struct hk_vcpu *v;
	int ret, old_khz = 0;
	unsigned done;

	v = stopped_vcpu(vm, index, err, errlen, &ret);
	if (!v)
		return ret;
	if (len > STATE_MAX_BYTES) {
		snprintf(err, errlen, "vCPU state: %zu bytes, at most %u", len, STATE_MAX_BYTES);
		return -EINVAL;
	}
	m = hk__vcpu__vcpu_state__unpack(NULL, len, buf);
	if (!m) {
		snprintf(err, errlen, "vCPU state: %zu bytes that are not a VcpuState message",
			 len);
		return -EINVAL;
	}
	ret = state_parse(vm, index, m, &s, err, errlen);
	if (ret)
		goto out;
	/* What the vCPU holds now, to put back if KVM refuses part of s. */
	if ((ret = get_regs_all(v, &old, err, errlen)) ||
	    (ret = get_msrs_like(v, s.msrs, &old_msrs, err, errlen)))
		goto out;
	if (m->tsc_khz) {
		old_khz = ioctl(v->fd, KVM_GET_TSC_KHZ, 0);
		if (old_khz > 0 && (uint32_t)old_khz != m->tsc_khz &&
		    ioctl(v->fd, KVM_SET_TSC_KHZ, m->tsc_khz) < 0) {
			ret = -errno;
			snprintf(err, errlen,
				 "vCPU %u: the state's TSC runs at %u kHz, this vCPU's at %d kHz, "
				 "and KVM cannot scale it: %s",
				 index, m->tsc_khz, old_khz, strerror(errno));
			goto out;
		}
	}
	done = put_regs_all(v, &s, old_msrs, err, errlen);
	if (done == N_PARTS) {
		ret = put_tsc(v, m->tsc, m->tsc_khz, m->saved_realtime_ns, err, errlen);
		if (ret == 0)
			goto out;
	} else {
		ret = -EINVAL;
	}
	/* Put back what was written (err keeps the first failure). */
	{
		char ignored[160];

		old.msrs = old_msrs;
		old_msrs = NULL;
		old.events.flags |= KVM_VCPUEVENT_VALID_NMI_PENDING;
		put_regs_all(v, &old, s.msrs, ignored, sizeof(ignored));
		if (old_khz > 0 && (uint32_t)old_khz != m->tsc_khz)
			ioctl(v->fd, KVM_SET_TSC_KHZ, old_khz);
		snprintf(err + strlen(err), errlen - strlen(err), " (vCPU state put back)");
	}
out:
	free(old_msrs);
	regs_all_free(&old);
	regs_all_free(&s);
	hk__vcpu__vcpu_state__free_unpacked(m, NULL);
	return ret;
}
