# shellcheck shell=bash
# dstm-plain: the DSTM gateway plug-in (dstm.sh) with the plain data transport
# (dstm-client up --transport plain), so that run.sh can compare the variants
# side by side: run.sh .../dstm.sh .../dstm-tls.sh .../dstm-plain.sh
DSTM_VARIANT=plain
# shellcheck source=dstm.sh
. "$(dirname "${BASH_SOURCE[0]}")/dstm.sh"
