#!/usr/bin/env bash
# make demo-cluster: two gateways sharing their leases and their CA through a three-member etcd
# cluster, a laptop that loses its gateway (kill -9) and is back on the other one with the same
# IPv4 address. In network namespaces this script creates and always removes, with every
# process it started in them, also when it fails or is interrupted. Needs root, iproute2, curl
# and python3, and the etcd server binary in $BIN (the Makefile builds it from its Go module).
# Exit status 0 only when the page came through the tunnel after the failover, with the same
# address, and nothing was left behind.
#
#   laptop (IPv6 only)  ══╗                 ╔══  gw1  fd00:d57f::11 | 198.51.100.11
#   fd00:d57f::2          ╠══ one LAN ══════╬══  gw2  fd00:d57f::12 | 198.51.100.12
#   etcd m1..m3 ::21-23 ══╝  (a bridge)     ╚══  server (IPv4 only) 198.51.100.2, with BIRD as
#                                                the site router: no static route to the pool
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-$PWD/bin}
W=$(mktemp -d /tmp/dstm-demo-cluster.XXXXXX)
P=dstm-demo-$$ # every namespace of this run starts with it
NS_HUB=$P-lan NS_L=$P-laptop NS_E=$P-etcd NS_S=$P-srv NS_G1=$P-gw1 NS_G2=$P-gw2
ALL_NS="$NS_L $NS_G1 $NS_G2 $NS_E $NS_S $NS_HUB"
LAP6=fd00:d57f::2 GW1=fd00:d57f::11 GW2=fd00:d57f::12 SRV4=198.51.100.2 POOL=100.64.0.0/24
IDENTITY=alice@corp.example
PIDS=()
RESULT="FAILED: the page did not come through the tunnel after the failover"

