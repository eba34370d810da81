#!/usr/bin/env bash
# Installs what hyperkernel needs from Debian's packages, and nothing twice:
# packages already installed are skipped, apt-get update runs only when
# something is missing.  Usage: deploy/install-deps.sh [--tests]
set -euo pipefail

pkgs=(gcc libc6-dev meson ninja-build pkg-config
      libfabric-dev liburing-dev libprotobuf-c-dev protobuf-c-compiler
      libinih-dev libjansson-dev libxxhash-dev)
# A kernel with KVM but no /dev/kvm node (a container, a /dev without udev)
# gets the node first: then the kvm tests run on the host, and the QEMU
# fallback below is only for machines with no KVM at all.
"$(dirname "$0")/kvm-node.sh" || echo "install-deps: going on without /dev/kvm" >&2
if [ ! -c /dev/kvm ]; then
	# No KVM here: deploy/run-in-vm.sh boots Debian's kernel in QEMU (TCG)
	# with an emulated SVM CPU, which gives a real /dev/kvm inside.
	pkgs+=(qemu-system-x86 linux-image-amd64 busybox-static cpio)
fi
if [ "${1:-}" = "--tests" ]; then
	# Criterion runs the tests; QEMU also checks guestos against its
	# reference PVH loader.
	pkgs+=(libcriterion-dev qemu-system-x86 iproute2 procps)
fi

missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps: missing packages: ${missing[*]} (run as root to install them)" >&2
	exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
