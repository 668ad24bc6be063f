# shellcheck shell=bash
# dstm-rootless: the DSTM gateway plug-in (dstm.sh) with the client in rootless mode
# (uid 65534, `dstm-client up --proxy socks5://...`, no TUN device). Measured by
# bench/rootless.sh, which reuses the shared harness's topology and iperf3 measurement and
# sends the traffic through the proxy; run.sh itself skips it (no route to ping through).
DSTM_VARIANT_PROXY=1
# shellcheck source=dstm.sh
. "$(dirname "${BASH_SOURCE[0]}")/dstm.sh"
