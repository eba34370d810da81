#!/usr/bin/env bash
# Configures (once) and builds hyperkernel into ${HK_BUILD_DIR:-build}.
# CI=true builds with -Werror.
set -euo pipefail
cd "$(dirname "$0")/.."
builddir=${HK_BUILD_DIR:-build}
werror=false
[ "${CI:-}" = true ] && werror=true
if [ ! -f "$builddir/build.ninja" ]; then
	meson setup "$builddir" -Dwerror=$werror >/dev/null
fi
ninja -C "$builddir" >/dev/null
