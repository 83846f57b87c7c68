"""Train FLMN or MANN on one-shot Omniglot episodes. `python train.py --help` lists the flags;
with none it trains FLMN, Experiment I, with the paper's settings (see flmn_np/runs/training.py).
The checkout's form of the command an installed package runs as `python -m flmn_np.train` or
`flmn-train` (flmn_np/train.py)."""
import sys

if __name__ == "__main__":
    import flmn_np
    flmn_np.quiet_ctrl_c_while_loading("train.py")
    from flmn_np.runs.training import main
    sys.exit(main())
