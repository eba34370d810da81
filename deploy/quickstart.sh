#!/usr/bin/env bash
# The main job on an embedded default: a local one-node cluster (1 GiB,
# 2 vCPUs, a data disk) runs memtest over all guest memory, then the
# fast-restart drill (kvdb loads its data set, the guest reboots, kvdb
# reloads from the storage-replica table; baseline without it); then a
# three-node cluster runs one guest over its pooled memory (memtest, pages
# and vCPUs moving between the nodes) and the drill again, its disk on n2
# while the guest starts on n1.  Prints a summary and stops cleanly.
# Exits 0 only if all passed.
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
		HK_QUICKSTART_INNER=1 VM_SMP=1 VM_MEM=4G VM_TIMEOUT=2400 \
			exec deploy/run-in-vm.sh "$root/deploy/quickstart.sh"
	fi
fi
hkd=$build/node/hkd
hkctl=$build/node/hkctl

dir=$(mktemp -d /tmp/hk-quickstart.XXXXXX)
pdir=$(mktemp -d /tmp/hk-quickstart-pool.XXXXXX)
cleanup() {
	deploy/cluster.sh down --dir "$dir" >/dev/null 2>&1 || true
	deploy/cluster.sh down --dir "$pdir" >/dev/null 2>&1 || true
	rm -rf "$dir" "$pdir"
}
trap cleanup EXIT
ctl() { "$hkctl" --config "$dir/hk.conf" "$@"; }

say "starting a one-node cluster in $dir (1 GiB guest, 2 vCPUs, 512 MiB disk)"
HK_BUILD_DIR=$build deploy/cluster.sh up --dir "$dir" --memory 1G --disk-size 512M --vcpus 2
ctl status

say "memtest: guestos fills and verifies all guest memory from both vCPUs"
ctl guest start --cmdline memtest >/dev/null
ctl guest wait --timeout 600 --json >"$dir/wait.json"
ctl guest console | sed 's/^/    /'
mt_status=$(sed -n 's/.*"exit_status": \([0-9-]*\).*/\1/p' "$dir/wait.json")

say "fast-restart drill: kvdb loads a 256 MiB data set, the guest reboots, kvdb reloads"
drill_rc=0
ctl drill restart --mode guest --data-size 256M --ops 5000 --json >"$dir/drill.json" || drill_rc=$?
cat "$dir/drill.json"

say "node status"
ctl status
ctl replica stats

say "stopping the cluster"
deploy/cluster.sh down --dir "$dir"

say "pooled memory: three nodes of 128 MiB, one guest of 384 MiB with 3 vCPUs"
# Under the emulated CPU a vCPU needs milliseconds to use a page it waited
# for; hold pages that long before they move on (docs/pooled-memory.md).
if [ -n "${HK_QUICKSTART_INNER:-}" ]; then export HK_POOL_HOLD_US=${HK_POOL_HOLD_US:-5000}; fi
HK_BUILD_DIR=$build HK_PORT_BASE=${HK_PORT_BASE:-7350} deploy/cluster.sh up -n 3 --dir "$pdir" \
	--memory 128M --guest-memory 384M --vcpus 3 --disk-size 64M --disk-node n2
pctl() { "$hkctl" --config "$pdir/hk.conf" "$@"; }
pctl nodes
pctl guest start --cmdline "memtest size=64M" >/dev/null
pctl guest wait --timeout 900 --json >"$pdir/wait.json" || true
pctl guest console | sed 's/^/    /'
pool_status=$(sed -n 's/.*"exit_status": \([0-9-]*\).*/\1/p' "$pdir/wait.json")
pctl status || true

say "fast-restart drill over the 3 nodes: the disk is on n2, kvdb runs on n1"
pdrill_rc=0
pctl drill restart --mode guest --data-size 16M --ops 1000 --json >"$pdir/drill.json" || pdrill_rc=$?
cat "$pdir/drill.json"
pctl replica stats || true
deploy/cluster.sh down --dir "$pdir"

get() { sed -n "s/.*\"$1\": \([^,]*\),*$/\1/p" "${2:-$dir/drill.json}" | head -1; }
pget() { get "$1" "$pdir/drill.json"; }
echo
echo "summary: memtest $([ "$mt_status" = 1 ] && echo ok || echo "FAILED (status $mt_status)")"
echo "summary: memtest over 3 nodes $([ "$pool_status" = 1 ] && echo ok || echo "FAILED (status $pool_status)")"
echo "summary: drill verified=$(get verified) reload_ms=$(get reload_ms) baseline_reload_ms=$(get baseline_reload_ms)" \
     "bytes_from_disk=$(get bytes_from_disk) bytes_from_replicas=$(get bytes_from_replicas)"
echo "summary: drill over 3 nodes verified=$(pget verified) reload_ms=$(pget reload_ms)" \
     "baseline_reload_ms=$(pget baseline_reload_ms) bytes_from_disk=$(pget bytes_from_disk)" \
     "bytes_from_replicas=$(pget bytes_from_replicas)"
[ "$mt_status" = 1 ] && [ $drill_rc = 0 ] && [ "$(get verified)" = true ] && [ "$pool_status" = 1 ] &&
	[ $pdrill_rc = 0 ] && [ "$(pget verified)" = true ]
