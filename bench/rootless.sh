#!/usr/bin/env bash
# rootless.sh: the rootless client (dstm-client up --proxy, no TUN device, no root) beside the
# TUN client and wireguard-go, in the shared harness's topology, with its iperf3 measurement.
#
#   bash bench/rootless.sh [-r N] [-t S] [-p PINGS] [tunnel ...]
#     default tunnels: wireguard-go-new bench/tunnels/dstm.sh bench/tunnels/dstm-rootless.sh
#
# Why not run.sh: the harness checks and measures through a route (ping, iperf3 to
# 198.51.100.2), and a rootless client has none; its traffic enters the tunnel through the
# SOCKS5 proxy. So this script sources the harness's own libraries (topology, PKI, iperf3 and
# CPU accounting from ../shared/bench/lib) and changes only how the client side reaches the
# server for the proxied tunnel: iperf3 runs under proxychains4 (its TCP connections go through
# the SOCKS5 proxy), and UDP is not measured (the proxy has no UDP ASSOCIATE). RTT is measured
# the same way for every tunnel: bench/tcprtt, one TCP connection, a byte echoed by pb-srv,
# 100 probes at 10 ms (directly for routed tunnels, through the proxy for the rootless one);
# the routed tunnels also get the harness's ping. Rounds interleave (A B C / C B A / ...) and
# each brings its tunnel up and down.
#
# Needs what run.sh needs (bash ../shared/bench/setup.sh), proxychains4 and Go (to build
# tcprtt); the dstm binaries come from bin/ (make build) or DSTM_BIN.
# Output: a table on stdout, the rounds in /tmp/pb-results/rootless-<id>.csv.
set -u -o pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_DIR=${PB_BENCH_DIR:-$(cd "$REPO/../shared/bench" 2>/dev/null && pwd)}
[ -f "$BENCH_DIR/lib/common.sh" ] || { echo "the shared harness is not at ${BENCH_DIR:-../shared/bench} (set PB_BENCH_DIR)" >&2; exit 1; }
# shellcheck source=/dev/null
. "$BENCH_DIR/lib/common.sh"
# shellcheck source=/dev/null
. "$BENCH_DIR/lib/topo.sh"
# shellcheck source=/dev/null
. "$BENCH_DIR/lib/pki.sh"

PB_REPS=3
while getopts "r:t:p:h" opt; do
    case $opt in
        r) PB_REPS=$OPTARG ;;
        t) PB_DUR=$OPTARG ;;
        p) PB_PINGS=$OPTARG ;;
        *) sed -n '2,6p' "$0"; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
