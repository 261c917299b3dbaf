#!/usr/bin/env bash
# The offline CPU demo, from a fresh clone: set up .venv, then sweep -> ingest -> compare -> check -> report.
# One factor, Adam's bias correction on/off (examples/demo/sweep.toml), decided by the claims in
# examples/demo/claims.toml. It prints the set-up, training and analysis times separately.
#
#   bash examples/demo/run.sh                       # generated task (no data needed)
#   bash examples/demo/run.sh --data-dir glue_data  # RTE from a local GLUE folder
#
# Environment: STABSTAT_VENV (default .venv), DEMO_OUT (default demo-out), DEMO_SEEDS (override seeds),
# DEMO_SWEEP (another sweep file, e.g. the reduced one the end-to-end test uses).
set -euo pipefail
cd "$(dirname "$0")/../.."

data_dir=""
while [ $# -gt 0 ]; do
  case "$1" in
    --data-dir) data_dir="$2"; shift 2 ;;
    --data-dir=*) data_dir="${1#*=}"; shift ;;
    -h|--help) sed -n 2,8p "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
done

venv="${STABSTAT_VENV:-.venv}"
out="${DEMO_OUT:-demo-out}"
started=$(date +%s)
setup_s=0

if [ ! -x "$venv/bin/stabstat-run" ]; then
  echo "==> setting up $venv (torch 2.13.0 CPU first, then stabstat with its extras)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q torch==2.13.0   # pinned: an unpinned torch pulls a multi-GB CUDA build
  "$venv/bin/pip" install -q -e '.[runner,dev,slurm,ray,s3]'
  setup_s=$(( $(date +%s) - started ))
  echo "   set up in ${setup_s} s"
fi
mkdir -p "$out"
# A real browser for the report's browser test (Debian's chromium), when we may install it. It
# downloads and unpacks while the runs train (~2 minutes alone) and is waited for at the end.
browser_pid=""
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "==> installing chromium for the browser test in the background (log: $out/chromium-install.log)"
  (apt-get install -y -q chromium || { apt-get update -q && apt-get install -y -q chromium; }) \
    >"$out/chromium-install.log" 2>&1 &
  browser_pid=$!
fi
export PATH="$(cd "$venv" && pwd)/bin:$PATH" HF_HUB_OFFLINE=1

if [ -n "${DEMO_SWEEP:-}" ]; then
  sweep="$DEMO_SWEEP"; extra=()
  [ -n "$data_dir" ] && extra=(--data-dir "$data_dir")
elif [ -n "$data_dir" ]; then
  sweep=examples/demo/sweep_rte.toml; extra=(--data-dir "$data_dir")
else
  sweep=examples/demo/sweep.toml; extra=()
fi
seeds=()
[ -n "${DEMO_SEEDS:-}" ] && seeds=(--seeds "$DEMO_SEEDS")
db="$out/stabstat.duckdb"

# --stop-doomed default: a run whose lowest layer's gradient norm collapsed while its loss stayed at
# the class-balance loss is stopped at 30% of its steps and counted as failed (README, "stabstat early").
echo "==> training: stabstat-run $sweep --out $out/runs --jobs 2 --stop-doomed default"
train_started=$(date +%s)
stabstat-run "$sweep" --out "$out/runs" --jobs 2 --stop-doomed default "${extra[@]}" "${seeds[@]}"
train_s=$(( $(date +%s) - train_started ))
analysis_started=$(date +%s)
echo "==> stabstat ingest $out/runs --db $db"
stabstat ingest "$out/runs" --db "$db"
echo "==> stabstat compare --by bias_correction"
stabstat compare --by bias_correction --db "$db"
echo "==> stabstat check examples/demo/claims.toml"
check_rc=0
stabstat check examples/demo/claims.toml --db "$db" || check_rc=$?
[ "$check_rc" -le 1 ] || exit "$check_rc"   # 1 = a claim FAILed: a finding, not a crash
echo "==> stabstat report"
stabstat report --by bias_correction --claims examples/demo/claims.toml --db "$db" --out "$out/report.html"
analysis_s=$(( $(date +%s) - analysis_started ))
if [ -n "$browser_pid" ]; then
  wait "$browser_pid" && echo "chromium installed (the browser test will use it)" \
    || echo "(chromium not installed: the browser test will be skipped; see $out/chromium-install.log)"
fi
db_abs="$(cd "$out" && pwd)/stabstat.duckdb"
echo
echo "Done in $(( $(date +%s) - started )) s (set-up ${setup_s} s, training ${train_s} s, analysis ${analysis_s} s)."
echo "Report: $(cd "$out" && pwd)/report.html"
echo "Database: $db_abs"
echo
echo "Next steps (first: source $venv/bin/activate):"
echo "  stabstat runs --db $db"
echo "  stabstat gradients --by bias_correction --db $db     # the lower layers' gradient collapse"
echo "  stabstat early --db $db                              # could failures be told sooner? (stopped runs left out)"
echo "  stabstat check examples/demo/claims.toml --db $db"
echo "  python examples/demo/repeat_rate.py --db $db         # how often would a repeat decide each claim?"
echo "Re-running this script resumes: finished runs are not trained again."
