#!/usr/bin/env bash
# Per-seed CSV, summary tables and band figure of the public-protocol runs (run from the
# repository root). Only finished runs (with eval_omniglot.json) are included.
set -euo pipefail
cd "$(dirname "$0")/../.."
P=results/public
runs=(); for d in $P/mann4-s? $P/flmn-s?; do if [ -f "$d/eval_omniglot.json" ]; then runs+=("$d"); fi; done
if [ ${#runs[@]} -gt 0 ]; then
    python -m flmn_np.seeds "${runs[@]}" --csv $P/tables.csv --md $P/tables.md --png $P/curves.png \
        --reference $P/reference.csv
fi
