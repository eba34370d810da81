/*
 * The guest machine: creation order, lifecycle and outcome.
 *
 * Memory is created and the kernel loaded before /dev/kvm is opened, so a
 * bad image is reported as such on any machine.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "blk.h"
#include "hk_internal.h"
#include "hk_service_page.h"
#include "mem_internal.h"
#include "replica.h"

#define HK_KERNEL_MAX_BYTES (512ull << 20)
/* VMX needs three pages for real-mode emulation; put them in the MMIO hole
 * where no RAM is.  Other KVM back ends ignore it. */
#define HK_GPA_VMX_TSS 0xfffbd000ull

uint64_t hk_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

bool hk_kvm_available(char *why, size_t len)
{
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	int version;

	if (fd < 0) {
		snprintf(why, len, "cannot open /dev/kvm: %s", strerror(errno));
		return false;
	}
	version = ioctl(fd, KVM_GET_API_VERSION, 0);
	close(fd);
	if (version != KVM_API_VERSION) {
		snprintf(why, len, "/dev/kvm speaks KVM API %d, expected %d", version,
			 KVM_API_VERSION);
		return false;
	}
	return true;
}

static int read_kernel(const char *path, uint8_t **buf, size_t *len, char *err, size_t errlen)
{
	struct stat st;
	ssize_t n;
	size_t got = 0;
	int fd, ret;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		ret = -errno;
		snprintf(err, errlen, "kernel %s: %s", path, strerror(errno));
		return ret;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "kernel %s: not a regular file", path);
		ret = -EINVAL;
		goto out;
	}
	if ((uint64_t)st.st_size > HK_KERNEL_MAX_BYTES) {
		snprintf(err, errlen, "kernel %s: %lld bytes is larger than the %llu MiB limit", path,
			 (long long)st.st_size, HK_KERNEL_MAX_BYTES >> 20);
		ret = -EFBIG;
		goto out;
	}
	*buf = malloc(st.st_size ? st.st_size : 1);
	if (!*buf) {
		ret = -ENOMEM;
		snprintf(err, errlen, "out of memory reading %s", path);
		goto out;
	}
	while (got < (size_t)st.st_size) {
		n = read(fd, *buf + got, st.st_size - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			snprintf(err, errlen, "kernel %s: read failed", path);
			free(*buf);
			*buf = NULL;
			ret = -EIO;
			goto out;
		}
		got += n;
	}
	*len = got;
	ret = 0;
out:
	close(fd);
	return ret;
}

static int vm_open_kvm(struct hk_vm *vm, char *err, size_t errlen)
{
	int ret;

	if (vm->kvm_fd < 0) {
		if (!hk_kvm_available(err, errlen))
			return -ENODEV;
		vm->kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
		if (vm->kvm_fd < 0) {
			ret = -errno;
			snprintf(err, errlen, "cannot open /dev/kvm: %s", strerror(errno));
			return ret;
		}
	}
	vm->vm_fd = ioctl(vm->kvm_fd, KVM_CREATE_VM, 0);
	if (vm->vm_fd < 0) {
		ret = -errno;
		snprintf(err, errlen, "KVM_CREATE_VM: %s", strerror(errno));
		return ret;
	}
	ioctl(vm->vm_fd, KVM_SET_TSS_ADDR, (unsigned long)HK_GPA_VMX_TSS);
	return vm->cpuid ? 0 : hk_x86_load_cpuid(vm, err, errlen);
}

/* KVM refuses memory slots beyond the guest-physical address width with a
 * bare EINVAL; say what is wrong instead. */
static int vm_check_phys_bits(struct hk_vm *vm, char *err, size_t errlen)
{
	struct hk_mem_range r[2];
	unsigned n = hk_mem_ranges(vm->mem, r), bits = hk_x86_phys_bits(vm);
	uint64_t end = r[n - 1].gpa + r[n - 1].len;

	if (bits < 64 && end > (1ull << bits)) {
		snprintf(err, errlen,
			 "guest memory ends at guest-physical 0x%llx, beyond the %u-bit address space "
			 "this KVM offers (at most %llu GiB of RAM above 4 GiB)",
			 (unsigned long long)end, bits,
			 (unsigned long long)(((1ull << bits) - HK_GPA_HIGH_RAM) >> 30));
		return -E2BIG;
	}
	return 0;
}

