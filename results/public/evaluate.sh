#!/usr/bin/env bash
# The evaluations of one finished public-protocol run: test classes (1,000 episodes) and zero-shot
# miniMNIST, for the last checkpoint and for best.npz (chosen on validation classes).
# Usage (from the repository root): bash results/public/evaluate.sh RUN_DIR
set -euo pipefail
run=$1
python -m flmn_np.evaluate "$run" --best
python -m flmn_np.evaluate "$run" --dataset mnist
python -m flmn_np.evaluate "$run" --best --dataset mnist
