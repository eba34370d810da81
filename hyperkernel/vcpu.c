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
#include <unistd.h>

#include "hk_internal.h"

/* The kvm_run of the vCPU running on this thread, for the kick handler.
 * A signal interrupts KVM_RUN only if it arrives inside the ioctl; setting
 * immediate_exit also covers a signal that lands just before it. */
static __thread struct kvm_run *volatile tls_run;

#define HK_KICK_SIGNAL SIGUSR1

static void kick_handler(int sig)
{
	(void)sig;
	if (tls_run)
		tls_run->immediate_exit = 1;
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

static void *vcpu_thread(void *arg)
{
	struct hk_vcpu *v = arg;
	struct hk_vm *vm = v->vm;
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, HK_KICK_SIGNAL);
	pthread_sigmask(SIG_UNBLOCK, &set, NULL);
	tls_run = v->run;

	while (!atomic_load(&vm->stopping)) {
		if (ioctl(v->fd, KVM_RUN, 0) < 0) {
			if (errno == EINTR || errno == EAGAIN) {
				v->run->immediate_exit = 0;
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
	return NULL;
}

int hk_vcpu_start(struct hk_vcpu *v)
{
	int ret = pthread_create(&v->thread, NULL, vcpu_thread, v);

	if (ret)
		return -ret;
	v->thread_started = true;
	return 0;
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
