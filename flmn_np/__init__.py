"""flmn-np: the Feature-Label Memory Network and MANN in NumPy/CuPy, with hand-derived gradients.

Papers (tags in the code: [FLMN §4, eq 7], [MANN]):
    FLMN  "Meta-Learning via Feature-Label Memory Network", arXiv 1710.07110 (v1, 2017)
    MANN  Santoro et al., "One-shot Learning with Memory-Augmented Neural Networks",
          arXiv 1605.06065 (ICML 2016)
The task, both models, the defaults and where they come from: docs/model.md.
The backward passes, derived: docs/derivations.md.

Notation (shapes with the batch axis B first; per-head arrays keep a head axis R, also for R = 1)
----------------------------------------------------------------------------------------------
B      episodes per batch              T = C S   steps per episode, t = 1..T (code index t-1)
C, S   classes, samples per class      D         input size (20 x 20 = 400)
H      LSTM units                      N, W      memory slots, slot width
R      MANN heads (FLMN: 1)            RW        width of r[t]: W (FLMN), R W (MANN)
x[t]   (B, D) image                    y[t]      (B,) label; step t sees onehot(y[t-1])
h, c   (B, H) LSTM output, cell        z         (B, 4H) gates [i | f | o | g], g the candidate
k      (B, R, W) key                   a_f, a_l  (B, 1, W) FLMN feature / label add vectors
g_w    (B, R) write gate sigma(alpha)  K         (B, R, N) cosine of key and slot
M_f, M_l  (B, N, W) FLMN feature / label memory;   M (B, N, W) MANN memory
w_r    (B, R, N) read weights          w_wf      (B, 1, N) FLMN feature write weights
w_w    (B, R, N) MANN write weights    w_wl      FLMN label write weights = w_wf[t-1]
w_u    (B, N) usage                    w_lu      (B, R, N) least-used one-hot(s)
r      (B, RW) memory read             gamma     usage decay (0.95)
dX     dL/dX, same shape as X          X_prev    X[t-1]
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
