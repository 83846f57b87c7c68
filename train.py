"""Train FLMN or MANN on one-shot Omniglot episodes. `python train.py --help` lists the flags;
with none it trains FLMN, Experiment I, with the paper's settings (see flmn_np/runs/training.py)."""
import sys

from flmn_np.runs.training import main

if __name__ == "__main__":
    sys.exit(main())
