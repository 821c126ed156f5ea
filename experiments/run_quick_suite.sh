#!/usr/bin/env bash
# Run the round-2 quick grids one at a time, in priority order, at low CPU priority; resumable.
#   experiments/run_quick_suite.sh                 # every grid below, runs/<name>, logs in runs/logs/
#   experiments/run_quick_suite.sh oh2025_mechanism liu2020_transformer   # just these, in this order
# A grid whose runs/<name>/summary.json exists is re-summarized in seconds (finished runs are skipped), so
# rerunning the script after an interruption continues where it stopped. Wall times go to runs/logs/times.tsv.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
GRIDS=("$@")
[ ${#GRIDS[@]} -eq 0 ] && GRIDS=(zaeemzadeh2018_transitions oh2025_mechanism liu2020_transformer
                                 orhan2018_mechanism orhan2018_biasreg orhan2018_size)
mkdir -p runs/logs
for g in "${GRIDS[@]}"; do
  t0=$(date +%s)
  echo "$(date -u +%FT%TZ) start $g" >&2
  nice -n 15 "$PY" -m landscape.experiment "experiments/$g.toml" --out "runs/$g" > "runs/logs/$g.log" 2>&1
  rc=$?
  printf '%s\t%s\t%s\trc=%s\n' "$(date -u +%FT%TZ)" "$g" "$(( $(date +%s) - t0 ))" "$rc" >> runs/logs/times.tsv
  echo "$(date -u +%FT%TZ) $g rc=$rc ($(( $(date +%s) - t0 )) s)" >&2
  [ $rc -ge 128 ] && exit $rc   # interrupted: stop the suite (rerun to resume)
done
