#!/usr/bin/env bash
# Run quick grids one at a time, in the order given, at low CPU priority on one thread; resumable.
#   experiments/run_quick_suite.sh                      # every grid of the records registry, runs/<name>
#   experiments/run_quick_suite.sh oh2025_mechanism liu2020_transformer:confirm   # GRID[:PROFILE], in order
# A grid whose runs are finished is re-summarized in seconds (finished runs are skipped), so rerunning the
# script after an interruption continues where it stopped. Each grid's wall time and the 1-minute load average
# at its start and end go to runs/logs/times.tsv (the budget table of RESULTS.md quotes them); a finished grid's
# compact records are extracted into records/ (docs/formats.md, "Records").
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
GRIDS=("$@")
[ ${#GRIDS[@]} -eq 0 ] && mapfile -t GRIDS < <("$PY" -m landscape.experiment.report --list-grids)
mkdir -p runs/logs
export OMP_NUM_THREADS=1
for spec in "${GRIDS[@]}"; do
  g=${spec%%:*}; p=quick; out="runs/$g"
  [ "$spec" != "$g" ] && p=${spec#*:} && out="runs/$g-$p"
  t0=$(date +%s); load0=$(cut -d' ' -f1 /proc/loadavg)
  echo "$(date -u +%FT%TZ) start $g ($p)" >&2
  nice -n 10 "$PY" -m landscape.experiment "experiments/$g.toml" --profile "$p" --out "$out" > "runs/logs/$g-$p.log" 2>&1
  rc=$?
  printf '%s\t%s\t%s\t%s\trc=%s\tload=%s-%s\n' "$(date -u +%FT%TZ)" "$g" "$p" "$(( $(date +%s) - t0 ))" "$rc" \
    "$load0" "$(cut -d' ' -f1 /proc/loadavg)" >> runs/logs/times.tsv
  echo "$(date -u +%FT%TZ) $g ($p) rc=$rc ($(( $(date +%s) - t0 )) s)" >&2
  [ $rc -ge 128 ] && exit $rc   # interrupted: stop the suite (rerun to resume)
  [ $rc -eq 0 ] && "$PY" -m landscape.experiment.records "$out" "records/${out#runs/}" \
    --seconds "$(( $(date +%s) - t0 ))" --load "$load0-$(cut -d' ' -f1 /proc/loadavg)"   # the committed records
done
