#!/usr/bin/env bash
# The candidates' tables (run from anywhere): validation beside the baseline seeds at equal steps
# (compare.md), and the learning-rate-decay runs over seeds on the test classes (tables.md,
# tables.csv, curves.png). Only finished runs (with eval_omniglot.json) are in the tables.
set -euo pipefail
cd "$(dirname "$0")/../.."
C=results/candidates
python $C/compare.py > $C/compare.md
runs=(); for d in $C/flmn-s?-ft-lr1e-4; do if [ -f "$d/eval_omniglot.json" ]; then runs+=("$d"); fi; done
if [ ${#runs[@]} -gt 0 ]; then
    python -m flmn_np.seeds "${runs[@]}" --csv $C/tables.csv --md $C/tables.md --png $C/curves.png
fi
