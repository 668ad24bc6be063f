# shellcheck shell=bash
# dstm-tls: the DSTM gateway plug-in (dstm.sh) with the tls data transport
# (dstm-client up --transport tls), so that run.sh can compare the variants
# side by side: run.sh .../dstm.sh .../dstm-tls.sh .../dstm-plain.sh
DSTM_VARIANT=tls
# shellcheck source=dstm.sh
. "$(dirname "${BASH_SOURCE[0]}")/dstm.sh"
