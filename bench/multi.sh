#!/usr/bin/env bash
# multi.sh: several clients through one gateway at once, each in its own namespace, beside
# wireguard-go with as many peers: aggregate TCP throughput, the gateway's CPU (more than 100 %
# means it works on both cores), and whether packets of one flow arrive in order.
#
#   bash bench/multi.sh [-r N] [-t S] [-c CLIENTS] [tunnel ...]
#     tunnels: wireguard-go-new dtls tls plain (default: all four); each runs with 1 client
#     and with CLIENTS (default 4) clients
#
# Why not run.sh: its plug-ins bring up one client in pb-cli. This script uses the harness's
# libraries (topology, CPU accounting) and adds pb-cli2..pb-cliN, each with its own veth to
# pb-gw (2001:db8:1N::/64), its own tunnel client and its own iperf3 server port in pb-srv.
# Each measurement runs one iperf3 per client at once, for S seconds (+1 s omitted):
#   - TCP up and down: the sum of the receivers' rates, and the slowest client's share;
#   - UDP, 100 Mbit/s per client for 3 s: datagrams lost and datagrams out of order (the
#     receiver's out_of_order: a sequence number below one already received), summed;
#   - CPU of the gateway's and the clients' tunnel processes, % of one core.
# The dstm gateway and clients are the real binaries (bin/ from make build, or DSTM_BIN),
# brought up as bench/tunnels/dstm.sh does (init, token, enroll, up); rounds interleave.
# Needs what run.sh needs (bash ../shared/bench/setup.sh). Output: a table on stdout, the
# measurements in /tmp/pb-results/multi-<id>.csv.
set -u -o pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR=${PB_BENCH_DIR:-$(cd "$REPO/../shared/bench" 2>/dev/null && pwd)}
[ -f "$BENCH_DIR/lib/common.sh" ] || { echo "the shared harness is not at ${BENCH_DIR:-../shared/bench} (set PB_BENCH_DIR)" >&2; exit 1; }
# shellcheck source=/dev/null
. "$BENCH_DIR/lib/common.sh"
# shellcheck source=/dev/null
. "$BENCH_DIR/lib/topo.sh"

REPS=3 DUR=6 CLIENTS=4
UDP_RATE=100M UDP_DUR=3
while getopts "r:t:c:h" opt; do
    case $opt in
        r) REPS=$OPTARG ;;
        t) DUR=$OPTARG ;;
        c) CLIENTS=$OPTARG ;;
        *) sed -n '2,8p' "$0"; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
TUNNELS=("$@")
[ ${#TUNNELS[@]} -eq 0 ] && TUNNELS=(wireguard-go-new dtls tls plain)
[[ $CLIENTS =~ ^[0-9]+$ ]] && [ "$CLIENTS" -ge 2 ] && [ "$CLIENTS" -le 9 ] || die "-c: want 2 to 9 clients, not $CLIENTS"
for t in "${TUNNELS[@]}"; do
    case $t in wireguard-go-new | dtls | tls | plain) ;; *) die "unknown tunnel $t (want wireguard-go-new, dtls, tls or plain)" ;; esac
done

[ "$(id -u)" = 0 ] || die "must run as root"
for c in ip iperf3 jq ping; do command -v $c >/dev/null || die "$c missing (bash $BENCH_DIR/setup.sh)"; done
WG_BIN=/tmp/pb-tools/bin/wireguard
if [[ " ${TUNNELS[*]} " == *" wireguard-go-new "* ]]; then
    command -v wg >/dev/null || die "wg missing (bash $BENCH_DIR/setup.sh)"
    [ -x "$WG_BIN" ] || die "$WG_BIN missing (bash $BENCH_DIR/setup.sh)"
fi

# the extra client namespaces join the harness's list, so topo_up makes them and topo_down
# removes them, also after a failure
cli_ns() { if [ "$1" = 1 ]; then echo "$NS_CLI"; else echo "pb-cli$1"; fi; }
for ((i = 2; i <= CLIENTS; i++)); do PB_NAMESPACES+=("$(cli_ns $i)"); done

mkdir -p "$PB_TMP" "$PB_RESULTS"
exec 9>"$PB_LOCK"
flock -n 9 || die "another run holds $PB_LOCK"
if topo_exists; then log "removing stale pb- namespaces from an earlier run"; topo_down; fi
: >"$PB_PIDFILE"

CUR_DOWN=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    [ -n "$CUR_DOWN" ] && $CUR_DOWN >>"$PB_TMP/cleanup.log" 2>&1
    topo_down
    log "cleanup done (namespaces removed)"
    exit $rc
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

