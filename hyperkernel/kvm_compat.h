/*
 * Constants this kernel (6.18) has but Debian 12's linux-libc-dev (6.1)
 * headers may lack.  Kept in one place so they disappear together when the
 * build headers catch up.
 */
#ifndef HK_KVM_COMPAT_H
#define HK_KVM_COMPAT_H

#include <linux/kvm.h>
#include <linux/userfaultfd.h>

/* /dev/userfaultfd (Linux 6.1) hands out uffds to processes that may not
 * call userfaultfd(2) for kernel-mode faults. */
#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)
#endif

#ifndef KVM_EXIT_MEMORY_FAULT
#define KVM_EXIT_MEMORY_FAULT 39
#endif

#endif
