#!/usr/bin/env bash
# The reliability campaign (docs/reliability.md): the scenarios of gateway/e2e at full size
# against the real binaries in network namespaces, then every fuzz target for CHAOS_FUZZTIME
# (default 10m of CPU each). The results replace the "Latest run" section of
# docs/reliability.md, with the commit and the machine's load. Needs root.
set -uo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
report=${CHAOS_REPORT:-bin/chaos-report.md}
mkdir -p "$(dirname "$report")"
: >"$report"
load() { cut -d' ' -f1-3 /proc/loadavg; }
echo "Commit $(git describe --tags --always --dirty), $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), load $(load) at the start." >>"$report"
rows=$(mktemp)
status=0
DSTM_CHAOS=full DSTM_CHAOS_REPORT=$rows CGO_ENABLED=1 $GO test -count=1 -timeout 90m -v \
  -run '^(TestIdleMemoryPerSession|TestFloods|TestKillUnderLoad|TestSessionChurn|TestFullDisk)$' ./gateway/e2e/ \
  >bin/chaos-e2e.log 2>&1 || status=1
grep -E '^--- (PASS|FAIL)' bin/chaos-e2e.log | sed 's/^/    /'
cat "$rows" >>"$report"
rm -f "$rows"
{
  echo
  echo "### Fuzzing"
  echo
  echo "${CHAOS_FUZZTIME:-10m} of one CPU per target (corpus entries kept in Go's fuzz cache), load $(load) before:"
  echo
  echo '```'
} >>"$report"
FUZZTIME=${CHAOS_FUZZTIME:-10m} FUZZJOBS=${CHAOS_FUZZJOBS:-2} GO=$GO scripts/fuzz.sh | tee -a "$report" || status=1
{
  echo '```'
  echo
  echo "Load $(load) at the end."
} >>"$report"
# Replace the Latest run section of docs/reliability.md.
awk -v f="$report" '
  /<!-- chaos:begin -->/ { print; while ((getline line < f) > 0) print line; skip=1; next }
  /<!-- chaos:end -->/ { skip=0 }
  !skip { print }' docs/reliability.md >docs/reliability.md.new && mv docs/reliability.md.new docs/reliability.md
echo "report: $report (also in docs/reliability.md); e2e log: bin/chaos-e2e.log"
exit $status
