#!/usr/bin/env bash
# Run quick grids one at a time, in the order given, at low CPU priority on one thread; resumable.
#   experiments/run_quick_suite.sh                      # every grid of the records registry, runs/<name>
#   experiments/run_quick_suite.sh oh2025_mechanism liu2020_transformer:confirm   # GRID[:PROFILE], in order
# A grid whose runs are finished is re-summarized in seconds (finished runs are skipped), so rerunning the
# script after an interruption continues where it stopped. Each grid's wall time, its CPU time (user + system of
# the grid's processes) and the 1-minute load average at its start and end go to runs/logs/times.tsv and, with
# the grid's compact records, to records/ (docs/formats.md, "Records"; the budget table of RESULTS.md).
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
GRIDS=("$@")
[ ${#GRIDS[@]} -eq 0 ] && mapfile -t GRIDS < <("$PY" -m landscape.experiment.report --list-grids)
mkdir -p runs/logs
export OMP_NUM_THREADS=1
# CPU seconds (user + system) of the finished child processes so far, into CPU (`times`, in this shell)
cpu_now() { local f; f=$(mktemp); times > "$f"; CPU=$(tail -1 "$f" | awk '{split($1,u,"m"); split($2,s,"m");
  print (u[1]*60 + u[2]) + (s[1]*60 + s[2])}'); rm -f "$f"; }
for spec in "${GRIDS[@]}"; do
  g=${spec%%:*}; p=quick; out="runs/$g"
  [ "$spec" != "$g" ] && p=${spec#*:} && out="runs/$g-$p"
  t0=$(date +%s); load0=$(cut -d' ' -f1 /proc/loadavg); cpu_now; c0=$CPU
  echo "$(date -u +%FT%TZ) start $g ($p)" >&2
  nice -n 10 "$PY" -m landscape.experiment "experiments/$g.toml" --profile "$p" --out "$out" > "runs/logs/$g-$p.log" 2>&1
  rc=$?
  wall=$(( $(date +%s) - t0 )); load1=$(cut -d' ' -f1 /proc/loadavg); cpu_now
  used=$(awk -v a="$CPU" -v b="$c0" 'BEGIN{printf "%.0f", a - b}')
  printf '%s\t%s\t%s\t%s\trc=%s\tload=%s-%s\tcpu=%s\n' "$(date -u +%FT%TZ)" "$g" "$p" "$wall" "$rc" "$load0" "$load1" \
    "$used" >> runs/logs/times.tsv
  echo "$(date -u +%FT%TZ) $g ($p) rc=$rc ($wall s)" >&2
  [ $rc -ge 128 ] && exit $rc   # interrupted: stop the suite (rerun to resume)
  [ $rc -eq 0 ] && "$PY" -m landscape.experiment.records "$out" "records/${out#runs/}" --seconds "$wall" \
    --cpu-seconds "$used" --load "$load0-$load1"
done
