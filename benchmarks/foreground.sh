#!/usr/bin/env bash
# Run a latency benchmark in the foreground of a shared machine: Linux shares the CPU between autogroups
# (sessions) by their nice value, so for the command's duration every other autogroup is set to nice 19 and the
# command's own to -10; the previous values are restored afterwards. Without the rights to do so (not root),
# the command runs as it is. The result file records the priority the benchmark actually had.
#
#   benchmarks/foreground.sh python benchmarks/serving.py --concurrency 16 --seconds 20
set -u
if [ "${EVOREC_FOREGROUND:-}" != "1" ]; then
  EVOREC_FOREGROUND=1 exec setsid -w "$0" "$@"  # a session (autogroup) of its own
fi
declare -A previous
for folder in /proc/[0-9]*; do
  [ "${folder#/proc/}" = "$$" ] && continue
  group=$(cat "$folder/autogroup" 2>/dev/null) || continue
  [ -n "$group" ] || continue  # a kernel that does not show autogroups
  previous[${folder#/proc/}]=${group##* }
  echo 19 2>/dev/null > "$folder/autogroup"
done
echo -10 2>/dev/null > /proc/$$/autogroup
"$@"
status=$?
for process in "${!previous[@]}"; do echo "${previous[$process]}" 2>/dev/null > "/proc/$process/autogroup"; done
exit $status
