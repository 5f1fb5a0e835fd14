#!/bin/sh
# Every benchmark of bench/, one after the other (about 35 minutes on 2 vCPUs; each
# script stops by itself). Results: bench/results/*.json, summarised in bench/RESULTS.md;
# the letters append to bench/RESULTS-letters.md.
# The correctness check of the ingestion (old vs new, row by row) is separate:
#   .venv/bin/python bench/check_ingest.py
set -e
cd "$(dirname "$0")/.."
PY=.venv/bin/python
start=$(date +%s)
$PY bench/bench_ingest.py
$PY bench/bench_sweep.py
$PY bench/bench_sweep.py --vacuum-between
$PY bench/bench_sweep.py --clustered
$PY bench/bench_sweep.py --batch 500
$PY bench/bench_sweep.py --due-by-clock
$PY bench/bench_sweep.py --revision 0001 --legacy
$PY bench/bench_sms_pipeline.py
$PY bench/bench_letters.py
$PY bench/bench_sizes.py
echo "all benchmarks: $(( $(date +%s) - start )) s"
