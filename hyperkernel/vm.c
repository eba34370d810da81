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

#include "hk_internal.h"

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

	if (!hk_kvm_available(err, errlen))
		return -ENODEV;
	vm->kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (vm->kvm_fd < 0) {
		ret = -errno;
		snprintf(err, errlen, "cannot open /dev/kvm: %s", strerror(errno));
		return ret;
	}
	vm->vm_fd = ioctl(vm->kvm_fd, KVM_CREATE_VM, 0);
	if (vm->vm_fd < 0) {
		ret = -errno;
		snprintf(err, errlen, "KVM_CREATE_VM: %s", strerror(errno));
		return ret;
	}
	ioctl(vm->vm_fd, KVM_SET_TSS_ADDR, (unsigned long)HK_GPA_VMX_TSS);
	return hk_x86_load_cpuid(vm, err, errlen);
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

int hk_vm_create(const struct hk_vm_config *cfg, struct hk_vm **out, char *err, size_t errlen)
{
	struct hk_vm *vm;
	uint8_t *image = NULL;
	size_t image_len = 0;
	char *cmdline = NULL;
	pthread_condattr_t ca;
	int ret;

	if (cfg->vcpus < 1 || cfg->vcpus > HK_MAX_VCPUS) {
		snprintf(err, errlen, "vcpus %u: must be 1 to %d", cfg->vcpus, HK_MAX_VCPUS);
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
	vm->console = cfg->console;
	vm->console_ctx = cfg->console_ctx;
	pthread_mutex_init(&vm->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&vm->done, &ca);
	pthread_condattr_destroy(&ca);
	pthread_mutex_init(&vm->serial.lock, NULL);

	ret = read_kernel(cfg->kernel_path, &image, &image_len, err, errlen);
	if (ret)
		goto fail;
	ret = hk_mem_create(cfg->memory, cfg->fault_window, &vm->mem, err, errlen);
	if (ret)
		goto fail;
	if (asprintf(&cmdline, "%s%shk.vcpus=%u", cfg->cmdline ? cfg->cmdline : "",
		     cfg->cmdline && *cfg->cmdline ? " " : "", cfg->vcpus) < 0) {
		cmdline = NULL;
		ret = -ENOMEM;
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	ret = hk_pvh_load(vm->mem, image, image_len, cmdline, &vm->boot, err, errlen);
	if (ret)
		goto fail;
	ret = hk_x86_write_boot_gdt(vm->mem);
	if (ret) {
		snprintf(err, errlen, "cannot write the boot GDT");
		goto fail;
	}

	ret = vm_open_kvm(vm, err, errlen);
	if (ret)
		goto fail;
	ret = vm_check_phys_bits(vm, err, errlen);
	if (ret)
		goto fail;
	ret = hk_mem_attach_kvm(vm->mem, vm->vm_fd, err, errlen);
	if (ret)
		goto fail;
	if ((ret = hk_pio_register(vm, &hk_serial_ops, &vm->serial)) ||
	    (ret = hk_pio_register(vm, &hk_debug_exit_ops, NULL))) {
		snprintf(err, errlen, "cannot register devices: %s", strerror(-ret));
		goto fail;
	}
	for (unsigned i = 0; i < vm->n_vcpus; i++) {
		ret = hk_vcpu_init(vm, i, err, errlen);
		if (ret)
			goto fail;
	}
	vm->result.state = HK_VM_CREATED;
	free(image);
	free(cmdline);
	*out = vm;
	return 0;
fail:
	free(image);
	free(cmdline);
	hk_vm_destroy(vm);
	return ret;
}

int hk_vm_start(struct hk_vm *vm)
{
	int ret = 0;

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
	while (!vm_ended(vm) && ret == 0) {
		if (timeout_ms < 0)
			pthread_cond_wait(&vm->done, &vm->lock);
		else if (pthread_cond_timedwait(&vm->done, &vm->lock, &until) == ETIMEDOUT)
			ret = -ETIMEDOUT;
	}
	if (vm_ended(vm))
		ret = 0;
	*res = vm->result;
	if (vm->result.state == HK_VM_RUNNING)
		res->runtime_ns = hk_now_ns() - vm->start_ns;
	pthread_mutex_unlock(&vm->lock);
	return ret;
}

void hk_vm_result(struct hk_vm *vm, struct hk_vm_result *res)
{
	hk_vm_wait(vm, 0, res);
}

void hk_vm_stop(struct hk_vm *vm, const char *why)
{
	hk_vm_finish(vm, HK_VM_STOPPED, 0, "%s", why ? why : "stopped");
	for (unsigned i = 0; i < vm->n_vcpus; i++)
		hk_vcpu_join(&vm->vcpus[i]);
}

void hk_vm_destroy(struct hk_vm *vm)
{
	if (!vm)
		return;
	hk_vm_stop(vm, "destroyed");
	for (unsigned i = 0; i < vm->n_vcpus; i++)
		hk_vcpu_destroy(&vm->vcpus[i]);
	if (vm->vm_fd >= 0)
		close(vm->vm_fd);
	/* Memory after the VM: KVM must drop its slots before the mapping goes. */
	hk_mem_destroy(vm->mem);
	if (vm->kvm_fd >= 0)
		close(vm->kvm_fd);
	free(vm->cpuid);
	pthread_cond_destroy(&vm->done);
	pthread_mutex_destroy(&vm->lock);
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
}

unsigned hk_vm_vcpus(const struct hk_vm *vm)
{
	return vm->n_vcpus;
}

uint64_t hk_vm_memory(const struct hk_vm *vm)
{
	return hk_mem_size(vm->mem);
}
