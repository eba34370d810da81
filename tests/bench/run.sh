#!/usr/bin/env bash
# F1 benchmarks, run on demand (never by tests/run.sh).  Every figure is
# printed beside its baseline measured in the same run.
#
#   tests/bench/run.sh [SIZE]        default SIZE 1G
#
# 1. First touch through userfaultfd (host thread touching guest RAM) vs
#    the host first-touching anonymous memory, per fault-window size.
# 2. guestos memtest bandwidth over resident memory vs a host memset+verify
#    of the same size, and guest first touch vs host first touch, both in
#    TSC cycles.  Needs /dev/kvm; without it, runs inside deploy/run-in-vm.sh
#    (nested SVM under TCG: the ratio then describes the emulator, not KVM).
set -euo pipefail
cd "$(dirname "$0")/../.."
size=${1:-1G}
deploy/build.sh
b=$PWD/${HK_BUILD_DIR:-build}

echo "== machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)," \
     "kernel $(uname -r), /dev/kvm: $([ -c /dev/kvm ] && echo yes || echo no)"
echo
echo "== 1. first touch of $size"
"$b/tests/bench/bench-first-touch" "$size"

inner=$(mktemp /tmp/hk-bench.XXXXXX)
trap 'rm -f "$inner"' EXIT
cat >"$inner" <<INNER
set -e
"$b/node/hkd" run --kernel "$b/guestos/guestos.elf" --memory 2G --vcpus 1 \
	--cmdline "memtest size=$size passes=5" --timeout 1200 > /tmp/hk-bench-guest.txt || true
"$b/tests/bench/bench-host-memtest" "$size" 5 > /tmp/hk-bench-host.txt
awk '
function median(a, n,   i, j, t) {
	for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
	return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
FILENAME ~ /guest/ && /first-touch fill\+verify/ { gft = \$(NF - 2) }
FILENAME ~ /guest/ && /pass [0-9]+ fill\+verify/ { g[++ng] = \$(NF - 2) }
FILENAME ~ /host/ && /first-touch/ { hft = \$(NF - 2) }
FILENAME ~ /host/ && /host pass/ { h[++nh] = \$(NF - 2) }
END {
	if (!ng || !gft) { print "guest memtest produced no timings; see /tmp/hk-bench-guest.txt"; exit 1 }
	gm = median(g, ng); hm = median(h, nh)
	printf "resident fill+verify, median of %d passes: guest %.0f cycles, host %.0f cycles\n", ng, gm, hm
	printf "guest/host bandwidth ratio: %.3f\n", hm / gm
	printf "first touch fill+verify: guest %.0f cycles, host %.0f cycles, guest/host time %.2fx\n", gft, hft, gft / hft
}' /tmp/hk-bench-guest.txt /tmp/hk-bench-host.txt
INNER
echo
echo "== 2. guest memtest ($size, 1 vCPU) vs host memset+verify"
if [ -c /dev/kvm ]; then
	bash "$inner"
else
	echo "(no /dev/kvm: inside deploy/run-in-vm.sh, nested SVM under TCG)"
	VM_SMP=1 VM_MEM=4G VM_TIMEOUT=1800 deploy/run-in-vm.sh bash "$inner"
fi
