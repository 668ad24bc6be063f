# Shared by demo.sh and demo-cluster.sh (sourced, not run): output, namespaces, daemons
# started by their own PID and stopped by it, and the cleanup that removes everything the
# demo made, also when it fails or is interrupted. The demo sets W (its work directory), PIDS
# (an array), ALL_NS (its namespaces) and RESULT before it installs `trap cleanup EXIT`.

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
wait_for() { # wait_for SECONDS DESCRIPTION CMD...
  local t=$1 what=$2; shift 2
  for ((i = 0; i < t * 10; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "   timed out after ${t}s waiting for $what"; return 1
}
# start NAME NS LOG CMD...: run CMD in NS in the background. The shell in the namespace writes
# its own PID and execs CMD, so $W/NAME.pid holds the daemon's PID (not that of a subshell or
# of ip), which is appended to PIDS.
start() {
  local name=$1 ns=$2 log=$3; shift 3
  ip netns exec "$ns" sh -c 'echo $$ >"$0"; exec "$@"' "$W/$name.pid" "$@" >"$log" 2>&1 </dev/null &
  wait_for 5 "$name to start" test -s "$W/$name.pid" || return 1
  PIDS+=("$(cat "$W/$name.pid")")
}
alive() { [ -e "/proc/$1" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }
stop() { # stop PID: SIGTERM (the gateway and the client then remove their routes and devices), SIGKILL after 10 s
  local p=$1
  alive "$p" || return 0
  kill -TERM "$p" 2>/dev/null || return 0
  for ((i = 0; i < 100; i++)); do alive "$p" || return 0; sleep 0.1; done
  echo "   $p did not stop on SIGTERM; killing it"; kill -KILL "$p" 2>/dev/null || true
}
cleanup() {
  local status=$? left=() ns p
  trap - EXIT INT TERM
  set +e
  for ((k = ${#PIDS[@]} - 1; k >= 0; k--)); do stop "${PIDS[k]}"; done
  for ns in $ALL_NS; do # anything still in our namespaces was started by this demo
    for p in $(ip netns pids "$ns" 2>/dev/null); do stop "$p"; done
  done
  wait 2>/dev/null
  for ns in $ALL_NS; do ip netns del "$ns" 2>/dev/null; done
  for p in "${PIDS[@]}"; do alive "$p" && left+=("process $p"); done
  for ns in $ALL_NS; do [ -e "/run/netns/$ns" ] && left+=("namespace $ns"); done
  if [ ${#left[@]} -gt 0 ]; then RESULT="FAILED: left behind: ${left[*]}"; fi
  if [ "${KEEP:-}" = 1 ]; then echo "logs kept in $W"; else rm -rf "$W"; fi
  echo
  echo "$RESULT"
  case $RESULT in OK*) [ "$status" = 0 ] || exit "$status"; exit 0 ;; *) exit 1 ;; esac
}