# shellcheck source=/dev/null
. "$BENCH_DIR/lib/measure.sh"
TUNNELS=("$@")
[ ${#TUNNELS[@]} -eq 0 ] && TUNNELS=(wireguard-go-new "$REPO/bench/tunnels/dstm.sh" "$REPO/bench/tunnels/dstm-rootless.sh")

[ "$(id -u)" = 0 ] || die "must run as root"
for c in ip iperf3 jq ping openssl ss proxychains4 setpriv go; do
    command -v $c >/dev/null || die "$c missing (harness: bash $BENCH_DIR/setup.sh; Debian: proxychains4)"
done
tunnel_file() { case "$1" in */*|*.sh) echo "$1" ;; *) echo "$BENCH_DIR/tunnels/$1.sh" ;; esac; }
for t in "${TUNNELS[@]}"; do [ -f "$(tunnel_file "$t")" ] || die "no such tunnel: $(tunnel_file "$t")"; done

mkdir -p "$PB_TMP" "$PB_RESULTS"
exec 9>"$PB_LOCK"
flock -n 9 || die "another run holds $PB_LOCK"
if topo_exists; then log "removing stale pb- namespaces from an earlier run"; topo_down; fi
: >"$PB_PIDFILE"

DSTM_TCPRTT=$PB_TMP/tcprtt
export DSTM_TCPRTT
DSTM_ECHO_PORT=7007
(cd "$REPO" && go build -o "$DSTM_TCPRTT" ./bench/tcprtt) || die "building bench/tcprtt failed"
PROXYCHAINS_CONF=$PB_TMP/proxychains.conf
printf 'strict_chain\nquiet_mode\ntcp_read_time_out 15000\ntcp_connect_time_out 8000\n[ProxyList]\nsocks5 127.0.0.1 1080\n' >"$PROXYCHAINS_CONF"

CUR_TUNNEL=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    [ -n "$CUR_TUNNEL" ] && tunnel_down >>"$PB_TMP/cleanup.log" 2>&1
    topo_down
    log "cleanup done (namespaces removed)"
    exit $rc
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# The proxied tunnel's iperf3 goes through the SOCKS5 proxy; everything else is the harness's.
ROOTLESS=0
_iperf() {   # _iperf OUTFILE ARGS...   (as lib/measure.sh's, with proxychains4 when ROOTLESS=1)
    local out=$1 try pre=(); shift
    [ "$ROOTLESS" = 1 ] && pre=(proxychains4 -q -f "$PROXYCHAINS_CONF")
    for try in 1 2; do
        timeout $((PB_DUR + 30)) ip netns exec "$NS_CLI" \
            "${pre[@]}" iperf3 -c "$SRV4" --connect-timeout 3000 -J "$@" >"$out" 2>>"$out.err"
        if jq -e '.end.sum_sent' "$out" >/dev/null 2>&1 && ! jq -e '.error' "$out" >/dev/null 2>&1; then
            return 0
        fi
        log "iperf3 $* failed: $(jq -r '.error // empty' "$out" 2>/dev/null | head -c 200); restarting server"
        iperf_server_start
    done
    return 1
}

measure_tcprtt() {   # -> median_ms p99_ms loss%
    local socks=()
    [ "$ROOTLESS" = 1 ] && socks=(-socks5 127.0.0.1:1080)
    nsx "$NS_CLI" "$DSTM_TCPRTT" -connect "$SRV4:$DSTM_ECHO_PORT" "${socks[@]}" -n "$PB_PINGS" -i 10ms \
        2>>"$TUNNEL_WORK/tcprtt.err" || printf 'NA\tNA\tNA\n'
}

log "topology up"
topo_up || die "topology setup failed"
iperf_server_start || die "iperf3 server did not start"
pki_ensure || die "PKI failed"
ip netns exec "$NS_SRV" "$DSTM_TCPRTT" -listen "$SRV4:$DSTM_ECHO_PORT" >>"$PB_TMP/tcprtt-server.log" 2>&1 </dev/null &
echo $! >>"$PB_PIDFILE"
pb_wait 5 nsx "$NS_SRV" sh -c "ss -ltn | grep -q '$SRV4:$DSTM_ECHO_PORT'" || die "echo server did not start"

load_tunnel() {
    unset -f tunnel_up tunnel_down tunnel_check tunnel_info tunnel_versions
    unset DSTM_PROXY   # set again by dstm.sh, for dstm-rootless.sh only
    # shellcheck disable=SC1090
    . "$(tunnel_file "$1")"
    ROOTLESS=0
    [ -n "${DSTM_PROXY:-}" ] && ROOTLESS=1
    return 0
}

RUN_ID=$(date +%Y%m%d-%H%M%S)
CSV=$PB_RESULTS/rootless-$RUN_ID.csv
echo "tunnel,rep,status,up_s,tcp_up_gbps,tcp_up_retr,cpu_cli_tcp_up,cpu_gw_tcp_up,tcp_down_gbps,tcp_down_retr,cpu_cli_tcp_down,cpu_gw_tcp_down,tcprtt_med_ms,tcprtt_p99_ms,tcprtt_loss_pct,ping_med_ms,ping_p99_ms,ping_loss_pct,load1" >"$CSV"
declare -A SKIP=()
for t in "${TUNNELS[@]}"; do
    load_tunnel "$t"
    if declare -F tunnel_check >/dev/null; then
        reason=$(tunnel_check 2>&1) || { SKIP[$t]=${reason:-tunnel_check failed}; log "skip $t: ${SKIP[$t]}"; }
    fi
done

run_round() {
    local t=$1 rep=$2 t0 rc up_s load1 tcp_up tcp_dn rtt png
    load_tunnel "$t"
    TUNNEL_WORK=$PB_TMP/rootless/$(basename "$t" .sh)/rep$rep
    rm -rf "$TUNNEL_WORK"; mkdir -p "$TUNNEL_WORK"
    TUNNEL_CLI_PIDS=""; TUNNEL_GW_PIDS=""
    load1=$(cut -d' ' -f1 /proc/loadavg)
    log "[$rep/$PB_REPS] $t: up (load $load1)"
    CUR_TUNNEL=$t
    t0=$(date +%s.%N)
    tunnel_up >>"$TUNNEL_WORK/up.log" 2>&1; rc=$?
    up_s=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}')
    if [ $rc -ne 0 ]; then
        log "$t: tunnel_up failed (rc=$rc); last lines of $TUNNEL_WORK/up.log:"
        tail -n 15 "$TUNNEL_WORK/up.log" >&2
        echo "$(basename "$t" .sh),$rep,FAIL,$up_s,NA,NA,NA,NA,NA,NA,NA,NA,NA,NA,NA,NA,NA,NA,$load1" >>"$CSV"
    else
        log "$t: up in ${up_s}s; TCP up"
        tcp_up=$(measure_tcp)
        log "$t: TCP down"
        tcp_dn=$(measure_tcp -R)
        log "$t: TCP RTT"
        rtt=$(measure_tcprtt)
        png=$(printf 'NA\tNA\tNA')
        if [ "$ROOTLESS" = 0 ]; then log "$t: ping"; png=$(measure_ping); fi
        printf '%s\t' "$(basename "$t" .sh)" "$rep" OK "$up_s" "$tcp_up" "$tcp_dn" "$rtt" "$png" | tr '\t' ',' >>"$CSV"
        echo "$load1" >>"$CSV"
        log "$t: tcp_up=$(tr '\t' ' ' <<<"$tcp_up") tcp_down=$(tr '\t' ' ' <<<"$tcp_dn") tcprtt=$(tr '\t' ' ' <<<"$rtt") ping=$(tr '\t' ' ' <<<"$png")"
    fi
    log "$t: down"
    tunnel_down >>"$TUNNEL_WORK/down.log" 2>&1
    pb_kill_tunnel
    CUR_TUNNEL=""
    if pb_reach; then die "$t: $SRV4 still reachable after tunnel_down; stopping so results stay clean"; fi
}

for rep in $(seq "$PB_REPS"); do
    order=("${TUNNELS[@]}")
    if [ $((rep % 2)) -eq 0 ]; then
        order=(); for ((i = ${#TUNNELS[@]} - 1; i >= 0; i--)); do order+=("${TUNNELS[i]}"); done
    fi
    for t in "${order[@]}"; do
        [ -n "${SKIP[$t]:-}" ] && continue
        run_round "$t" "$rep"
    done
done

# summary: median [min-max] over the rounds that came up
summary() {   # summary TUNNEL COLUMN
    local k
    k=$(head -1 "$CSV" | tr ',' '\n' | grep -nx "$2" | cut -d: -f1)
    awk -F, -v t="$1" -v k="$k" '$1==t && $3=="OK" && $k!="NA" { print $k }' "$CSV" | sort -g |
        awk '{ v[NR]=$1 } END { if (!NR) { printf "NA"; exit }
              m = (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2
              if (NR==1) printf "%s", m; else printf "%s [%s–%s]", m, v[1], v[NR] }'
}
echo
echo "rootless.sh run $RUN_ID, $PB_REPS rounds, TCP ${PB_DUR} s each way, $PB_PINGS RTT probes at 10 ms; $(nproc) CPUs"
echo
echo "| tunnel | TCP up Gbit/s | TCP down | TCP RTT median ms | ping median ms | CPU % cli/gw, up / down |"
echo "|---|---|---|---|---|---|"
for t in "${TUNNELS[@]}"; do
    n=$(basename "$t" .sh)
    if [ -n "${SKIP[$t]:-}" ]; then echo "| $n | skipped: ${SKIP[$t]} | | | | |"; continue; fi
    echo "| $n | $(summary "$n" tcp_up_gbps) | $(summary "$n" tcp_down_gbps) | $(summary "$n" tcprtt_med_ms) | $(summary "$n" ping_med_ms) | $(summary "$n" cpu_cli_tcp_up | cut -d' ' -f1)/$(summary "$n" cpu_gw_tcp_up | cut -d' ' -f1), $(summary "$n" cpu_cli_tcp_down | cut -d' ' -f1)/$(summary "$n" cpu_gw_tcp_down | cut -d' ' -f1) |"
done
echo
echo "rounds: $CSV"
