#!/usr/bin/env bash
# make demo: the whole DSTM story in three network namespaces that this script creates and
# always removes, with every process it started in them, also when it fails or is interrupted.
# Needs root, iproute2, curl and python3 (for a tiny IPv4-only web server). Exit status 0 only
# when the page came through the tunnel and nothing was left behind.
#
#   laptop (IPv6 only)  ==  gateway (IPv6 + IPv4)  ==  server (IPv4 only)
#   2001:db8:5572::2        ::1 | 198.51.100.1          198.51.100.2
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-$PWD/bin}
W=$(mktemp -d /tmp/dstm-demo.XXXXXX)
# Names of this run only (two demos at once do not meet); all start with dstm-demo-.
NS_L=dstm-demo-$$-laptop NS_G=dstm-demo-$$-gw NS_S=dstm-demo-$$-srv
GW6=2001:db8:5572::1 LAP6=2001:db8:5572::2 SRV4=198.51.100.2
IDENTITY=alice@corp.example
PIDS=() # the daemons' own PIDs, in start order
RESULT="FAILED: the page did not come through the tunnel"

ALL_NS="$NS_L $NS_G $NS_S"
. scripts/demo-lib.sh
gw() { in_ns "$NS_G" "$BIN/dstm-gateway" -c "$W/gw/gateway.yaml" "$@"; }
cli() { in_ns "$NS_L" "$BIN/dstm-client" --state-dir "$W/laptop" "$@"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

[ "$(id -u)" = 0 ] || { echo "make demo needs root (network namespaces, TUN devices)"; exit 1; }
for tool in ip curl python3; do command -v $tool >/dev/null || { echo "missing: $tool"; exit 1; }; done
[ -x "$BIN/dstm-gateway" ] && [ -x "$BIN/dstm-client" ] || { echo "build first: make build"; exit 1; }

say "Creating three namespaces: an IPv6-only laptop, the gateway, an IPv4-only server"
for ns in $NS_L $NS_G $NS_S; do ip netns add "$ns"; in_ns "$ns" ip link set lo up; done
ip link add dstmd-l0 netns $NS_L type veth peer name dstmd-g0 netns $NS_G
ip link add dstmd-g1 netns $NS_G type veth peer name dstmd-s0 netns $NS_S
in_ns $NS_L ip -6 addr add $LAP6/64 dev dstmd-l0 nodad
in_ns $NS_G ip -6 addr add $GW6/64 dev dstmd-g0 nodad
in_ns $NS_G ip addr add 198.51.100.1/24 dev dstmd-g1
in_ns $NS_S ip addr add $SRV4/24 dev dstmd-s0
for l in "$NS_L dstmd-l0" "$NS_G dstmd-g0" "$NS_G dstmd-g1" "$NS_S dstmd-s0"; do set -- $l; in_ns "$1" ip link set "$2" up; done
in_ns $NS_S ip route add default via 198.51.100.1
in_ns $NS_G sysctl -qw net.ipv4.ip_forward=1
echo "   laptop has no IPv4 at all:"; in_ns $NS_L ip -brief addr show dstmd-l0

say "Starting a web server on the IPv4-only server ($SRV4)"
mkdir -p "$W/www"; echo "Hello from the IPv4-only server, reached over IPv6 through DSTM" > "$W/www/index.html"
start www $NS_S "$W/www.log" python3 -m http.server 80 --bind $SRV4 --directory "$W/www"
wait_for 10 "the web server" in_ns $NS_S curl -s -o /dev/null http://$SRV4/

say "dstm-gateway init: state directory, embedded CA, gateway.yaml"
mkdir -p "$W/gw"
gw init --state-dir "$W/gw/state" --listen "[$GW6]:3653" --ipv6 $GW6 --server-ip $GW6 --server-name gw.dstm.test \
  --pool 100.64.0.0/24 --inner-v4 100.64.0.1 --admin-socket "$W/gw/admin.sock" | tee "$W/init.txt"
FP=$(tail -n 1 "$W/init.txt")

say "dstm-gateway run (log: $W/gw.log)"
start gateway $NS_G "$W/gw.log" "$BIN/dstm-gateway" -c "$W/gw/gateway.yaml" run
wait_for 15 "the gateway's admin socket" gw status || { tail -20 "$W/gw.log"; exit 1; }
gw status

say "dstm-gateway token $IDENTITY: a one-time enrollment token"
TOKEN=$(gw token "$IDENTITY" --ttl 10m --json | sed -n 's/.*"token": *"\([^"]*\)".*/\1/p')
echo "   token: ${TOKEN:0:40}…"

say "On the laptop: dstm-client enroll (key made locally, root pinned by fingerprint)"
cli enroll --gateway "[$GW6]:3653" --token "$TOKEN" --fingerprint "$FP"

say "On the laptop: dstm-client up (TSP-SSL, lease, TUN device, DTLS data channel)"
# --dns off: the laptop namespace shares this machine's /etc/resolv.conf (ip netns exec)
start client $NS_L "$W/client.log" "$BIN/dstm-client" --state-dir "$W/laptop" up --gateway "[$GW6]:3653" --dns off
CLIENT_PID=${PIDS[-1]}
wait_for 20 "the tunnel" cli status || { tail -20 "$W/client.log"; tail -20 "$W/gw.log"; exit 1; }
cli status

say "Fetching http://$SRV4/ from the IPv6-only laptop, through the tunnel"
if PAGE=$(in_ns $NS_L curl -s --max-time 10 http://$SRV4/); then
  echo "   $PAGE"
  RESULT="OK: the page came through the tunnel"
else
  echo "   the fetch failed"
fi

say "The gateway's view: dstm-gateway sessions and leases"
gw sessions
gw leases

say "dstm-gateway revoke $IDENTITY: certificates revoked, live session closed"
gw revoke "$IDENTITY"
wait_for 5 "the session to close" bash -c "! ip netns exec $NS_G $BIN/dstm-gateway -c $W/gw/gateway.yaml sessions | grep -q '$IDENTITY'" || true
gw sessions
echo "   the laptop is now cut off:"
if in_ns $NS_L curl -s --max-time 3 http://$SRV4/ >/dev/null; then echo "   (still reachable?!)"; RESULT="FAILED: revoked client still reaches the server"; else echo "   fetch refused, as it should be"; fi
stop "$CLIENT_PID"
