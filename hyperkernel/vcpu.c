/*
 * vCPU threads: one KVM_RUN loop per vCPU, dispatching port I/O to the
 * device table and turning fatal exits into a guest outcome.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "hk_internal.h"

/* The kvm_run of the vCPU running on this thread, for the kick handler.
 * A signal interrupts KVM_RUN only if it arrives inside the ioctl; setting
 * immediate_exit also covers a signal that lands just before it. */
static __thread struct kvm_run *volatile tls_run;
static __thread struct hk_vcpu *tls_vcpu;

#define HK_KICK_SIGNAL SIGUSR1

static void kick_handler(int sig)
{
	(void)sig;
	if (tls_run)
		tls_run->immediate_exit = 1;
}

struct hk_vcpu *hk_vcpu_self(void)
{
	return tls_vcpu;
}

static pthread_once_t kick_once = PTHREAD_ONCE_INIT;

static void kick_install(void)
{
	struct sigaction sa = {.sa_handler = kick_handler};

	sigemptyset(&sa.sa_mask);
	/* No SA_RESTART: KVM_RUN must return EINTR. */
	sigaction(HK_KICK_SIGNAL, &sa, NULL);
}

int hk_vcpu_init(struct hk_vm *vm, unsigned index, char *err, size_t errlen)
{
	struct hk_vcpu *v = &vm->vcpus[index];
	int size, ret;

	pthread_once(&kick_once, kick_install);
	v->vm = vm;
	v->index = index;
	atomic_store(&v->park_req, (vm->start_parked >> index) & 1);
	v->parked = false;
	v->stop_self = false;
	v->fd = ioctl(vm->vm_fd, KVM_CREATE_VCPU, index);
	if (v->fd < 0) {
		ret = -errno;
		snprintf(err, errlen, "KVM_CREATE_VCPU %u: %s", index, strerror(errno));
		return ret;
	}
	size = ioctl(vm->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (size < (int)sizeof(struct kvm_run)) {
		snprintf(err, errlen, "KVM_GET_VCPU_MMAP_SIZE: %s", strerror(errno));
		return -EINVAL;
	}
	v->run = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd, 0);
	if (v->run == MAP_FAILED) {
		ret = -errno;
		v->run = NULL;
		snprintf(err, errlen, "vCPU %u: mmap kvm_run: %s", index, strerror(errno));
		return ret;
	}
	v->run_size = size;

	ret = hk_x86_setup_cpuid(vm, v, err, errlen);
	if (ret)
		return ret;
	return hk_x86_setup_pvh_state(vm, v, err, errlen);
}

static uint64_t vcpu_rip(struct hk_vcpu *v)
{
	struct kvm_regs regs;

	if (ioctl(v->fd, KVM_GET_REGS, &regs) < 0)
		return ~0ull;
	return regs.rip;
}

static void vcpu_halted(struct hk_vcpu *v)
{
	struct hk_vm *vm = v->vm;
	bool all;

	/* Without an in-kernel irqchip there is no interrupt to wake a halted
	 * vCPU: it is finished.  When every vCPU is, so is the guest. */
	pthread_mutex_lock(&vm->lock);
	all = ++vm->halted_vcpus == vm->n_vcpus;
	pthread_mutex_unlock(&vm->lock);
	if (all)
		hk_vm_finish(vm, HK_VM_CRASHED, 0,
			     "every vCPU halted without writing the debug-exit port");
}

