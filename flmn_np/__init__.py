"""flmn-np: the Feature-Label Memory Network and MANN in NumPy/CuPy, with hand-derived gradients.

Papers (tags in the code: [FLMN §4, eq 7], [MANN]):
    FLMN  "Meta-Learning via Feature-Label Memory Network", arXiv 1710.07110 (v1, 2017)
    MANN  Santoro et al., "One-shot Learning with Memory-Augmented Neural Networks",
          arXiv 1605.06065 (ICML 2016)
The task, both models, the defaults and where they come from: docs/model.md.
The backward passes, derived: docs/derivations.md.
The letters every docstring uses (B, C, S, T, D, H, N, W, R; G, lead and E for a stack of models;
x, h, c, k, M_f, M_l, w_r, ...): the one notation table, docs/model.md#notation.

Commands: `python -m flmn_np.train` (train.py in a checkout), and `python -m flmn_np.<name>` for
evaluate, plot, memviz, report, seeds, data, gradcheck, bench, gpucheck and runs.checkpoint;
installed, each is also a script, `flmn-train`, `flmn-evaluate`, ... (pyproject.toml).
"""

import signal
import sys

__version__ = "0.1.0"


def _command_name():
    """'evaluate' when started as `python -m flmn_np.evaluate ...`, else None."""
    argv = getattr(sys, "orig_argv", [])
    if "-m" in argv[:-1] and argv[argv.index("-m") + 1].startswith(f"{__name__}."):
        return argv[argv.index("-m") + 1].rsplit(".", 1)[-1]
    return None


def quiet_ctrl_c_while_loading(prog):
    """Until the command's own handling takes over (cli.run_command), a Ctrl-C, say
    while NumPy and the rest load (~0.3 s), ends the process with `prog: interrupted` and exit
    status 130, as it does once the command runs, instead of a traceback. Leaves a SIGINT that
    is ignored (a background job of a script) or handled by someone else as it is."""
    def interrupted(signum, frame):
        print(f"{prog}: interrupted", file=sys.stderr)
        sys.exit(130)

    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, interrupted)


# `python -m flmn_np.<command>` gets it here, train.py calls it itself; importing the package
# anywhere else changes no signal handling.
if _command_name() is not None:
    quiet_ctrl_c_while_loading(_command_name())
