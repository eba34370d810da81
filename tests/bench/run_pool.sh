#!/usr/bin/env bash
# P3 benchmark, run on demand (never by tests/run.sh): remote 4 KiB page
# faults of pooled memory against their floor measured in the same run (a
# local userfaultfd fault plus a raw libfabric 4 KiB round trip on the same
# provider), and page streaming against raw libfabric bandwidth.  Two nodes
# = two processes on this host; no /dev/kvm needed.
#
#   tests/bench/run_pool.sh [bench-pool options]     e.g. --provider shm, --quick
#
# Prints human lines and one JSON line (the last line); results and their
# analysis: docs/benchmarks.md, "P3: pooled memory".
set -euo pipefail
cd "$(dirname "$0")/../.."
deploy/build.sh
b=$PWD/${HK_BUILD_DIR:-build}

echo "== machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)," \
     "kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo
exec "$b/tests/bench/bench-pool" "$@"
