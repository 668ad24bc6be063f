# shellcheck shell=bash
# dstm: the project's own DSTM gateway as a plug-in for the shared tunnel
# benchmark harness (../shared/bench/run.sh; interface at the top of run.sh).
#
#   bash ../shared/bench/run.sh [-q|-n ...] bench/tunnels/dstm.sh \
#        bench/tunnels/dstm-tls.sh bench/tunnels/dstm-plain.sh
#
# Per round, everything lives in $TUNNEL_WORK (a fresh directory):
#   gw/gateway.yaml, gw/state (embedded CA, lease store), gw/admin.sock,
#   cli/ (client key, certificate, status), gw.log, cli.log
# The flow is the product's real one (as scripts/demo.sh): dstm-gateway init
# (CA + config), dstm-gateway run in pb-gw, dstm-gateway token, dstm-client
# enroll (key generated in pb-cli, root pinned by fingerprint), dstm-client up.
# Enrollment and the TSP-SSL control session are part of "up s".
#
# Topology used: gateway listens on [2001:db8:1::1]:3653 (TCP+UDP), pool
# 192.0.2.0/24 with inner gateway 192.0.2.1; the gateway routes its pool into
# its own TUN device (pb-dstmg); the client installs full-tunnel routes
# (0.0.0.0/1, 128.0.0.0/1) on its TUN device pb-dstmc, so $SRV_NET goes
# through the tunnel. The harness's own PKI ($PKI_DIR) is not used: the
# gateway's embedded CA issues the certificates, as in production.
#
# Environment:
#   DSTM_TRANSPORT  dtls (default) | tls | plain   (client up --transport;
#                   plain = IPv4-in-IPv6, IP protocol 4, unencrypted, needs
#                   init --plain, which this plug-in adds for that variant only)
#   DSTM_BIN        directory with dstm-gateway and dstm-client
#                   (default: ../../bin relative to this file, i.e. make build)
#   DSTM_VARIANT_BIN  set by a wrapper for its rounds only, like DSTM_VARIANT:
#                   another build's directory, to compare two builds in one run
#   DSTM_LOG_LEVEL  log level of both ends (default info)
#   DSTM_ACCESS_RULES  if set to N > 0, the default policy gets N outbound access rules
#                   (N-1 that never match this traffic, then one allowing $SRV_NET), so
#                   every packet goes through the rule set and connection tracking;
#                   dstm-acl.sh sets 100 for its rounds (issue 17's comparison)
#   DSTM_METRICS    if set (e.g. 127.0.0.1:9653), the gateway serves Prometheus
#                   metrics there inside pb-gw, and tunnel_down saves a scrape
#                   to $TUNNEL_WORK/metrics.txt (data-plane drops by reason)
#   DSTM_VARIANT_PROXY  set by dstm-rootless.sh: the client runs rootless (uid 65534, no
#                   capabilities, `up --proxy socks5://127.0.0.1:1080`, no TUN device);
#                   measured by bench/rootless.sh only, which sets DSTM_TCPRTT (run.sh's
#                   ping and iperf3 need a route, and a SOCKS5 proxy gives none)
# dstm-tls.sh and dstm-plain.sh next to this file set DSTM_VARIANT and
# source it, so the three variants can be compared in one harness run. (run.sh
# sources every plug-in into the same shell before each round, so the variable
# the wrappers set must not leak into the next plain dstm.sh: the caller's
# DSTM_TRANSPORT is captured once, and DSTM_VARIANT is consumed here.)

: "${DSTM_TRANSPORT_DEFAULT:=${DSTM_TRANSPORT:-dtls}}"
DSTM_TRANSPORT=${DSTM_VARIANT:-$DSTM_TRANSPORT_DEFAULT}
unset DSTM_VARIANT
DSTM_PLUGIN_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
: "${DSTM_BIN_DEFAULT:=${DSTM_BIN:-$(cd "$DSTM_PLUGIN_DIR/../../bin" 2>/dev/null && pwd)}}"
DSTM_BIN=${DSTM_VARIANT_BIN:-$DSTM_BIN_DEFAULT}
unset DSTM_VARIANT_BIN
: "${DSTM_ACCESS_RULES_DEFAULT:=${DSTM_ACCESS_RULES:-0}}"
DSTM_ACCESS_RULES=${DSTM_VARIANT_ACCESS:-$DSTM_ACCESS_RULES_DEFAULT}
unset DSTM_VARIANT_ACCESS
DSTM_PROXY=${DSTM_VARIANT_PROXY:-}
unset DSTM_VARIANT_PROXY
DSTM_SOCKS=127.0.0.1:1080
DSTM_GW_BIN=$DSTM_BIN/dstm-gateway
DSTM_CLI_BIN=$DSTM_BIN/dstm-client
DSTM_LOG_LEVEL=${DSTM_LOG_LEVEL:-info}
DSTM_METRICS=${DSTM_METRICS:-}
DSTM_PORT=3653
DSTM_GW_DEV=pb-dstmg        # gateway TUN device (tep.device) in pb-gw
DSTM_CLI_DEV=pb-dstmc       # client TUN device in pb-cli
DSTM_IDENTITY=pb-client@bench.test

