#!/bin/bash
# run-in-vm.sh CMD [ARGS...]
#
# Gives CMD a real /dev/kvm on a machine without one: boots a QEMU TCG (software-emulated) VM
# whose emulated AMD CPU has SVM + NPT, running Debian's kernel; the host's root filesystem is
# visible read-only over virtio-9p with a tmpfs overlay on top (writes succeed but are thrown
# away, except under VM_RW dirs); kvm + kvm_amd are loaded from the host's /lib/modules, so
# /dev/kvm exists. CMD runs as root, in the current directory, with the caller's exported
# environment, stdin from /dev/null. Its stdout/stderr stream to ours; we exit with its status.
#
# Exit status: CMD's status; 124 = VM timed out; 125 = VM/infrastructure failure (boot log shown).
#
# Environment knobs:
#   VM_SMP=N           vCPUs (default 2)                 VM_MEM=size  guest RAM (default 2G)
#   VM_TIMEOUT=sec     hard limit for the whole VM run (default 600)
#   VM_RW="d1 d2"      host dirs mounted read-WRITE inside (writes reach the host), e.g. a build dir
#   VM_CPU=model       QEMU -cpu (default max,phys-bits=48,la57=off = host-like 48-bit phys+virt;
#                      plain max has only 40 phys bits -> KVM rejects memslots above 1 TiB GPA;
#                      EPYC also has svm+npt; qemu64 has svm but no npt -> shadow paging)
#   VM_KVM_ARGS="..."  kvm_amd module params (default "nested=0"; e.g. "npt=0" = shadow paging)
#   VM_KVER=ver        kernel version (default: newest in /lib/modules)
#   VM_BZIMAGE=1       boot the compressed bzImage instead of the extracted vmlinux (PVH)
#   VM_CACHE=dir       where vmlinux + initramfs are cached (default /var/tmp/run-in-vm)
#   VM_KEEP=1          keep the per-run dir (boot.log, qemu.log)   VM_VERBOSE=1  print timings
#
# Needs (Debian packages, installed by deploy/install-deps.sh --tests): qemu-system-x86,
# linux-image-amd64 (only its files are used; the
# machine need not boot it), busybox-static, cpio; python3 for the vmlinux extraction (optional).
set -u
[ $# -ge 1 ] || { echo "usage: $0 CMD [ARGS...]" >&2; exit 2; }
die() { echo "run-in-vm: $*" >&2; exit 125; }

KVER=${VM_KVER:-$(ls /lib/modules 2>/dev/null | sort -V | tail -1)}
KERNEL=/boot/vmlinuz-$KVER
[ -n "$KVER" ] && [ -r "$KERNEL" ] || die "no kernel in /boot (apt-get install linux-image-amd64)"
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 missing (apt-get install qemu-system-x86)"
CACHE=${VM_CACHE:-/var/tmp/run-in-vm}
mkdir -p "$CACHE" || die "cannot create $CACHE"

# ---------------------------------------------------------------- PID 1 of the VM (busybox sh)
IFS= read -r -d '' INIT <<'INIT_EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
log() { echo "[vminit] $*" > /dev/ttyS0; }
fail() { log "$*"; [ -d /ctl/. ] && echo "$*" > /ctl/initerr; reboot -f; }
t0=$(cut -d' ' -f1 /proc/uptime)
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci \
         9pnet 9pnet_virtio netfs fscache 9p overlay virtio_console; do
    insmod /modules/$m.ko || log "insmod $m failed"
done
i=0   # wait for the virtio-9p devices to be probed
while [ $i -lt 100 ] && ! grep -q ctl /sys/bus/virtio/drivers/9pnet_virtio/*/mount_tag 2>/dev/null; do
    sleep 0.1; i=$((i+1))
done
O9P=trans=virtio,version=9p2000.L,msize=512000
mount -t 9p -o $O9P,cache=mmap ctl /ctl || fail "mount of 9p tag ctl failed"
mount -t 9p -o ro,$O9P,cache=loose hostroot /mnt/lower || fail "mount of 9p host root failed"
mount -t tmpfs -o mode=755 tmpfs /mnt/upper
mkdir -p /mnt/upper/u /mnt/upper/w
mount -t overlay -o lowerdir=/mnt/lower,upperdir=/mnt/upper/u,workdir=/mnt/upper/w overlay /newroot ||
    { log "overlay failed; read-only root"; mount --bind /mnt/lower /newroot; }
mount -t proc proc /newroot/proc
mount -t sysfs sysfs /newroot/sys
mount -t devtmpfs devtmpfs /newroot/dev
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts devpts /newroot/dev/pts
mount -t tmpfs tmpfs /newroot/dev/shm
mount -t tmpfs tmpfs /newroot/run        # host /tmp stays visible (writable via the overlay)
mkdir -p /newroot/run/in-vm
mount --bind /ctl /newroot/run/in-vm
n=0   # host dirs shared read-write: 9p tag rwN -> Nth line of /ctl/rwdirs
while IFS= read -r d; do
    mount -t 9p -o $O9P,cache=mmap rw$n "/newroot$d" || log "mount rw$n at $d failed"
    n=$((n+1))
done < /ctl/rwdirs
# KVM modules straight from the host's /lib/modules (same kernel package)
K=/mnt/lower/lib/modules/$(uname -r)/kernel
for m in virt/lib/irqbypass arch/x86/kvm/kvm drivers/crypto/ccp/ccp; do
    insmod $K/$m.ko || log "insmod $m failed"
done
insmod $K/arch/x86/kvm/kvm-amd.ko $(cat /ctl/kvmargs) || log "insmod kvm-amd $(cat /ctl/kvmargs) failed"
# loopback: hkd nodes of one cluster talk over 127.0.0.1 (libfabric tcp)
ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up || log "loopback not up"
echo "$t0 $(cut -d' ' -f1 /proc/uptime)" > /ctl/boottimes
# CMD's stdout/stderr: virtio-serial ports "out"/"err" (fallback: serial ttyS1/ttyS2, raw mode)
OUT=/dev/ttyS1; ERR=/dev/ttyS2
for p in /sys/class/virtio-ports/vport*; do
    [ -e "$p/name" ] || continue
    case "$(cat $p/name)" in out) OUT=/dev/${p##*/};; err) ERR=/dev/${p##*/};; esac
done
stty -F /dev/ttyS1 raw -echo 2>/dev/null
stty -F /dev/ttyS2 raw -echo 2>/dev/null
SH=/bin/bash; [ -x /newroot/bin/bash ] || SH=/bin/sh
chroot /newroot $SH /run/in-vm/cmd.sh </dev/null >$OUT 2>$ERR
echo $? > /ctl/rc
sync
reboot -f
INIT_EOF

MODS="drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_pci_modern_dev
      drivers/virtio/virtio_pci_legacy_dev drivers/virtio/virtio_pci net/9p/9pnet net/9p/9pnet_virtio
      fs/netfs/netfs fs/fscache/fscache fs/9p/9p fs/overlayfs/overlay drivers/char/virtio_console"

# ---------------------------------------------------------------- cached boot artifacts
# initramfs: static busybox + the virtio/9p/overlay modules + INIT; keyed by kernel and INIT hash
HASH=$(printf '%s\n%s' "$INIT" "$MODS" | md5sum | cut -c1-10)
INITRD=$CACHE/initramfs-$KVER-$HASH.cpio.gz
if [ ! -s "$INITRD" ]; then
    [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1 ||
        die "needs a static /bin/busybox (apt-get install busybox-static)"
    command -v cpio >/dev/null || die "cpio missing (apt-get install cpio)"
    ( set -e
      B=$(mktemp -d); trap 'rm -rf "$B"' EXIT
      mkdir -p "$B"/{bin,sbin,proc,sys,dev,mnt/lower,mnt/upper,newroot,ctl,modules}
      cp /bin/busybox "$B/bin/"
      printf '%s\n' "$INIT" > "$B/init"; chmod +x "$B/init"
      for f in $MODS; do cp "/lib/modules/$KVER/kernel/$f.ko" "$B/modules/"; done
      (cd "$B" && find . | cpio -o -H newc --quiet | gzip -1) > "$INITRD.$$"
      mv "$INITRD.$$" "$INITRD" ) || { rm -f "$INITRD.$$"; die "initramfs build failed"; }
fi

# Uncompressed ELF vmlinux booted via PVH: skips the bzImage's in-guest XZ decompression (~3 s
# under TCG). Extracted once; if that fails we just boot the bzImage.
VMLINUX=$CACHE/vmlinux-$KVER
if [ "${VM_BZIMAGE:-0}" != 1 ] && { [ ! -s "$VMLINUX" ] || [ "$KERNEL" -nt "$VMLINUX" ]; } &&
   command -v python3 >/dev/null; then
    python3 - "$KERNEL" "$VMLINUX.$$" <<'PY' 2>/dev/null && mv "$VMLINUX.$$" "$VMLINUX"
import lzma, sys
d = open(sys.argv[1], 'rb').read()
i = d.find(b'\xfd7zXZ\x00')
assert i > 0
out = lzma.LZMADecompressor().decompress(d[i:])
assert out[:4] == b'\x7fELF'
open(sys.argv[2], 'wb').write(out)
PY
    rm -f "$VMLINUX.$$"
fi
[ "${VM_BZIMAGE:-0}" != 1 ] && [ -s "$VMLINUX" ] && KERNEL=$VMLINUX

# ---------------------------------------------------------------- per-run control dir (9p tag ctl)
TMP=$(mktemp -d /tmp/run-in-vm.XXXXXX)
QPID=; CATS=
cleanup() {
    [ -n "$QPID" ] && kill "$QPID" 2>/dev/null
    for p in $CATS; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    if [ "${VM_KEEP:-0}" = 1 ]; then echo "run-in-vm: kept $TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

echo "${VM_KVM_ARGS:-nested=0}" > "$TMP/kvmargs"
{
    # the caller's exported environment (bash syntax; the guest runs the host's /bin/bash)
    for v in $(compgen -e); do
        case $v in PWD|OLDPWD|SHLVL|_|BASH_*|VM_*) continue;; esac
        echo "export $v=$(printf %q "${!v}")"
    done
    echo 'cut -d" " -f1 /proc/uptime > /run/in-vm/shstart'
    echo '[ -c /dev/kvm ] || modprobe kvm_amd $(cat /run/in-vm/kvmargs) >/dev/null 2>&1 ||'\
         '{ echo "run-in-vm: loading kvm_amd failed:" >&2; dmesg | grep -i -E "kvm|svm" >&2; }'
    echo '[ -c /dev/kvm ] || echo "run-in-vm: warning: /dev/kvm missing" >&2'
    echo 'cut -d" " -f1 /proc/uptime > /run/in-vm/cmdstart'
    echo "cd $(printf %q "$PWD") || exit 126"
    printf 'exec'; printf ' %q' "$@"; echo
} > "$TMP/cmd.sh"

VIRTFS=(-virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap"
        -virtfs "local,path=$TMP,mount_tag=ctl,security_model=none")
n=0
: > "$TMP/rwdirs"
for d in ${VM_RW:-}; do
    d=$(readlink -f "$d"); [ -d "$d" ] || die "VM_RW dir $d missing"
    echo "$d" >> "$TMP/rwdirs"
    VIRTFS+=(-virtfs "local,path=$d,mount_tag=rw$n,security_model=none,multidevs=remap")
    n=$((n+1))
done

# guest virtio-serial port "out" -> our stdout, "err" -> our stderr, via fifos (QEMU truncates
# 'file' chardev paths, so never point them at our own fds)
mkfifo "$TMP/out.fifo" "$TMP/err.fifo"
cat "$TMP/out.fifo" & CATS="$CATS $!"
cat "$TMP/err.fifo" >&2 & CATS="$CATS $!"

T0=$(date +%s.%N)
timeout --kill-after=5 "${VM_TIMEOUT:-600}" qemu-system-x86_64 \
    -machine pc -accel tcg,thread=multi -cpu "${VM_CPU:-max,phys-bits=48,la57=off}" -smp "${VM_SMP:-2}" -m "${VM_MEM:-2G}" \
    -nodefaults -no-user-config -display none -monitor none -no-reboot \
    -kernel "$KERNEL" -initrd "$INITRD" \
    -append "console=ttyS0 quiet loglevel=3 panic=-1 mitigations=off" \
    -serial "file:$TMP/boot.log" \
    -device virtio-serial-pci,max_ports=4 \
    -chardev "file,id=out,path=$TMP/out.fifo" -device virtserialport,chardev=out,name=out \
    -chardev "file,id=err,path=$TMP/err.fifo" -device virtserialport,chardev=err,name=err \
    "${VIRTFS[@]}" </dev/null >"$TMP/qemu.log" 2>&1 &
QPID=$!
wait $QPID; QRC=$?; QPID=
T1=$(date +%s.%N)
# if QEMU never opened a fifo, its cat is still blocked in open(): a non-blocking open+close
# releases it (fails harmlessly with ENXIO when the cat has already finished)
for f in out err; do dd if=/dev/null of="$TMP/$f.fifo" oflag=nonblock status=none 2>/dev/null; done
for p in $CATS; do wait "$p" 2>/dev/null; done; CATS=

if [ "${VM_VERBOSE:-0}" = 1 ]; then
    echo "run-in-vm: wall $(echo "$T1 - $T0" | bc) s; guest uptime [s] at init start/mounts+kvm done:" \
         "$(cat "$TMP/boottimes" 2>/dev/null), CMD start: $(cat "$TMP/cmdstart" 2>/dev/null)" >&2
fi
[ -s "$TMP/rc" ] && exit "$(cat "$TMP/rc")"
[ "$QRC" = 124 ] || [ "$QRC" = 137 ] && { echo "run-in-vm: VM timed out after ${VM_TIMEOUT:-600}s" >&2; exit 124; }
echo "run-in-vm: VM ended without an exit status (qemu rc $QRC)" >&2
cat "$TMP/initerr" "$TMP/qemu.log" >&2 2>/dev/null; tail -30 "$TMP/boot.log" >&2
exit 125