/* Fault thread: the guest's first write to a protected page. */
static void vm_wp_hook(void *ctx, uint64_t gpa, uint8_t flags)
{
	struct hk_vm *vm = ctx;
	struct hk_replica *t = atomic_load(&vm->wp_table);

	if (!t)
		return; /* table switched off: the page is just memory now */
	/* Always, not only for HK_PG_REPLICA: a page protected for an
	 * in-flight write must make that write's io_end see the change. */
	hk_replica_drop_gpa(t, gpa, 1);
}

/*
 * Write tracking for replica pages, chosen at the first boot (no page is
 * tracked yet) and kept: KVM's dirty log where KVM offers manual protect
 * with initially-set bits, so host PTEs stay writable and KVM keeps its
 * fast fault path; uffd write-protect otherwise, and always for pooled
 * memory, whose coherence write-protects shared copies through uffd.
 * Every later boot has a new KVM VM, which must enable the cap again.
 */
static int vm_setup_tracking(struct hk_vm *vm, char *err, size_t errlen)
{
	bool kvm_ok = !hk_mem_pooled(vm->mem) && hk_wtrack_kvm_supported(vm->vm_fd);
	int ret;

	if (vm->boots == 0) {
		if (vm->write_tracking == HK_WT_KVM && !kvm_ok) {
			snprintf(err, errlen, "write tracking kvm: %s",
				 hk_mem_pooled(vm->mem)
				     ? "a pooled guest tracks writes with uffd"
				     : "this KVM lacks KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 with "
				       "initially-set bits");
			return -ENOTSUP;
		}
		/* auto stays on uffd until the dirty log's open review findings
		 * (docs/architecture.md) are fixed: kvm is opt-in for now. */
		if (vm->write_tracking == HK_WT_KVM && kvm_ok) {
			ret = hk_wtrack_kvm_use(vm->mem);
			if (ret) {
				snprintf(err, errlen, "write tracking kvm: %s", strerror(-ret));
				return ret;
			}
		}
	}
	if (strcmp(hk_mem_tracking(vm->mem), "kvm-dirty-log"))
		return 0;
	ret = hk_wtrack_kvm_enable(vm->vm_fd);
	if (ret)
		snprintf(err, errlen, "KVM_ENABLE_CAP manual dirty log: %s", strerror(-ret));
	return ret;
}