log "topology up ($CLIENTS client namespaces)"
topo_up || die "topology setup failed"
for ((i = 2; i <= CLIENTS; i++)); do
    ns=$(cli_ns $i)
    ip link add "pb-m$i" netns "$ns" type veth peer name "pb-n$i" netns "$NS_GW" || die "veth for $ns"
    nsx "$ns" sysctl -qw net.ipv6.conf.default.accept_ra=0 net.ipv6.conf.all.accept_ra=0
    nsx "$ns" ip -6 addr add "2001:db8:1$i::2/64" dev "pb-m$i" nodad
    nsx "$ns" ip link set "pb-m$i" up
    nsx "$NS_GW" ip -6 addr add "2001:db8:1$i::1/64" dev "pb-n$i" nodad
    nsx "$NS_GW" ip link set "pb-n$i" up
    nsx "$ns" ip -6 route add default via "2001:db8:1$i::1" dev "pb-m$i"
    pb_wait 5 nsx "$ns" ping -6 -n -c1 -W1 "$GW6" || die "$ns cannot reach $GW6"
    nsx "$ns" ping -n -c1 -W1 "$SRV4" >/dev/null 2>&1 && die "$ns reaches $SRV4 without a tunnel: topology is wrong"
done
for ((i = 1; i <= CLIENTS; i++)); do
    ip netns exec "$NS_SRV" iperf3 -s -B "$SRV4" -p $((5200 + i)) >>"$PB_TMP/iperf3-multi-server.log" 2>&1 </dev/null &
    echo $! >>"$PB_PIDFILE"
done
for ((i = 1; i <= CLIENTS; i++)); do
    pb_wait 5 nsx "$NS_SRV" sh -c "ss -ltn | grep -q '$SRV4:$((5200 + i))'" || die "iperf3 server $((5200 + i)) did not start"
done

# --- wireguard-go-new with one peer per client -------------------------------------------
WG_PORT=51820 WG_MTU=1420
_wg_start() {   # _wg_start NS IFNAME
    rm -f "/var/run/wireguard/$2.sock"
    pb_bg "$1" "$TUNNEL_WORK/$2.log" env LOG_LEVEL=error WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1 "$WG_BIN" -f "$2"
    [ "$1" = "$NS_CLI" ] || [ "$1" = "$NS_GW" ] || TUNNEL_CLI_PIDS+=" $PB_LAST_PID"
    pb_wait 5 test -S "/var/run/wireguard/$2.sock" || { echo "$2: no UAPI socket"; return 1; }
}
wg_up() {   # wg_up K
    local k=$1 d=$TUNNEL_WORK i ns peers=()
    (umask 077; wg genkey >"$d/gw.key")
    wg pubkey <"$d/gw.key" >"$d/gw.pub"
    for ((i = 1; i <= k; i++)); do
        (umask 077; wg genkey >"$d/cli$i.key")
        wg pubkey <"$d/cli$i.key" >"$d/cli$i.pub"
        peers+=(peer "$(cat "$d/cli$i.pub")" allowed-ips "192.0.2.$((1 + i))/32")
    done
    _wg_start "$NS_GW" pb-wgg || return 1
    nsx "$NS_GW" wg set pb-wgg private-key "$d/gw.key" listen-port $WG_PORT "${peers[@]}" || return 1
    nsx "$NS_GW" ip addr add "$GW_TUN4/24" dev pb-wgg
    nsx "$NS_GW" ip link set pb-wgg mtu $WG_MTU up
    for ((i = 1; i <= k; i++)); do
        ns=$(cli_ns $i)
        _wg_start "$ns" "pb-wgc$i" || return 1
        nsx "$ns" wg set "pb-wgc$i" private-key "$d/cli$i.key" \
            peer "$(cat "$d/gw.pub")" endpoint "[$GW6]:$WG_PORT" allowed-ips "$SRV_NET" || return 1
        nsx "$ns" ip addr add "192.0.2.$((1 + i))/24" dev "pb-wgc$i"
        nsx "$ns" ip link set "pb-wgc$i" mtu $WG_MTU up
        nsx "$ns" ip route add "$SRV_NET" dev "pb-wgc$i"
    done
}
wg_down() {
    local i
    pb_kill_tunnel
    for ((i = 1; i <= CLIENTS; i++)); do
        rm -f "/var/run/wireguard/pb-wgc$i.sock"
        nsx "$(cli_ns $i)" ip link del "pb-wgc$i" 2>/dev/null
    done
    rm -f /var/run/wireguard/pb-wgg.sock
    nsx "$NS_GW" ip link del pb-wgg 2>/dev/null
    return 0
}