/* Returns false when the vCPU is done. */
static bool vcpu_handle_exit(struct hk_vcpu *v)
{
	struct kvm_run *run = v->run;
	struct hk_vm *vm = v->vm;

	atomic_fetch_add(&v->exits, 1);
	switch (run->exit_reason) {
	case KVM_EXIT_IO: {
		uint8_t *data = (uint8_t *)run + run->io.data_offset;

		atomic_fetch_add(&v->io_exits, 1);
		for (uint32_t i = 0; i < run->io.count; i++)
			hk_pio_access(vm, run->io.port, run->io.direction == KVM_EXIT_IO_OUT,
				      run->io.size, data + (size_t)i * run->io.size);
		return true;
	}
	case KVM_EXIT_MMIO:
		atomic_fetch_add(&v->io_exits, 1);
		hk_mmio_access(vm, run->mmio.phys_addr, run->mmio.is_write, run->mmio.data,
			       run->mmio.len > 8 ? 8 : run->mmio.len);
		if (v->stop_self) {
			/* The service page's park register: a halt by another name. */
			vcpu_halted(v);
			return false;
		}
		return true;
	case KVM_EXIT_HLT:
		vcpu_halted(v);
		return false;
	case KVM_EXIT_INTR:
		return true;
	case KVM_EXIT_SHUTDOWN:
		hk_vm_finish(vm, HK_VM_CRASHED, 0, "vCPU %u: shutdown (triple fault) at rip 0x%llx",
			     v->index, (unsigned long long)vcpu_rip(v));
		return false;
	case KVM_EXIT_FAIL_ENTRY:
		hk_vm_finish(vm, HK_VM_CRASHED, 0, "vCPU %u: VM entry failed, reason 0x%llx",
			     v->index,
			     (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
		return false;
	case KVM_EXIT_INTERNAL_ERROR:
		hk_vm_finish(vm, HK_VM_CRASHED, 0,
			     "vCPU %u: KVM internal error %u (1 = emulation failure) at rip 0x%llx",
			     v->index, run->internal.suberror, (unsigned long long)vcpu_rip(v));
		return false;
	case KVM_EXIT_SYSTEM_EVENT:
		hk_vm_finish(vm, HK_VM_CRASHED, 0, "vCPU %u: system event %u", v->index,
			     run->system_event.type);
		return false;
	default:
		hk_vm_finish(vm, HK_VM_CRASHED, 0, "vCPU %u: unexpected KVM exit %u at rip 0x%llx",
			     v->index, run->exit_reason, (unsigned long long)vcpu_rip(v));
		return false;
	}
}

/*
 * The vCPU thread after KVM_RUN returned EINTR.  KVM finishes pending port
 * I/O and MMIO before it honours immediate_exit, so the architectural
 * state is whole here: a parked vCPU can be saved or overwritten.
 */
static void vcpu_park_wait(struct hk_vcpu *v)
{
	struct hk_vm *vm = v->vm;

	if (!atomic_load(&v->park_req))
		return;
	pthread_mutex_lock(&vm->lock);
	v->parked = true;
	pthread_cond_broadcast(&vm->park_cv);
	while (atomic_load(&v->park_req) && !atomic_load(&vm->stopping))
		pthread_cond_wait(&vm->park_cv, &vm->lock);
	v->parked = false;
	pthread_mutex_unlock(&vm->lock);
}

static void *vcpu_thread(void *arg)
{
	struct hk_vcpu *v = arg;
	struct hk_vm *vm = v->vm;
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, HK_KICK_SIGNAL);
	pthread_sigmask(SIG_UNBLOCK, &set, NULL);
	tls_run = v->run;
	tls_vcpu = v;
	/* Pooled memory charges this thread's faults to this vCPU. */
	hk_mem_pool_vcpu_thread(vm->mem, v->index, (uint32_t)gettid());

	while (!atomic_load(&vm->stopping)) {
		/* A park request that raced with the kick still stops here. */
		if (atomic_load(&v->park_req))
			v->run->immediate_exit = 1;
		if (ioctl(v->fd, KVM_RUN, 0) < 0) {
			if (errno == EINTR || errno == EAGAIN) {
				v->run->immediate_exit = 0;
				vcpu_park_wait(v);
				continue;
			}
			hk_vm_finish(vm, HK_VM_CRASHED, 0, "vCPU %u: KVM_RUN: %s", v->index,
				     strerror(errno));
			break;
		}
		if (!vcpu_handle_exit(v))
			break;
	}
	tls_run = NULL;
	tls_vcpu = NULL;
	pthread_mutex_lock(&vm->lock);
	v->running = false;
	pthread_cond_broadcast(&vm->park_cv);
	pthread_mutex_unlock(&vm->lock);
	return NULL;
}

int hk_vcpu_start(struct hk_vcpu *v)
{
	int ret;

	pthread_mutex_lock(&v->vm->lock);
	v->running = true;
	pthread_mutex_unlock(&v->vm->lock);
	ret = pthread_create(&v->thread, NULL, vcpu_thread, v);
	if (ret) {
		pthread_mutex_lock(&v->vm->lock);
		v->running = false;
		pthread_mutex_unlock(&v->vm->lock);
		return -ret;
	}
	v->thread_started = true;
	return 0;
}

/* ---- parking, for vCPU migration (vcpu_state.c) -------------------------- */

int hk_vm_vcpu_park(struct hk_vm *vm, unsigned index)
{
	struct hk_vcpu *v;
	int ret = 0;

	if (index >= vm->n_vcpus)
		return -EINVAL;
	v = &vm->vcpus[index];
	pthread_mutex_lock(&vm->lock);
	atomic_store(&v->park_req, true);
	/*
	 * One kick is enough for a vCPU in KVM_RUN or between exits; one
	 * blocked in a userfaultfd wait takes the signal only once its fault
	 * is resolved.  The kick is repeated all the same: it is cheap, and a
	 * thread that was just being created may have missed the first.
	 */
	while (v->running && !v->parked) {
		struct timespec until;

		hk_vcpu_kick(v);
		clock_gettime(CLOCK_MONOTONIC, &until);
		until.tv_nsec += 20 * 1000000L;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&vm->park_cv, &vm->lock, &until);
	}
	/* Not started yet: it will park before its first instruction. */
	if (!v->parked && vm->result.state != HK_VM_CREATED)
		ret = -ESRCH;
	pthread_mutex_unlock(&vm->lock);
	return ret;
}

int hk_vm_vcpu_resume(struct hk_vm *vm, unsigned index)
{
	struct hk_vcpu *v;
	int ret;

	if (index >= vm->n_vcpus)
		return -EINVAL;
	v = &vm->vcpus[index];
	pthread_mutex_lock(&vm->lock);
	atomic_store(&v->park_req, false);
	ret = v->running || vm->result.state == HK_VM_CREATED ? 0 : -ESRCH;
	pthread_cond_broadcast(&vm->park_cv);
	pthread_mutex_unlock(&vm->lock);
	return ret;
}

bool hk_vcpu_is_stopped(struct hk_vcpu *v)
{
	bool stopped;

	pthread_mutex_lock(&v->vm->lock);
	stopped = v->parked || !v->running;
	pthread_mutex_unlock(&v->vm->lock);
	return stopped;
}

void hk_vcpu_kick(struct hk_vcpu *v)
{
	if (v->thread_started)
		pthread_kill(v->thread, HK_KICK_SIGNAL);
}

void hk_vcpu_join(struct hk_vcpu *v)
{
	if (v->thread_started) {
		pthread_join(v->thread, NULL);
		v->thread_started = false;
	}
}

void hk_vcpu_destroy(struct hk_vcpu *v)
{
	if (v->run)
		munmap(v->run, v->run_size);
	if (v->fd > 0)
		close(v->fd);
	v->run = NULL;
	v->fd = -1;
}