. scripts/demo-lib.sh
gw() { local n=$1; shift; in_ns "$P-gw$n" "$BIN/dstm-gateway" -c "$W/gw$n/gateway.yaml" "$@"; }
cli() { in_ns "$NS_L" "$BIN/dstm-client" --state-dir "$W/laptop" "$@"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

[ "$(id -u)" = 0 ] || { echo "make demo-cluster needs root (network namespaces, TUN devices)"; exit 1; }
for tool in ip curl python3 bird birdc; do command -v $tool >/dev/null || { echo "missing: $tool (apt-get install bird2 for bird)"; exit 1; }; done
for b in dstm-gateway dstm-client etcd; do [ -x "$BIN/$b" ] || { echo "build first: make demo-cluster builds $BIN/$b"; exit 1; }; done

say "One LAN (a bridge) with a laptop (IPv6 only), two gateways, three etcd members, an IPv4-only server"
for ns in $ALL_NS; do ip netns add "$ns"; in_ns "$ns" ip link set lo up; done
in_ns $NS_HUB ip link add dstmbr0 type bridge
in_ns $NS_HUB ip link set dstmbr0 up
i=0
for ns in $NS_L $NS_G1 $NS_G2 $NS_E $NS_S; do
  i=$((i + 1))
  ip link add dstmx0 netns "$ns" type veth peer name "dstmh$i" netns $NS_HUB
  in_ns $NS_HUB ip link set "dstmh$i" master dstmbr0 up
  in_ns "$ns" ip link set dstmx0 up
done
in_ns $NS_L ip -6 addr add $LAP6/64 dev dstmx0 nodad
in_ns $NS_G1 ip -6 addr add $GW1/64 dev dstmx0 nodad
in_ns $NS_G1 ip addr add 198.51.100.11/24 dev dstmx0
in_ns $NS_G2 ip -6 addr add $GW2/64 dev dstmx0 nodad
in_ns $NS_G2 ip addr add 198.51.100.12/24 dev dstmx0
for m in 21 22 23; do in_ns $NS_E ip -6 addr add fd00:d57f::$m/64 dev dstmx0 nodad; done
in_ns $NS_S ip addr add $SRV4/24 dev dstmx0
for ns in $NS_G1 $NS_G2; do in_ns "$ns" sysctl -qw net.ipv4.ip_forward=1; done

say "BIRD 2 as the site router (with the server): a BGP session with each gateway, no static route"
cat >"$W/bird.conf" <<EOF
router id $SRV4;
protocol device { scan time 1; }
protocol kernel { ipv4 { import none; export where source = RTS_BGP; }; learn off; }
protocol bgp dstm_gw1 { local as 65000; neighbor 198.51.100.11 as 65010; connect retry time 1; ipv4 { import all; export none; }; }
protocol bgp dstm_gw2 { local as 65000; neighbor 198.51.100.12 as 65010; connect retry time 1; ipv4 { import all; export none; }; }
EOF
start bird $NS_S "$W/bird.log" bird -f -c "$W/bird.conf" -s "$W/bird.ctl" -P "$W/bird.pid"
wait_for 10 "BIRD" birdc -s "$W/bird.ctl" show status
echo "   routes of the server to the pool: $(in_ns $NS_S ip -4 route show proto bird | wc -l)"

say "Starting etcd: three members (the etcd server built from its Go module, $("$BIN/etcd" --version | head -1))"
CLUSTER="m1=http://[fd00:d57f::21]:2380,m2=http://[fd00:d57f::22]:2380,m3=http://[fd00:d57f::23]:2380"
ENDPOINTS=""
for m in 1 2 3; do
  a="[fd00:d57f::2$m]"
  start etcd$m $NS_E "$W/etcd$m.log" "$BIN/etcd" --name m$m --data-dir "$W/etcd$m" \
    --listen-peer-urls "http://$a:2380" --initial-advertise-peer-urls "http://$a:2380" \
    --listen-client-urls "http://$a:2379" --advertise-client-urls "http://$a:2379" \
    --initial-cluster "$CLUSTER" --initial-cluster-state new --initial-cluster-token dstm-demo --log-level warn
  ENDPOINTS+="      - http://$a:2379"$'\n'
done
wait_for 20 "etcd" in_ns $NS_E curl -sf "http://[fd00:d57f::21]:2379/health"
in_ns $NS_E curl -s "http://[fd00:d57f::21]:2379/health"; echo

say "Starting an IPv4-only web server ($SRV4)"
mkdir -p "$W/www"; echo "Hello from the IPv4-only server, through a DSTM cluster" > "$W/www/index.html"
start www $NS_S "$W/www.log" python3 -m http.server 80 --bind $SRV4 --directory "$W/www"
wait_for 10 "the web server" in_ns $NS_S curl -s -o /dev/null http://$SRV4/

say "Two gateways, the same pools and policy, store: etcd; one CA (init on gw1, keys copied to gw2)"
for n in 1 2; do
  a=$([ $n = 1 ] && echo $GW1 || echo $GW2)
  mkdir -p "$W/gw$n"
  cat >"$W/gw$n/gateway.yaml" <<EOF
state_dir: $W/gw$n/state
listen:
  addresses: ["[$a]:3653"]
tep:
  ipv6: $a
  inner_v4: 100.64.0.1
pools:
  - name: default
    prefixes: [$POOL]
ca:
  server_names: [vpn.corp.example]
  server_ips: [$a]
admin:
  socket: $W/gw$n/admin.sock
bgp:
  local_as: 65010
  router_id: 198.51.100.1$n
  neighbors:
    - address: $SRV4
      as: 65000
store:
  etcd:
    name: gw$n
    ttl: 3s
    endpoints:
$ENDPOINTS
EOF
done
gw 1 init | tee "$W/init.txt"
FP=$(tail -n 1 "$W/init.txt")
mkdir -p "$W/gw2/state/ca"
for f in "$W"/gw1/state/ca/*; do case $f in *.db) ;; *) cp -p "$f" "$W/gw2/state/ca/" ;; esac; done
for n in 1 2; do
  start gw$n "$P-gw$n" "$W/gw$n.log" "$BIN/dstm-gateway" -c "$W/gw$n/gateway.yaml" run
  wait_for 20 "gw$n's admin socket" gw $n status || { tail -20 "$W/gw$n.log"; exit 1; }
done
GW1_PID=${PIDS[-2]}
gw 2 status

say "Enroll the laptop on gw1; dstm-client up with both gateways"
TOKEN=$(gw 1 token "$IDENTITY" --ttl 10m --json | sed -n 's/.*"token": *"\([^"]*\)".*/\1/p')
cli enroll --gateway "[$GW1]:3653" --token "$TOKEN" --fingerprint "$FP"
# --dns off: the laptop namespace shares this machine's /etc/resolv.conf (ip netns exec)
start client $NS_L "$W/client.log" "$BIN/dstm-client" --state-dir "$W/laptop" up --gateway "[$GW1]:3653,[$GW2]:3653" --dns off
CLIENT_PID=${PIDS[-1]}
wait_for 20 "the tunnel" cli status || { tail -20 "$W/client.log"; exit 1; }
cli status
LEASE=$(cli status --json | sed -n 's/.*"lease": *"\([^"]*\)".*/\1/p')
wait_for 10 "the server's route to $LEASE" bash -c "ip netns exec $NS_S ip route show $LEASE | grep -q 198.51.100.11"
echo "   the server's route, learned by BGP from gw1: $(in_ns $NS_S ip route show $LEASE)"
echo "   page: $(in_ns $NS_L curl -s --max-time 10 http://$SRV4/)"

say "gw2 sees the lease of gw1's session (the GATEWAY column), from etcd"
wait_for 5 "gw2's view" bash -c "ip netns exec $NS_G2 $BIN/dstm-gateway -c $W/gw2/gateway.yaml leases | grep -q gw1"
gw 2 leases

say "kill -9 gw1 (no goodbye)"
KILLED=$(date +%s%N)
{ kill -KILL "$GW1_PID"; wait "$GW1_PID"; } 2>/dev/null || true
back() { cli status --json | grep -q "\"gateway\": *\"\[$GW2\]:3653\"" && cli status --json | grep -q '"state": *"up"'; }
wait_for 30 "the laptop on gw2" back || { tail -20 "$W/client.log"; exit 1; }
if PAGE=$(in_ns $NS_L curl -s --max-time 10 http://$SRV4/); then
  MS=$((($(date +%s%N) - KILLED) / 1000000))
  echo "   page: $PAGE"
  echo "   the server's route now, learned by BGP from gw2: $(in_ns $NS_S ip route show $LEASE)"
  cli status
  NOW=$(cli status --json | sed -n 's/.*"lease": *"\([^"]*\)".*/\1/p')
  if [ "$NOW" = "$LEASE" ]; then
    echo "   same IPv4 address $LEASE on gw2, ${MS} ms after the kill"
    RESULT="OK: the page came through the tunnel after the failover, with the same address"
  else
    echo "   the address changed: $LEASE before, $NOW after"
    RESULT="FAILED: the laptop got $NOW from gw2, not its address $LEASE"
  fi
fi
gw 2 leases

say "After its ownership TTL (3 s) gw1 is gone from the cluster's members"
wait_for 10 "gw1 to leave" bash -c "ip netns exec $NS_G2 $BIN/dstm-gateway -c $W/gw2/gateway.yaml status | grep -q '^members: *gw2\$'"
gw 2 status | sed -n '/^cluster/,/^members/p'
stop "$CLIENT_PID"
