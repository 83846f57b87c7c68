"""Train FLMN or MANN on one-shot Omniglot episodes: `python -m flmn_np.train`, or `flmn-train`
where the package is installed (pyproject.toml's scripts); in a checkout `python train.py` is the
same command. `--help` lists the flags; with none it trains FLMN, Experiment I, with the paper's
settings. The loop: runs/training.py.
"""
import sys
from pathlib import Path

from . import _command_name
from .cli import run_command
from .runs.training import Command, run_training

MODULE = Command("train", "python -m flmn_np.train", "python -m flmn_np.train")


def main(argv=None):
    """`python -m flmn_np.train` or an installed script (flmn-train): train.py's command
    (runs/training.py's main), its messages and the --resume lines it prints naming the command
    as it was started."""
    if _command_name() == "train":
        command = MODULE
    else:
        script = Path(sys.argv[0]).name or "flmn-train"
        command = Command(script, script, script)
    return run_command(command.name, run_training, argv, command)


if __name__ == "__main__":
    sys.exit(main())
