#!/usr/bin/env bash
# Creates /dev/kvm where the kernel has KVM but /dev has no node for it (a
# container, a chroot, a /dev without udev): the kernel publishes the misc
# device's MAJOR:MINOR in /sys/class/misc/kvm/dev, and that is what the node
# gets (never a hard-coded 10:232).  Mode 0660, group kvm if that group
# exists, as udev would make it.
#
# Usage: deploy/kvm-node.sh [NODE]   (default /dev/kvm)
# Exits 0 when NODE is a character device afterwards or the kernel has no
# KVM at all (then deploy/run-in-vm.sh is the way), 1 with one line if the
# node is missing and cannot be made.  HK_KVM_SYSFS replaces the sysfs file,
# for tests/integration/test_deploy.c only.
set -euo pipefail
node=${1:-/dev/kvm}
sysfs=${HK_KVM_SYSFS:-/sys/class/misc/kvm/dev}

[ -c "$node" ] && exit 0
[ -e "$sysfs" ] || exit 0
dev=$(<"$sysfs") || exit 1
if ! [[ $dev =~ ^([0-9]+):([0-9]+)$ ]]; then
	echo "kvm-node: $sysfs: want MAJOR:MINOR, not '$dev'" >&2
	exit 1
fi
major=${BASH_REMATCH[1]} minor=${BASH_REMATCH[2]}
if [ -e "$node" ]; then
	echo "kvm-node: $node exists but is not a character device; the kernel's kvm is $dev" >&2
	exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "kvm-node: $node is missing but the kernel has kvm ($dev): run as root to create it" >&2
	exit 1
fi
mknod -m 0660 "$node" c "$major" "$minor"
if getent group kvm >/dev/null; then
	chgrp kvm "$node"
fi
echo "kvm-node: created $node (character device $dev)"
