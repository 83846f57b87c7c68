#!/usr/bin/env bash
# Per-seed CSV, summary tables and band figure of the authors'-protocol runs beside the paper's
# rows (run from the repository root). Only finished runs (with eval_omniglot.json) are included.
set -euo pipefail
cd "$(dirname "$0")/../.."
A=results/authors
runs=(); for d in $A/flmn-exp1-s? $A/mann-exp1-s? $A/flmn-exp1-20000-s? $A/mann-exp1-20000-s?; do if [ -f "$d/eval_omniglot.json" ]; then runs+=("$d"); fi; done
if [ ${#runs[@]} -gt 0 ]; then
    python -m flmn_np.seeds "${runs[@]}" --csv $A/tables.csv --md $A/tables.md --png $A/curves.png \
        --reference $A/reference.csv
fi