tunnel_check() {
    [ -x "$DSTM_GW_BIN" ] && [ -x "$DSTM_CLI_BIN" ] ||
        { echo "dstm binaries not found in ${DSTM_BIN:-?} (make build in the repository)"; return 1; }
    case $DSTM_TRANSPORT in
        dtls | tls | plain) ;;
        *) echo "DSTM_TRANSPORT=$DSTM_TRANSPORT: want dtls, tls or plain"; return 1 ;;
    esac
    if [ -n "$DSTM_PROXY" ] && [ ! -x "${DSTM_TCPRTT:-}" ]; then
        echo "the rootless variant is measured by bench/rootless.sh (a SOCKS5 proxy gives run.sh no route to ping or iperf3 through)"
        return 1
    fi
    return 0
}

tunnel_versions() {
    echo "dstm ($DSTM_TRANSPORT): $("$DSTM_GW_BIN" version 2>/dev/null | head -1), $("$DSTM_CLI_BIN" version 2>/dev/null | head -1), $(go version -m "$DSTM_GW_BIN" 2>/dev/null | head -1 | awk '{print "built with " $2}')"
}

tunnel_info() {
    local tr mtu
    tr=$(_dstm_status_field transport)
    mtu=$(nsx "$NS_CLI" cat "/sys/class/net/$DSTM_CLI_DEV/mtu" 2>/dev/null)
    case $DSTM_TRANSPORT in
        dtls)  echo "DSTM gateway $("$DSTM_GW_BIN" version 2>/dev/null | awk '{print $2}'); TSP-SSL control (TCP/IPv6 port $DSTM_PORT); data: DTLS 1.2 handshake (pion/dtls v3), packets in data records (tunnel/record) once agreed, over UDP/IPv6 port $DSTM_PORT, --transport dtls (no TLS fallback); status transport=${tr:-?}; inner MTU ${mtu:-?}; certs from the embedded CA (ECDSA P-256)" ;;
        tls)   echo "DSTM gateway $("$DSTM_GW_BIN" version 2>/dev/null | awk '{print $2}'); TSP-SSL control; data: IPv4 packets framed in the TLS stream (TCP/IPv6 port $DSTM_PORT), --transport tls; status transport=${tr:-?}; inner MTU ${mtu:-?}" ;;
        plain) echo "DSTM gateway $("$DSTM_GW_BIN" version 2>/dev/null | awk '{print $2}'); TSP-SSL control; data: plain IPv4-in-IPv6 (IP protocol 4, v4v6), unencrypted, --transport plain; status transport=${tr:-?}; inner MTU ${mtu:-?}" ;;
    esac
    [ -n "$DSTM_PROXY" ] && echo "  rootless client: uid 65534, no capabilities, no TUN device; SOCKS5 proxy on $DSTM_SOCKS in pb-cli into gVisor's netstack"
    [ "$DSTM_ACCESS_RULES" -gt 0 ] && echo "  with $DSTM_ACCESS_RULES outbound access rules in the default policy (connection tracking on)"
    return 0
}

# _dstm_status_field NAME: one field of dstm-client status --json (empty if none)
_dstm_status_field() {
    [ -n "${TUNNEL_WORK:-}" ] && [ -d "$TUNNEL_WORK/cli" ] || return 0
    nsx "$NS_CLI" "$DSTM_CLI_BIN" --state-dir "$TUNNEL_WORK/cli" status --json 2>/dev/null |
        jq -r --arg f "$1" '.[$f] // empty' 2>/dev/null
}

_dstm_gw() { nsx "$NS_GW" "$DSTM_GW_BIN" -c "$TUNNEL_WORK/gw/gateway.yaml" "$@"; }
_dstm_cli() { nsx "$NS_CLI" "$DSTM_CLI_BIN" --state-dir "$TUNNEL_WORK/cli" --log-level "$DSTM_LOG_LEVEL" "$@"; }

# _dstm_access_rules N prints the default policy's access block: N-1 rules for other
# networks and ports, then the one that allows the benchmark's server network.
_dstm_access_rules() {
    local n=$1 i
    echo "    access:"
    echo "      outbound:"
    for ((i = 1; i < n; i++)); do
        printf '        - {to: [10.%d.%d.0/24], proto: tcp, ports: [%d]}\n' $((i / 256)) $((i % 256)) $((1000 + i))
    done
    printf '        - {to: [%s]}\n' "$SRV_NET"
}

