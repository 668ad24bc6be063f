#!/usr/bin/env bash
# Turns Go benchmark output into one "BENCH <name> <value> <unit>" line per headline figure.
# The figures and the benchmark metric each one is read from are listed in bench/figures.tsv:
#   <figure name> <TAB> <benchmark name, without -N suffix> <TAB> <metric unit as reported>
# A figure whose benchmark did not run is reported as missing (and the script exits 1).
set -euo pipefail
out=${1:?usage: bench-summary.sh bench-output.txt}
table=${FIGURES:-$(dirname "$0")/../bench/figures.tsv}
status=0
while IFS=$'\t' read -r name bench unit; do
  [[ -z "$name" || "$name" == \#* ]] && continue
  value=$(awk -v b="$bench" -v u="$unit" '
    { n=$1; sub(/-[0-9]+$/, "", n) }
    n==b { for (i=3; i<NF; i++) if ($(i+1)==u) v=$i }
    END { if (v!="") print v }' "$out")
  if [[ -n "$value" ]]; then
    echo "BENCH $name $value $unit"
  else
    echo "BENCH $name missing $unit (benchmark $bench did not report it)" >&2
    status=1
  fi
done < "$table"
exit $status