# --- dstm: the plug-in's gateway and first client, then one more client per namespace -----
dstm_up() {   # dstm_up TRANSPORT K
    local tr=$1 k=$2 i ns token fp
    DSTM_VARIANT=$tr
    # shellcheck source=tunnels/dstm.sh
    . "$REPO/bench/tunnels/dstm.sh"
    tunnel_check || return 1
    tunnel_up || return 1
    fp=$(tail -n 1 "$TUNNEL_WORK/init.txt")
    for ((i = 2; i <= k; i++)); do
        ns=$(cli_ns $i)
        mkdir -p "$TUNNEL_WORK/cli$i"
        token=$(_dstm_gw token "pb-client$i@bench.test" --ttl 10m --json | jq -r '.token // empty')
        [ -n "$token" ] || { echo "no enrollment token for client $i"; return 1; }
        nsx "$ns" "$DSTM_CLI_BIN" --state-dir "$TUNNEL_WORK/cli$i" enroll --gateway "[$GW6]:$DSTM_PORT" \
            --token "$token" --fingerprint "$fp" || { echo "enroll of client $i failed"; return 1; }
        pb_bg "$ns" "$TUNNEL_WORK/cli$i.log" "$DSTM_CLI_BIN" --state-dir "$TUNNEL_WORK/cli$i" \
            --log-level "$DSTM_LOG_LEVEL" up --gateway "[$GW6]:$DSTM_PORT" --transport "$tr" \
            --device "$DSTM_CLI_DEV" --dns off
        TUNNEL_CLI_PIDS+=" $PB_LAST_PID"
    done
}
dstm_down() {
    local i
    tunnel_down
    for ((i = 2; i <= CLIENTS; i++)); do nsx "$(cli_ns $i)" ip link del "$DSTM_CLI_DEV" 2>/dev/null; done
    return 0
}

# --- measurements ----------------------------------------------------------------------------
all_reach() {   # all_reach K
    local i
    for ((i = 1; i <= $1; i++)); do nsx "$(cli_ns $i)" ping -n -c1 -W1 "$SRV4" >/dev/null 2>&1 || return 1; done
}

# iperf_all K NAME ARGS...: one iperf3 per client at once; each writes $TUNNEL_WORK/NAME-<i>.json
iperf_all() {
    local k=$1 name=$2 i pids=(); shift 2
    for ((i = 1; i <= k; i++)); do
        timeout $((DUR + 30)) ip netns exec "$(cli_ns $i)" iperf3 -c "$SRV4" -p $((5200 + i)) \
            --connect-timeout 3000 -J "$@" >"$TUNNEL_WORK/$name-$i.json" 2>>"$TUNNEL_WORK/$name.err" &
        pids+=($!)
    done
    wait "${pids[@]}"
}

