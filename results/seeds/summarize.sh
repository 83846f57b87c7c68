#!/usr/bin/env bash
# Rebuilds the per-seed CSVs, summary tables and band figures of results/seeds from the run
# directories (run from the repository root). Groups with no finished run are left out.
set -euo pipefail
cd "$(dirname "$0")/../.."
S=results/seeds
finished() { for d in "$@"; do if [ -f "$d/eval_omniglot.json" ]; then echo "$d"; fi; done; }
seeds() {   # seeds RUN_DIR... -- FLAGS: skipped when no run has finished
    local runs=(); while [ "$1" != "--" ]; do runs+=("$1"); shift; done; shift
    if [ ${#runs[@]} -gt 0 ]; then python -m flmn_np.seeds "${runs[@]}" "$@"; fi
}
seeds $(finished $S/flmn-exp1-product-s[123] $S/flmn-exp1-inside-s[123] \
    $S/mann-exp1-product-s[123] $S/mann-exp1-inside-s[123]) -- \
    --csv $S/cosine_trial.csv --md $S/cosine_trial.md --png $S/cosine_trial.png
seeds $(finished $S/flmn-exp1-product-s? $S/mann-exp1-product-s? $S/mann4-exp1-s?) -- \
    --csv $S/tables_exp1.csv --md $S/tables_exp1.md --png $S/curves_exp1.png --reference $S/paper.csv
seeds $(finished $S/flmn-exp2-s? $S/mann-exp2-s? $S/mann4-exp2-s?) -- \
    --csv $S/tables_exp2.csv --md $S/tables_exp2.md --png $S/curves_exp2.png --reference $S/paper.csv
