#!/usr/bin/env bash
# S2 benchmarks, run on demand: virtio-blk sequential bandwidth measured
# inside the guest (guestos blkbench) against fio's io_uring engine on the
# same file, in the same run; and what the storage-replica table costs.
#
#   tests/bench/run_blk.sh [SIZE]       default SIZE 512M
#
# Without /dev/kvm everything (guest and fio) runs inside
# deploy/run-in-vm.sh, so both sides share one (emulated) machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
size=${1:-512M}
deploy/build.sh
command -v fio >/dev/null || { echo "run_blk.sh: needs fio (apt-get install fio)" >&2; exit 1; }
b=$PWD/${HK_BUILD_DIR:-build}

inner=$(mktemp /tmp/hk-bench-blk.XXXXXX)
trap 'rm -f "$inner"' EXIT
cat >"$inner" <<INNER
set -e
img=\$(mktemp /var/tmp/hk-bench-disk.XXXXXX)
trap 'rm -f "\$img"' EXIT
fallocate -l $size "\$img"
# Guest: sequential write then read, 1 MiB requests, 32 in flight.
for mode in write read; do
	"$b/node/hkd" run --kernel "$b/guestos/guestos.elf" --memory 1G --vcpus 1 --stats \
		--disk "\$img" --replicas off --timeout 1200 \
		--cmdline "blkbench size=$size req=1M depth=32 mode=\$mode" >/tmp/hk-bench-g.txt 2>&1 || true
	khz=\$(sed -n 's/.*tsc_khz=\([0-9]*\).*/\1/p' /tmp/hk-bench-g.txt)
	line=\$(grep "blkbench: \$mode " /tmp/hk-bench-g.txt || true)
	[ -n "\$line" ] || { cat /tmp/hk-bench-g.txt; exit 1; }
	bytes=\$(echo "\$line" | awk '{print \$3}'); cyc=\$(echo "\$line" | awk '{print \$6}')
	guest=\$(awk -v b=\$bytes -v c=\$cyc -v k=\$khz 'BEGIN { printf "%.0f", b / (c / (k * 1000)) / 1e6 }')
	direct=1; fio --name=probe --filename="\$img" --direct=1 --rw=read --bs=4k --size=4k \
		--output=/dev/null >/dev/null 2>&1 || direct=0
	fio --name=seq --filename="\$img" --ioengine=io_uring --direct=\$direct --rw=\$mode --bs=1M \
		--iodepth=32 --size=$size --output-format=terse >/tmp/hk-bench-f.txt
	# terse v3: read bandwidth is field 7, write bandwidth field 48 (KiB/s)
	f=\$(awk -F';' -v m=\$mode '{ print (m == "read" ? \$7 : \$48) }' /tmp/hk-bench-f.txt)
	fiomb=\$(awk -v k=\$f 'BEGIN { printf "%.0f", k * 1024 / 1e6 }')
	echo "\$mode: guest virtio-blk \$guest MB/s, fio io_uring (direct=\$direct) \$fiomb MB/s," \
	     "ratio \$(awk -v g=\$guest -v f=\$fiomb 'BEGIN { printf "%.2f", g / f }')"
done
INNER
echo "== machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)," \
     "kernel $(uname -r), /dev/kvm: $([ -c /dev/kvm ] && echo yes || echo no)"
echo "== virtio-blk sequential bandwidth, $size, 1 MiB requests, depth 32"
if [ -c /dev/kvm ]; then
	bash "$inner"
else
	echo "(no /dev/kvm: inside deploy/run-in-vm.sh, nested SVM under TCG; the disk is on its tmpfs)"
	VM_SMP=1 VM_MEM=4G VM_TIMEOUT=1800 deploy/run-in-vm.sh bash "$inner"
fi
echo
echo "== storage-replica table: metadata bytes per GiB covered (test-storage-replica_scale)"
"$b/tests/unit/storage/test-storage-replica_scale" --verbose 2>&1 | grep -E 'extent|GiB|metadata' | sed 's/^\[----\] //' || true
