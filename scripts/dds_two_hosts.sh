#!/usr/bin/env bash
# Camera frames across two "hosts": two network namespaces joined by a veth pair, each process
# with a private /dev/shm (so Fast DDS cannot take the shared-memory shortcut it takes on one
# host). Runs `spec-vla-bench dds` (spec_vla_ros.benchmarks.dds) with the publisher in one
# namespace and the subscriber in the other: default Fast DDS transports vs LARGE_DATA, for the
# sizes given. Traffic stays between the two namespaces. Needs root (ip netns, mount).
#
#   sudo scripts/dds_two_hosts.sh                       # 256x256 640x480 1280x720, 60 frames at 15 Hz
#   sudo scripts/dds_two_hosts.sh --frames 30 --sizes 640x480
#
# The namespaces and the veth are removed on exit, also after an error or Ctrl-C.
set -euo pipefail

PYTHON=${PYTHON:-$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/python}
A=svla_host_a
B=svla_host_b
ADDRESS_A=10.231.77.1
ADDRESS_B=10.231.77.2

cleanup() {
    ip netns del "$A" 2>/dev/null || true      # deleting a namespace deletes its end of the veth, and the pair
    ip netns del "$B" 2>/dev/null || true
}
trap cleanup EXIT INT TERM

if [[ $(id -u) -ne 0 ]]; then
    echo "dds_two_hosts.sh: needs root (ip netns, mount); run it with sudo" >&2
    exit 2
fi
cleanup
ip netns add "$A"
ip netns add "$B"
ip link add svla_veth_a type veth peer name svla_veth_b
ip link set svla_veth_a netns "$A"
ip link set svla_veth_b netns "$B"
for side in "$A:svla_veth_a:$ADDRESS_A" "$B:svla_veth_b:$ADDRESS_B"; do
    IFS=: read -r namespace device address <<<"$side"
    ip -n "$namespace" link set lo up
    ip -n "$namespace" addr add "$address/24" dev "$device"
    ip -n "$namespace" link set "$device" up
    ip -n "$namespace" route add 224.0.0.0/4 dev "$device"      # DDS discovery is multicast
done

# A host of its own: this namespace's network, a private /dev/shm.
host() {
    echo "ip netns exec $1 unshare --mount sh -c 'mount -t tmpfs svla_shm /dev/shm && exec \"\$0\" \"\$@\"'"
}
cd "$(dirname "$0")/.."
"$PYTHON" -m spec_vla_ros.commands.bench dds --publisher-prefix "$(host "$A")" --subscriber-prefix "$(host "$B")" \
    --discovery-range SUBNET "$@"
