#!/usr/bin/env bash
# Run a benchmark in the foreground of a shared machine: Linux shares the CPU between autogroups (sessions) by
# their nice value, so for the command's duration every other autogroup is set to nice 19 and the command's own
# to -10; the previous values are restored afterwards. Sessions started meanwhile are settled every 2 s: those
# the command starts (sandboxes run in sessions of their own) get -10, all others 19. Without the rights to do
# so (not root), the command runs as it is. The result file records the priority the benchmark actually had.
# Two foreground benchmarks would only share the machine again: a second one waits for the first to end.
#
#   benchmarks/foreground.sh python benchmarks/serving.py --concurrency 16 --seconds 20
set -u
if [ "${EVOREC_FOREGROUND:-}" != "1" ]; then
  EVOREC_FOREGROUND=1 exec setsid -w "$0" "$@"  # a session (autogroup) of its own
fi
if [ "${EVOREC_FOREGROUND_HELD:-}" != "1" ]; then  # one at a time (a call inside the command holds it already)
  exec 9>"${TMPDIR:-/tmp}/evorec-foreground.lock"
  if ! flock -n 9; then
    echo "foreground.sh: waiting for another foreground benchmark to end" >&2
    flock 9
  fi
fi
declare -A previous wanted

descends_from_us() {  # whether process $1 is this script's descendant (its parent chain reaches $$)
  local pid=$1 line
  while [ "$pid" -gt 1 ]; do
    [ "$pid" = "$$" ] && return 0
    pid=0
    while read -r line; do
      if [ "${line%%:*}" = "PPid" ]; then pid=${line##*[[:space:]]}; break; fi
    done 2>/dev/null < "/proc/$1/status" || return 1  # the process may have ended
    set -- "$pid"
  done
  return 1
}

settle() {  # each process seen for the first time: its autogroup's value noted, then set to ours or 19
  local folder pid group
  for folder in /proc/[0-9]*; do
    pid=${folder#/proc/}
    [ -n "${wanted[$pid]+x}" ] && continue
    group=$(cat "$folder/autogroup" 2>/dev/null) || continue
    [ -n "$group" ] || continue  # a kernel that does not show autogroups
    if [ "$pid" = "$$" ] || descends_from_us "$pid"; then wanted[$pid]=-10; else wanted[$pid]=19; fi
    previous[$pid]=${group##* }
    echo "${wanted[$pid]}" 2>/dev/null > "$folder/autogroup"
  done
}

restore() {
  local pid
  for pid in "${!previous[@]}"; do echo "${previous[$pid]}" 2>/dev/null > "/proc/$pid/autogroup"; done
}

settle
EVOREC_FOREGROUND_HELD=1 "$@" 9>&- &
command=$!
trap 'kill -TERM "$command" 2>/dev/null' INT TERM
while kill -0 "$command" 2>/dev/null; do
  settle
  sleep 2
done
wait "$command"
status=$?
restore
exit $status
