#!/usr/bin/env bash
# The main job on an embedded default: a local one-node cluster boots
# guestos with 2 vCPUs and 1 GiB, runs memtest over its memory, prints the
# console and a summary, and stops cleanly.  Exits 0 only if memtest passed.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

say() { printf '==> %s\n' "$*"; }

build=$root/${HK_BUILD_DIR:-build}
if [ -z "${HK_QUICKSTART_INNER:-}" ]; then
	say "checking packages"
	deploy/install-deps.sh
	say "building"
	deploy/build.sh
	if [ ! -c /dev/kvm ]; then
		# The same job, inside a VM that has KVM (software-emulated SVM:
		# correct but slow).  Nothing but the build tree is shared.
		say "/dev/kvm is absent here: running inside a QEMU VM with nested SVM (deploy/run-in-vm.sh)"
		HK_QUICKSTART_INNER=1 VM_SMP=1 VM_MEM=3G VM_TIMEOUT=1800 \
			exec deploy/run-in-vm.sh "$root/deploy/quickstart.sh"
	fi
fi
hkd=$build/node/hkd
hkctl=$build/node/hkctl

dir=$(mktemp -d /tmp/hk-quickstart.XXXXXX)
pid=
cleanup() {
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	fi
	rm -rf "$dir"
}
trap cleanup EXIT

cat >"$dir/hk.conf" <<CONF
# Embedded quick-start cluster: one local node.
[cluster]
name = quickstart

[guest]
kernel = $build/guestos/guestos.elf
cmdline = memtest
memory = 1G
vcpus = 2

[node n1]
address = 127.0.0.1:7301
memory = 1G
control = $dir/n1.sock
CONF
ctl() { "$hkctl" --config "$dir/hk.conf" "$@"; }

say "starting hkd (node n1, log $dir/n1.log)"
"$hkd" --config "$dir/hk.conf" --node n1 >"$dir/n1.log" 2>&1 &
pid=$!
for _ in $(seq 100); do
	ctl status >/dev/null 2>&1 && break
	kill -0 "$pid" 2>/dev/null || { cat "$dir/n1.log" >&2; exit 1; }
	sleep 0.1
done
ctl status

say "starting the guest: guestos memtest on 2 vCPUs, 1 GiB"
if ! ctl guest start >/dev/null; then
	echo "quickstart: the guest could not start (see the line above); on a machine" \
	     "without /dev/kvm nothing can boot" >&2
	exit 1
fi
say "waiting for the guest (up to 10 minutes)"
ctl guest wait --timeout 600 --json >"$dir/wait.json"

say "guest console"
ctl guest console | sed 's/^/    /'

say "node status"
ctl status

say "stopping hkd"
kill -TERM "$pid"
wait "$pid" || true
pid=

status=$(sed -n 's/.*"exit_status": \([0-9-]*\).*/\1/p' "$dir/wait.json")
state=$(sed -n 's/.*"state": "\([a-z]*\)".*/\1/p' "$dir/wait.json")
runtime=$(sed -n 's/.*"runtime_ms": \([0-9]*\).*/\1/p' "$dir/wait.json")
echo
echo "summary: guest $state with status $status after ${runtime} ms"
if [ "$state" = exited ] && [ "$status" = 1 ]; then
	echo "summary: memtest ok"
	exit 0
fi
echo "summary: memtest FAILED" >&2
exit 1
