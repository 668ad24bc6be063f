#!/usr/bin/env bash
# Runs every fuzz target of the module for FUZZTIME each (a duration, or a count like 100000x),
# one worker per target (-parallel 1), so that a duration is CPU time; FUZZJOBS targets run at
# once (default 1). The corpus each target grows is kept in Go's fuzz cache
# ($(go env GOCACHE)/fuzz); its size is reported.
#
# Go 1.26's fuzz coordinator can end a time-bounded run with "context deadline exceeded" and no
# crasher (golang/go#75804): a failed run counts only when it wrote a reproducer under
# testdata/fuzz. Prints one "FUZZ <pkg> <target> <corpus entries> <result>" line per target.
set -uo pipefail
cd "$(dirname "$0")/.."
export GO=${GO:-go} FUZZTIME=${FUZZTIME:-10s}
export CACHE=$($GO env GOCACHE)/fuzz

one() {
  local pkg=$1 f=$2 dir before after log result
  dir=$($GO list -f '{{.Dir}}' "$pkg")
  before=$(ls "$dir/testdata/fuzz/$f" 2>/dev/null | sort)
  log=$(mktemp)
  if $GO test -run '^$' -fuzz "^$f\$" -fuzztime "$FUZZTIME" -parallel 1 "$pkg" >"$log" 2>&1; then
    result=ok
  else
    after=$(ls "$dir/testdata/fuzz/$f" 2>/dev/null | sort)
    if [[ "$before" == "$after" ]] && grep -q 'context deadline exceeded' "$log"; then
      result="ok (coordinator deadline without a reproducer, golang/go#75804)"
    else
      result=FAILED
      cat "$log" >&2
    fi
  fi
  rm -f "$log"
  echo "FUZZ $pkg $f $(ls "$CACHE/$pkg/$f" 2>/dev/null | wc -l) $result"
  [[ $result != FAILED ]]
}
export -f one

for pkg in $($GO list ./...); do
  for f in $($GO test -list '^Fuzz' "$pkg" 2>/dev/null | grep '^Fuzz' || true); do
    echo "$pkg $f"
  done
done | xargs -P "${FUZZJOBS:-1}" -L 1 bash -c 'one "$0" "$1"'
