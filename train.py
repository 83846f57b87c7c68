"""Train FLMN or MANN on one-shot Omniglot episodes. `python train.py --help` lists the flags;
with none it trains FLMN, Experiment I, with the paper's settings (see flmn_np/runs/training.py)."""
import sys

if __name__ == "__main__":
    try:
        from flmn_np.runs.training import main
    except KeyboardInterrupt:          # Ctrl-C while the libraries load: nothing started yet
        sys.exit(130)
    sys.exit(main())
