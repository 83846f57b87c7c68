#!/usr/bin/env bash
# The evaluations of one finished public-protocol run: test classes (1,000 episodes) and zero-shot
# miniMNIST, for the last checkpoint and for best.npz (chosen on validation classes).
# Usage (from the repository root): bash results/public/evaluate.sh RUN_DIR
# The committed eval_*.json files were afterwards replaced by longer evaluations of the same
# checkpoints and seeds (results/reevaluate-commands.txt: --target-se 0.2, an episode standard
# error of at most 0.2 points at the 2nd instance).
set -euo pipefail
run=$1
python -m flmn_np.evaluate "$run" --best
python -m flmn_np.evaluate "$run" --dataset mnist
python -m flmn_np.evaluate "$run" --best --dataset mnist
# Robustness: the last checkpoint again on 2,000 test episodes drawn with another seed.
python -m flmn_np.evaluate "$run" --episodes 2000 --seed 4321 --json "$run/eval_omniglot_seed4321.json"
