#!/usr/bin/env bash
# Installs what is missing, builds, runs every test; exits non-zero on any
# failure.  Tests that need /dev/kvm print a skip where it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."

deploy/install-deps.sh --tests
deploy/build.sh
builddir=${HK_BUILD_DIR:-build}

status=0
meson test -C "$builddir" --print-errorlogs --num-processes 2 "$@" || status=$?

# One summary over every Criterion binary: each prints its own synthesis.
log="$builddir/meson-logs/testlog.txt"
if [ -f "$log" ]; then
	awk '
	/Synthesis: Tested:/ {
		for (i = 1; i <= NF; i++) {
			if ($i == "Tested:") t += $(i + 1)
			if ($i == "Passing:") p += $(i + 1)
			if ($i == "Failing:") f += $(i + 1)
			if ($i == "Crashing:") c += $(i + 1)
		}
	}
	/\[SKIP\]/ { s++ }
	END {
		printf "\nCriterion: %d tested, %d skipped\n", t, s
		printf "%d passed, %d failed, %d skipped\n", p, f + c, s
	}' "$log"
fi
exit $status