tunnel_up() {
    local d=$TUNNEL_WORK plain=() fp token
    [ "$DSTM_TRANSPORT" = plain ] && plain=(--plain)
    mkdir -p "$d/gw" "$d/cli"

    # CA + configuration, then adapt the generated file: our device name, log level
    _dstm_gw init --state-dir "$d/gw/state" --listen "[$GW6]:$DSTM_PORT" \
        --ipv6 "$GW6" --server-ip "$GW6" --pool "$POOL4" --inner-v4 "$GW_TUN4" \
        --admin-socket "$d/gw/admin.sock" "${plain[@]}" >"$d/init.txt" || { echo "init failed"; cat "$d/init.txt"; return 1; }
    cat "$d/init.txt"
    fp=$(tail -n 1 "$d/init.txt")
    sed -i -e "s/^\(  device:\).*/\1 $DSTM_GW_DEV/" -e "s/^\(  level:\).*/\1 $DSTM_LOG_LEVEL/" "$d/gw/gateway.yaml"
    [ -n "$DSTM_METRICS" ] && sed -i "s/^\(  listen:\) \"\".*/\1 \"$DSTM_METRICS\"/" "$d/gw/gateway.yaml"
    if [ "$DSTM_ACCESS_RULES" -gt 0 ]; then
        _dstm_access_rules "$DSTM_ACCESS_RULES" >"$d/access.yaml"
        sed -i "/^  default:/r $d/access.yaml" "$d/gw/gateway.yaml"
    fi
    _dstm_gw check-config >"$d/check-config.txt" 2>&1 || { echo "check-config failed"; cat "$d/check-config.txt"; return 1; }

    pb_bg "$NS_GW" "$d/gw.log" "$DSTM_GW_BIN" -c "$d/gw/gateway.yaml" run
    pb_wait 15 _dstm_gw status || { echo "gateway did not come up"; tail -n 20 "$d/gw.log"; return 1; }
    _dstm_gw status

    token=$(_dstm_gw token "$DSTM_IDENTITY" --ttl 10m --json | jq -r '.token // empty')
    [ -n "$token" ] || { echo "no enrollment token"; return 1; }
    _dstm_cli enroll --gateway "[$GW6]:$DSTM_PORT" --token "$token" --fingerprint "$fp" ||
        { echo "enroll failed"; return 1; }

    if [ -n "$DSTM_PROXY" ]; then
        chown -R 65534:65534 "$d/cli"
        pb_bg "$NS_CLI" "$d/cli.log" setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all \
            "$DSTM_CLI_BIN" --state-dir "$d/cli" --log-level "$DSTM_LOG_LEVEL" \
            up --gateway "[$GW6]:$DSTM_PORT" --transport "$DSTM_TRANSPORT" --proxy "socks5://$DSTM_SOCKS" --dns off
        pb_wait 20 _dstm_cli status || { echo "client did not come up"; tail -n 20 "$d/cli.log"; tail -n 20 "$d/gw.log"; return 1; }
        _dstm_cli status
        pb_wait 10 nsx "$NS_CLI" "$DSTM_TCPRTT" -connect "$SRV4:${DSTM_ECHO_PORT:-7007}" -socks5 "$DSTM_SOCKS" -n 1 ||
            { echo "$SRV4 not reachable through the proxy"; return 1; }
        return 0
    fi
    pb_bg "$NS_CLI" "$d/cli.log" "$DSTM_CLI_BIN" --state-dir "$d/cli" --log-level "$DSTM_LOG_LEVEL" \
        up --gateway "[$GW6]:$DSTM_PORT" --transport "$DSTM_TRANSPORT" --device "$DSTM_CLI_DEV" --dns off
    pb_wait 20 _dstm_cli status || { echo "client did not come up"; tail -n 20 "$d/cli.log"; tail -n 20 "$d/gw.log"; return 1; }
    _dstm_cli status
    pb_wait 10 pb_reach || { echo "$SRV4 not reachable through the tunnel"; return 1; }
    nsx "$NS_CLI" ip -4 route show
    return 0
}

tunnel_down() {
    if [ -n "$DSTM_METRICS" ] && [ -n "${TUNNEL_WORK:-}" ]; then
        nsx "$NS_GW" curl -s --max-time 2 "http://$DSTM_METRICS/metrics" >"$TUNNEL_WORK/metrics.txt" 2>/dev/null
    fi
    # client first (it releases its lease and removes its TUN device and
    # routes on SIGTERM), then the gateway
    pb_kill $TUNNEL_CLI_PIDS
    pb_kill_tunnel
    # a killed or crashed client may leave its device behind (it carries the routes)
    nsx "$NS_CLI" ip link del "$DSTM_CLI_DEV" 2>/dev/null
    nsx "$NS_GW" ip link del "$DSTM_GW_DEV" 2>/dev/null
    return 0
}