# tcp K [-R] -> aggregate Gbit/s, slowest client's Gbit/s, CPU cli%, CPU gw%
tcp() {
    local k=$1 name=tcp-up; shift
    [ "${1:-}" = -R ] && name=tcp-down
    cpu_begin
    iperf_all "$k" "$name" -t "$DUR" -O 1 "$@"
    cpu_end
    jq -s -r --arg c "$CPU_CLI" --arg g "$CPU_GW" --argjson k "$k" '
        [.[] | .end.sum_received.bits_per_second // empty] as $r |
        if ($r | length) < $k then ["NA", "NA", $c, $g]
        else [($r | add / 1e9 * 1000 | round / 1000), ($r | min / 1e9 * 1000 | round / 1000), $c, $g] end | @tsv' \
        "$TUNNEL_WORK/$name"-*.json
}

# udp K -> datagrams sent, lost, out of order (sums over the clients)
udp() {
    local k=$1
    iperf_all "$k" udp -u -b "$UDP_RATE" -l 1200 -t "$UDP_DUR"
    jq -s -r --argjson k "$k" '
        [.[] | .end.sum // empty] as $r |
        if ($r | length) < $k then ["NA", "NA", "NA"]
        else [($r | map(.packets) | add), ($r | map(.lost_packets) | add),
              ([.[] | .end.streams[].udp.out_of_order] | add)] end | @tsv' "$TUNNEL_WORK"/udp-*.json
}

# shellcheck source=/dev/null
. "$BENCH_DIR/lib/measure.sh"

RUN_ID=$(date +%Y%m%d-%H%M%S)
CSV=$PB_RESULTS/multi-$RUN_ID.csv
echo "tunnel,clients,rep,up_gbps,up_min_gbps,cpu_cli_up,cpu_gw_up,down_gbps,down_min_gbps,cpu_cli_down,cpu_gw_down,udp_sent,udp_lost,udp_reordered,load1" >"$CSV"

run_one() {   # run_one TUNNEL K REP
    local t=$1 k=$2 rep=$3 up dn ud load1
    TUNNEL_WORK=$PB_TMP/multi/$t-$k/rep$rep
    rm -rf "$TUNNEL_WORK"; mkdir -p "$TUNNEL_WORK"
    TUNNEL_CLI_PIDS=""; TUNNEL_GW_PIDS=""
    load1=$(cut -d' ' -f1 /proc/loadavg)
    log "[$rep/$REPS] $t, $k client(s): up (load $load1)"
    local up_cmd=(dstm_up "$t" "$k")
    CUR_DOWN=dstm_down
    if [ "$t" = wireguard-go-new ]; then
        up_cmd=(wg_up "$k")
        CUR_DOWN=wg_down
    fi
    if ! "${up_cmd[@]}" >"$TUNNEL_WORK/up.log" 2>&1 || ! pb_wait 20 all_reach "$k"; then
        log "$t with $k clients did not come up (see $TUNNEL_WORK)"
        echo "$t,$k,$rep,NA,NA,NA,NA,NA,NA,NA,NA,NA,NA,NA,$load1" >>"$CSV"
        $CUR_DOWN >>"$TUNNEL_WORK/down.log" 2>&1; CUR_DOWN=""
        return
    fi
    up=$(tcp "$k")
    dn=$(tcp "$k" -R)
    ud=$(udp "$k")
    log "$t, $k: up/min/cpu=$(echo "$up" | tr '\t' ' ') down=$(echo "$dn" | tr '\t' ' ') udp sent/lost/out-of-order=$(echo "$ud" | tr '\t' ' ')"
    echo "$t,$k,$rep,$(echo "$up" | tr '\t' ','),$(echo "$dn" | tr '\t' ','),$(echo "$ud" | tr '\t' ','),$load1" >>"$CSV"
    $CUR_DOWN >>"$TUNNEL_WORK/down.log" 2>&1; CUR_DOWN=""
}

for ((rep = 1; rep <= REPS; rep++)); do
    order=("${TUNNELS[@]}")
    if ((rep % 2 == 0)); then
        order=(); for ((j = ${#TUNNELS[@]} - 1; j >= 0; j--)); do order+=("${TUNNELS[j]}"); done
    fi
    for t in "${order[@]}"; do
        run_one "$t" 1 "$rep"
        run_one "$t" "$CLIENTS" "$rep"
    done
done

# median [min-max] of a column per tunnel and client count
echo
echo "| tunnel | clients | TCP up Gbit/s | slowest client up | CPU % cli/gw up | TCP down | slowest client down | CPU % cli/gw down | UDP out of order / lost / sent |"
echo "|---|---|---|---|---|---|---|---|---|"
for t in "${TUNNELS[@]}"; do
    for k in 1 "$CLIENTS"; do
        awk -F, -v t="$t" -v k="$k" '
            function med(col,   n, i, j, v, a, tmp) {
                n = 0
                for (i = 1; i <= rows; i++) if (val[i, col] != "NA") a[++n] = val[i, col] + 0
                if (n == 0) return "NA"
                for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { tmp = a[i]; a[i] = a[j]; a[j] = tmp }
                v = (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
                return (n > 1) ? sprintf("%g [%g–%g]", v, a[1], a[n]) : sprintf("%g", v)
            }
            function sum(col,   i, s, n) {
                s = 0; n = 0
                for (i = 1; i <= rows; i++) if (val[i, col] != "NA") { s += val[i, col]; n++ }
                return n ? s : "NA"
            }
            $1 == t && $2 == k { rows++; for (c = 4; c <= 14; c++) val[rows, c] = $c }
            END {
                if (!rows) exit
                printf "| %s | %s | %s | %s | %s/%s | %s | %s | %s/%s | %s / %s / %s |\n", t, k,
                    med(4), med(5), med(6), med(7), med(8), med(9), med(10), med(11), sum(14), sum(13), sum(12)
            }' "$CSV"
    done
done
echo
log "measurements: $CSV"