/* The user's command line, then one virtio_mmio.device= per disk and hk.vcpus=N. */
static int vm_build_cmdline(struct hk_vm *vm, char **out, char *err, size_t errlen)
{
	char devs[HK_VM_MAX_DISKS * 48] = "";
	size_t used = 0;

	for (unsigned i = 0; i < vm->n_blks; i++) {
		if (hk_virtio_mmio_cmdline(vm->dev_base[i], devs + used, sizeof(devs) - used))
			break;
		used = strlen(devs);
	}
	if (asprintf(out, "%s%s hk.vcpus=%u", vm->user_cmdline, devs, vm->n_vcpus) < 0) {
		*out = NULL;
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	/* No leading blank when the user gave no command line. */
	memmove(*out, *out + (**out == ' '), strlen(*out + (**out == ' ')) + 1);
	return 0;
}

/*
 * Everything a boot (and a reboot) builds afresh: devices, the kernel in
 * memory, a KVM VM with its memory slots, vCPUs at the PVH entry.  Guest
 * memory itself, the replica table and the disks persist across boots.
 */
static int vm_boot(struct hk_vm *vm, char *err, size_t errlen)
{
	char *cmdline = NULL;
	int ret;

	if ((ret = hk_pio_register(vm, &hk_serial_ops, &vm->serial)) ||
	    (ret = hk_pio_register(vm, &hk_debug_exit_ops, NULL)) ||
	    (ret = hk_mmio_register(vm, HK_SERVICE_PAGE_GPA, HK_SERVICE_PAGE_SIZE, &hk_service_ops,
				    NULL))) {
		snprintf(err, errlen, "cannot register devices: %s", strerror(-ret));
		return ret;
	}
	/* Devices first: their windows go on the command line. */
	for (unsigned i = 0; i < vm->n_disks; i++) {
		if (vm->disks[i].disk) {
			ret = hk_blk_add(vm, &vm->disks[i], &vm->blks[i], err, errlen);
			if (ret)
				return ret;
			vm->dev_base[i] = vm->blks[i]->vdev->base;
		} else {
			vm->blks[i] = NULL;
			ret = hk_dev_remote_add(vm, i, &vm->dev_base[i]);
			if (ret) {
				snprintf(err, errlen, "disk %u: cannot add its remote window: %s", i,
					 strerror(-ret));
				return ret;
			}
		}
		vm->n_blks++;
	}
	ret = vm_build_cmdline(vm, &cmdline, err, errlen);
	if (ret)
		return ret;
	/* A pooled guest is loaded once, by node 0; writing it again from
	 * every node would race with vCPUs already running it. */
	if (hk_mem_pooled(vm->mem) && !vm->loader)
		ret = hk_pvh_probe(vm->mem, vm->image, vm->image_len, &vm->boot, err, errlen);
	else
		ret = hk_pvh_load(vm->mem, vm->image, vm->image_len, cmdline, &vm->boot, err,
				  errlen);
	free(cmdline);
	if (ret)
		return ret;
	if (vm->loader && hk_x86_write_boot_gdt(vm->mem)) {
		snprintf(err, errlen, "cannot write the boot GDT");
		return -EFAULT;
	}
	ret = vm_open_kvm(vm, err, errlen);
	if (ret)
		return ret;
	ret = vm_check_phys_bits(vm, err, errlen);
	if (ret)
		return ret;
	ret = vm_setup_tracking(vm, err, errlen);
	if (ret)
		return ret;
	ret = hk_mem_attach_kvm(vm->mem, vm->vm_fd, err, errlen);
	if (ret)
		return ret;
	for (unsigned i = 0; i < vm->n_vcpus; i++) {
		ret = hk_vcpu_init(vm, i, err, errlen);
		if (ret)
			return ret;
	}
	{
		/* Asked now, while no vCPU runs: a vCPU ioctl waits for the
		 * vCPU to leave KVM_RUN, which a guest spinning in ring 3 (or
		 * waiting for a page another node holds) may not do for long. */
		int khz = ioctl(vm->vcpus[0].fd, KVM_GET_TSC_KHZ, 0);

		atomic_store(&vm->tsc_khz, khz > 0 ? (uint64_t)khz : 0);
	}
	hk_vm_kvm_stats_open(vm); /* also a vCPU ioctl: before any runs */
	pthread_mutex_lock(&vm->lock);
	memset(&vm->result, 0, sizeof(vm->result));
	vm->result.state = HK_VM_CREATED;
	vm->result.boot = ++vm->boots;
	pthread_cond_broadcast(&vm->done); /* waiters on the old boot: it is gone */
	vm->halted_vcpus = 0;
	vm->start_ns = 0;
	atomic_store(&vm->stopping, false);
	pthread_mutex_unlock(&vm->lock);
	return 0;
}

/* Undo vm_boot; the guest must be stopped.  Device requests in flight
 * still finish (their buffers are guest memory, which stays). */
static void vm_unboot(struct hk_vm *vm)
{
	hk_wtrack_kvm_detach(vm->mem); /* the log goes with the VM: read it first */
	hk_vm_kvm_stats_close(vm);
	for (unsigned i = 0; i < vm->n_vcpus; i++)
		hk_vcpu_destroy(&vm->vcpus[i]);
	for (unsigned i = 0; i < vm->n_blks; i++)
		if (vm->blks[i])
			hk_blk_free(vm->blks[i]);
	vm->n_blks = 0;
	vm->n_pio = 0;
	vm->n_mmio = 0;
	if (vm->vm_fd >= 0)
		close(vm->vm_fd);
	vm->vm_fd = -1;
}

int hk_vm_create(const struct hk_vm_config *cfg, struct hk_vm **out, char *err, size_t errlen)
{
	struct hk_vm *vm;
	pthread_condattr_t ca;
	int ret;

	if (cfg->vcpus < 1 || cfg->vcpus > HK_MAX_VCPUS) {
		snprintf(err, errlen, "vcpus %u: must be 1 to %d", cfg->vcpus, HK_MAX_VCPUS);
		return -EINVAL;
	}
	if (cfg->n_disks > HK_VM_MAX_DISKS) {
		snprintf(err, errlen, "%u disks: at most %d", cfg->n_disks, HK_VM_MAX_DISKS);
		return -EINVAL;
	}
	for (unsigned i = 0; i < cfg->n_disks; i++)
		if (!cfg->disks[i].disk &&
		    (!cfg->pool || !cfg->remote || cfg->remote->size < sizeof(*cfg->remote))) {
			snprintf(err, errlen, "disk %u: no device here and no node to forward to", i);
			return -EINVAL;
		}
	vm = calloc(1, sizeof(*vm));
	if (!vm) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	vm->kvm_fd = vm->vm_fd = -1;
	for (unsigned i = 0; i < HK_MAX_VCPUS; i++)
		vm->vcpus[i].fd = -1;
	vm->n_vcpus = cfg->vcpus;
	vm->start_parked = cfg->start_parked;
	vm->console = cfg->console;
	vm->console_ctx = cfg->console_ctx;
	vm->n_disks = cfg->n_disks;
	memcpy(vm->disks, cfg->disks, cfg->n_disks * sizeof(cfg->disks[0]));
	vm->remote = cfg->remote;
	vm->remote_ctx = cfg->remote_ctx;
	pthread_mutex_init(&vm->lock, NULL);
	pthread_mutex_init(&vm->join_lock, NULL);
	pthread_rwlock_init(&vm->boot_lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&vm->done, &ca);
	pthread_cond_init(&vm->park_cv, &ca);
	pthread_condattr_destroy(&ca);
	pthread_mutex_init(&vm->serial.lock, NULL);

	vm->user_cmdline = strdup(cfg->cmdline ? cfg->cmdline : "");
	if (!vm->user_cmdline) {
		ret = -ENOMEM;
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	ret = read_kernel(cfg->kernel_path, &vm->image, &vm->image_len, err, errlen);
	if (ret)
		goto fail;
	ret = hk_mem_create(cfg->memory, cfg->fault_window, &vm->mem, err, errlen);
	if (ret)
		goto fail;
	vm->loader = !cfg->pool || cfg->pool->self == 0;
	if (cfg->pool) {
		ret = hk_mem_pool(vm->mem, cfg->pool, err, errlen);
		if (ret)
			goto fail;
	}
	vm->replicas = cfg->replicas;
	vm->node_id = cfg->node_id;
	vm->write_tracking = cfg->write_tracking;
	atomic_store(&vm->wp_table, vm->replicas);
	hk_mem_set_wp_hook(vm->mem, vm_wp_hook, vm);
	ret = vm_boot(vm, err, errlen);
	if (ret)
		goto fail;
	if (vm->replicas && !strcmp(hk_mem_tracking(vm->mem), "uffd") &&
	    !hk_mem_can_protect(vm->mem)) {
		snprintf(err, errlen,
			 "the storage-replica table needs userfaultfd write-protect or "
			 "KVM's manual dirty log, and neither is offered here "
			 "(set replicas = off)");
		ret = -ENOTSUP;
		goto fail;
	}
	*out = vm;
	return 0;
fail:
	hk_vm_destroy(vm);
	return ret;
}

int hk_vm_reboot_prepare(struct hk_vm *vm, uint64_t *kept_pages, char *err, size_t errlen)
{
	bool pooled = hk_mem_pooled(vm->mem);
	uint64_t kept;

	if (pooled && hk_mem_pool_stopped(vm->mem)) {
		snprintf(err, errlen, "this guest's pooled memory was stopped (a node was lost, a "
				      "message could not be sent, or the guest was stopped): start "
				      "a new guest");
		return -ESTALE;
	}
	int ret;

	hk_vm_halt(vm, "rebooting", true);
	pthread_rwlock_wrlock(&vm->boot_lock);
	vm_unboot(vm);
	if (pooled) {
		/* Every node keeps its pages: scrubbing would need every
		 * node's and every home's agreement on each frame, and a
		 * real machine's RAM survives a reset too. */
		kept = hk_mem_replica_pages(vm->mem);
	} else {
		/* Frames holding replicas stay, with their entries; everything
		 * else faults in as zeros again, as after a power cycle. */
		kept = hk_mem_scrub(vm->mem, vm->replicas != NULL);
	}
	if (kept_pages)
		*kept_pages = kept;
	/* Only now may the hook forget a table: pages protected under it
	 * were released by the scrub. */
	atomic_store(&vm->wp_table, vm->replicas);
	ret = vm_boot(vm, err, errlen);
	pthread_rwlock_unlock(&vm->boot_lock);
	if (!ret && pooled && hk_mem_pool_stopped(vm->mem)) {
		snprintf(err, errlen, "pooled memory was stopped during the reboot (a node lost, or "
				      "a message could not be sent)");
		ret = -ESTALE;
	}
	return ret;
}

int hk_vm_reboot(struct hk_vm *vm, uint64_t *kept_pages, char *err, size_t errlen)
{
	int ret = hk_vm_reboot_prepare(vm, kept_pages, err, errlen);

	return ret ? ret : hk_vm_start(vm);
}

int hk_vm_start(struct hk_vm *vm)
{
	int ret = 0;

	/* A node lost (or a send failed) while the guest was being built or
	 * rebooted: its memory can no longer be trusted. */
	if (hk_mem_pooled(vm->mem) && hk_mem_pool_stopped(vm->mem)) {
		hk_vm_finish(vm, HK_VM_CRASHED, 0, "pooled memory was stopped before the start");
		return -ESTALE;
	}
	pthread_mutex_lock(&vm->lock);
	if (vm->result.state != HK_VM_CREATED) {
		pthread_mutex_unlock(&vm->lock);
		return -EALREADY;
	}
	vm->result.state = HK_VM_RUNNING;
	vm->start_ns = hk_now_ns();
	pthread_mutex_unlock(&vm->lock);

	for (unsigned i = 0; i < vm->n_vcpus; i++) {
		ret = hk_vcpu_start(&vm->vcpus[i]);
		if (ret) {
			hk_vm_finish(vm, HK_VM_CRASHED, 0, "cannot start vCPU thread %u: %s", i,
				     strerror(-ret));
			break;
		}
	}
	return ret;
}

void hk_vm_finish(struct hk_vm *vm, enum hk_vm_state state, int exit_status, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&vm->lock);
	if (vm->result.state != HK_VM_RUNNING && vm->result.state != HK_VM_CREATED) {
		pthread_mutex_unlock(&vm->lock); /* the first outcome stands */
		return;
	}
	vm->result.state = state;
	vm->result.exit_status = exit_status;
	va_start(ap, fmt);
	vsnprintf(vm->result.reason, sizeof(vm->result.reason), fmt, ap);
	va_end(ap);
	vm->result.runtime_ns = vm->start_ns ? hk_now_ns() - vm->start_ns : 0;
	atomic_store(&vm->stopping, true);
	pthread_cond_broadcast(&vm->done);
	pthread_cond_broadcast(&vm->park_cv); /* parked vCPUs end too */
	pthread_mutex_unlock(&vm->lock);

	for (unsigned i = 0; i < vm->n_vcpus; i++)
		hk_vcpu_kick(&vm->vcpus[i]);
}

static bool vm_ended(const struct hk_vm *vm)
{
	return vm->result.state != HK_VM_RUNNING && vm->result.state != HK_VM_CREATED;
}

int hk_vm_wait(struct hk_vm *vm, int timeout_ms, struct hk_vm_result *res)
{
	struct timespec until;
	uint32_t boot;
	int ret = 0;

	clock_gettime(CLOCK_MONOTONIC, &until);
	if (timeout_ms >= 0) {
		until.tv_sec += timeout_ms / 1000;
		until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
	}
	pthread_mutex_lock(&vm->lock);
	boot = vm->boots;
	/* A reboot that rebuilt the VM meanwhile ends the wait too: what was
	 * waited for is gone (res->rebooting says so). */
	while (!vm_ended(vm) && vm->boots == boot && ret == 0) {
		if (timeout_ms < 0)
			pthread_cond_wait(&vm->done, &vm->lock);
		else if (pthread_cond_timedwait(&vm->done, &vm->lock, &until) == ETIMEDOUT)
			ret = -ETIMEDOUT;
	}
	if (vm_ended(vm) || vm->boots != boot)
		ret = 0;
	*res = vm->result;
	if (vm->boots != boot)
		res->rebooting = true;
	if (vm->result.state == HK_VM_RUNNING)
		res->runtime_ns = hk_now_ns() - vm->start_ns;
	pthread_mutex_unlock(&vm->lock);
	return ret;
}

void hk_vm_result(struct hk_vm *vm, struct hk_vm_result *res)
{
	hk_vm_wait(vm, 0, res);
}

void hk_vm_halt(struct hk_vm *vm, const char *why, bool for_reboot)
{
	if (for_reboot) {
		pthread_mutex_lock(&vm->lock);
		vm->result.rebooting = true;
		pthread_mutex_unlock(&vm->lock);
	}
	hk_vm_finish(vm, HK_VM_STOPPED, 0, "%s", why ? why : "stopped");
	/* Two stoppers (hkctl, a message from the leader) must not both join. */
	pthread_mutex_lock(&vm->join_lock);
	for (unsigned i = 0; i < vm->n_vcpus; i++)
		hk_vcpu_join(&vm->vcpus[i]);
	pthread_mutex_unlock(&vm->join_lock);
}

void hk_vm_reboot_failed(struct hk_vm *vm, const char *why)
{
	pthread_mutex_lock(&vm->lock);
	if (vm->result.rebooting && vm->result.state == HK_VM_STOPPED) {
		/* the halt's "rebooting" was an outcome only for the moment */
		vm->result.state = HK_VM_CRASHED;
		vm->result.rebooting = false;
		snprintf(vm->result.reason, sizeof(vm->result.reason), "reboot failed: %s",
			 why ? why : "?");
		pthread_cond_broadcast(&vm->done);
		pthread_mutex_unlock(&vm->lock);
		return;
	}
	pthread_mutex_unlock(&vm->lock);
	hk_vm_finish(vm, HK_VM_CRASHED, 0, "reboot failed: %s", why ? why : "?");
}

void hk_vm_stop(struct hk_vm *vm, const char *why)
{
	hk_vm_finish(vm, HK_VM_STOPPED, 0, "%s", why ? why : "stopped");
	/* Pooled memory: a vCPU blocked on a page another node will no longer
	 * send (its memory is going away) would never be joined.  Release it;
	 * this guest's memory is not used again. */
	if (vm->mem && hk_mem_pooled(vm->mem)) /* NULL: creation failed early */
		hk_mem_pool_abort(vm->mem, "the guest is ending");
	hk_vm_halt(vm, why, false);
}

void hk_vm_destroy(struct hk_vm *vm)
{
	if (!vm)
		return;
	hk_vm_stop(vm, "destroyed");
	vm_unboot(vm);
	/* Memory after the VM: KVM must drop its slots before the mapping goes. */
	hk_mem_destroy(vm->mem);
	if (vm->kvm_fd >= 0)
		close(vm->kvm_fd);
	free(vm->cpuid);
	free(vm->image);
	free(vm->user_cmdline);
	pthread_cond_destroy(&vm->done);
	pthread_cond_destroy(&vm->park_cv);
	pthread_mutex_destroy(&vm->lock);
	pthread_mutex_destroy(&vm->join_lock);
	pthread_rwlock_destroy(&vm->boot_lock);
	pthread_mutex_destroy(&vm->serial.lock);
	free(vm);
}

void hk_vm_get_stats(struct hk_vm *vm, struct hk_vm_stats *st)
{
	memset(st, 0, sizeof(*st));
	hk_mem_get_stats(vm->mem, &st->mem);
	for (unsigned i = 0; i < vm->n_vcpus; i++) {
		st->vcpu_exits += atomic_load(&vm->vcpus[i].exits);
		st->io_exits += atomic_load(&vm->vcpus[i].io_exits);
	}
	st->unhandled_io = atomic_load(&vm->unhandled_io);
	for (unsigned i = 0; i < vm->n_blks; i++) {
		struct hk_blk *b = vm->blks[i];

		if (!b)
			continue;

		st->disk_reads += atomic_load(&b->stats.reads);
		st->disk_writes += atomic_load(&b->stats.writes);
		st->bytes_from_disk += atomic_load(&b->stats.bytes_from_disk);
		st->bytes_from_replicas += atomic_load(&b->stats.bytes_from_replicas);
		st->bytes_written += atomic_load(&b->stats.bytes_written);
		st->bad_requests += atomic_load(&b->vdev->bad_requests);
	}
}

unsigned hk_vm_vcpus(const struct hk_vm *vm)
{
	return vm->n_vcpus;
}

struct hk_mem *hk_vm_mem(struct hk_vm *vm)
{
	return vm->mem;
}

uint64_t hk_vm_tsc_khz(struct hk_vm *vm)
{
	return atomic_load(&vm->tsc_khz);
}

void hk_vm_set_replicas(struct hk_vm *vm, struct hk_replica *replicas)
{
	/* Devices pick it up at the next vm_boot; the fault hook at once,
	 * but it is only ever handed a table that outlives the VM. */
	vm->replicas = replicas;
	if (replicas)
		atomic_store(&vm->wp_table, replicas);
}

uint64_t hk_vm_memory(const struct hk_vm *vm)
{
	return hk_mem_size(vm->mem);
}

void hk_vm_end(struct hk_vm *vm, enum hk_vm_state state, int exit_status, const char *reason)
{
	hk_vm_finish(vm, state, exit_status, "%s", reason ? reason : "");
}
