#!/usr/bin/env bash
# Local hyperkernel clusters: N hkd daemons on this machine, one config.
#
#   deploy/cluster.sh up [-n N] [--dir DIR] [--memory SIZE] [--disk-size SIZE]
#                        [--guest-memory SIZE] [--vcpus N] [--provider P]
#                        [--port-base P] [--policy page|vcpu|adaptive]
#                        [--disk-node NODE] [--write-tracking auto|uffd|kvm]
#   deploy/cluster.sh status [--dir DIR]
#   deploy/cluster.sh down [--dir DIR]
#
# up writes DIR/hk.conf (default DIR ./hk-cluster), lets hkd create the data
# disk DIR/d0.img, starts the daemons (logs DIR/NODE.log) and returns once
# every one answers `hkctl status`.  Then: hkctl --config DIR/hk.conf ...
# down stops them (SIGTERM, then SIGKILL after 10 s) and leaves no process,
# socket or pid file behind.  With -n N the nodes n1..nN listen on
# 127.0.0.1:P+1..P+N (P: --port-base, default 7300 or $HK_PORT_BASE), each
# with --memory of guest memory; the guest gets --guest-memory (default:
# their sum) and --vcpus, placed round-robin over the nodes.  The disk d0 is
# attached to --disk-node (default n1); vCPUs on other nodes reach it through
# that node.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${HK_BUILD_DIR:-$root/build}
case $build in /*) ;; *) build=$root/$build ;; esac

die() { echo "cluster.sh: $*" >&2; exit 1; }
usage() { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; }

cmd=${1:-}
[ -n "$cmd" ] || { usage >&2; exit 2; }
shift
nodes=1 dir=hk-cluster memory=1G disk_size=1G guest_memory= vcpus=2 provider="tcp;ofi_rxm"
port_base=${HK_PORT_BASE:-7300} policy=adaptive disk_node=n1 write_tracking=auto
while [ $# -gt 0 ]; do
	case $1 in
	-n) nodes=${2:?-n needs a number}; shift 2 ;;
	--dir) dir=${2:?--dir needs a value}; shift 2 ;;
	--memory) memory=${2:?--memory needs a size}; shift 2 ;;
	--disk-size) disk_size=${2:?--disk-size needs a size}; shift 2 ;;
	--guest-memory) guest_memory=${2:?--guest-memory needs a size}; shift 2 ;;
	--vcpus) vcpus=${2:?--vcpus needs a number}; shift 2 ;;
	--provider) provider=${2:?--provider needs a value}; shift 2 ;;
	--port-base) port_base=${2:?--port-base needs a port}; shift 2 ;;
	--policy) policy=${2:?--policy needs page, vcpu or adaptive}; shift 2 ;;
	--disk-node) disk_node=${2:?--disk-node needs a node name}; shift 2 ;;
	--write-tracking) write_tracking=${2:?--write-tracking needs auto, uffd or kvm}; shift 2 ;;
	-h|--help) usage; exit 0 ;;
	*) die "unknown argument '$1' (see --help)" ;;
	esac
done
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
conf=$dir/hk.conf
hkd=$build/node/hkd
hkctl=$build/node/hkctl

node_names() { sed -n 's/^\[node \(.*\)\]$/\1/p' "$conf" 2>/dev/null; }
alive() { [ -f "$dir/$1.pid" ] && kill -0 "$(cat "$dir/$1.pid")" 2>/dev/null; }

cmd_up() {
	[[ $nodes =~ ^[0-9]+$ ]] && [ "$nodes" -ge 1 ] || die "-n: want a number >= 1, not '$nodes'"
	[ "$nodes" -le 64 ] || die "-n $nodes: at most 64 nodes"
	[[ $disk_node =~ ^n[0-9]+$ ]] && [ "${disk_node#n}" -ge 1 ] && [ "${disk_node#n}" -le "$nodes" ] ||
		die "--disk-node: want one of n1..n$nodes, not '$disk_node'"
	[[ $port_base =~ ^[0-9]+$ ]] && [ "$port_base" -ge 1024 ] && [ "$((port_base + nodes))" -le 65535 ] ||
		die "--port-base: want a port from 1024 to $((65535 - nodes)), not '$port_base'"
	for n in $(node_names); do
		alive "$n" && die "node $n is already running in $dir (cluster.sh down --dir $dir first)"
	done
	[ -x "$hkd" ] || "$root/deploy/build.sh"
	cat >"$conf" <<CONF
# Written by deploy/cluster.sh up; hkctl --config $conf ...
[cluster]
name = local
provider = $provider
policy = $policy

[guest]
kernel = $build/guestos/guestos.elf
cmdline = memtest
${guest_memory:+memory = $guest_memory}
vcpus = $vcpus
write_tracking = $write_tracking

$(for i in $(seq "$nodes"); do
	printf '[node n%s]\naddress = 127.0.0.1:%s\nmemory = %s\ncontrol = %s\n\n' \
		"$i" "$((port_base + i))" "$memory" "$dir/n$i.sock"
done)
[disk d0]
path = $dir/d0.img
size = $disk_size
node = $disk_node
CONF
	for n in $(node_names); do
		setsid "$hkd" --config "$conf" --node "$n" </dev/null >"$dir/$n.log" 2>&1 &
		echo $! >"$dir/$n.pid"
	done
	# Each hkd answers only once the cluster is formed (it joins first).
	for n in $(node_names); do
		for _ in $(seq 900); do
			"$hkctl" --config "$conf" --node "$n" status >/dev/null 2>&1 && break
			alive "$n" || { tail -5 "$dir/$n.log" >&2; cmd_down; die "node $n failed to start (log above)"; }
			sleep 0.1
		done
		"$hkctl" --config "$conf" --node "$n" status >/dev/null 2>&1 ||
			{ cmd_down; die "node $n does not answer on its control socket"; }
		echo "node $n up (pid $(cat "$dir/$n.pid"), log $dir/$n.log)"
	done
	echo "cluster up: hkctl --config $conf status"
}

cmd_status() {
	[ -f "$conf" ] || die "no cluster in $dir (no hk.conf)"
	rc=0
	for n in $(node_names); do
		if alive "$n"; then
			echo "node $n: running (pid $(cat "$dir/$n.pid"))"
			"$hkctl" --config "$conf" --node "$n" status | sed 's/^/  /' || rc=1
		else
			echo "node $n: not running"
			rc=1
		fi
	done
	return $rc
}

cmd_down() {
	[ -f "$conf" ] || die "no cluster in $dir (no hk.conf)"
	for n in $(node_names); do
		if alive "$n"; then
			pid=$(cat "$dir/$n.pid")
			kill -TERM "$pid" 2>/dev/null || true
			for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
			if kill -0 "$pid" 2>/dev/null; then
				echo "node $n: did not stop in 10 s, killing" >&2
				kill -KILL "$pid" 2>/dev/null || true
			fi
			echo "node $n down"
		fi
		rm -f "$dir/$n.pid" "$dir/$n.sock"
		# shm names its endpoints after cluster and node; a killed node leaves them
		rm -f "/dev/shm/hk-local-$n" 2>/dev/null || true
	done
}

case $cmd in
up) cmd_up ;;
status) cmd_status ;;
down) cmd_down ;;
*) usage >&2; exit 2 ;;
esac
