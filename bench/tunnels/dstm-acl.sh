# shellcheck shell=bash
# dstm-acl: the DSTM gateway plug-in (dstm.sh), DTLS, with 100 access rules in the default
# policy, so that run.sh compares the data path with and without them in one run:
# run.sh .../dstm.sh .../dstm-acl.sh
DSTM_VARIANT_ACCESS=100
# shellcheck source=dstm.sh
. "$(dirname "${BASH_SOURCE[0]}")/dstm.sh"
