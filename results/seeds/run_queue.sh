#!/usr/bin/env bash
# Runs the lines of a commands file, two at a time (one per core), each with one BLAS thread.
# Usage (from the repository root): FLMN_DATA_DIR=/path/to/data results/seeds/run_queue.sh FILE
set -uo pipefail
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
grep -v '^#' "$1" | xargs -P "${JOBS:-2}" -d '\n' -I{} bash -c '{}'
