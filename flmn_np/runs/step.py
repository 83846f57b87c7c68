"""One training step of a run: the batch of step s, and the optimizer step on it.

The batch of step s (1-based) is a function of (--seed, s) only: drawn on the host from
np.random.default_rng((seed, s)) (`batch_for_step`, in training.py's prefetch thread), so a run
resumed at step s draws what the uninterrupted run drew. `train_step` takes it to the device
and makes one optimizer step: the loss and its gradients (core/models.py), the gradients clipped
to --clip by their global norm, the update of the parameters in place (core/optim.py).

A stack of --seeds (stack.py) takes the same step on its members' batches side by side: every
array with the model axis, lead = (G,), one norm and one clip per model
(docs/derivations.md#a-stack-of-models); one run is lead = ().
"""
import numpy as np

from ..core.backend import asarray
from ..core.models import loss_and_grads
from ..core.optim import clip_by_global_norm
from ..data.episodes import draw_batch
from .config import DTYPE


def batch_for_step(run, step):
    """The host batch (x, y, instance index) of training step `step` (1-based): a function of
    (seed, step) only."""
    rng = np.random.default_rng((run.cfg.seed, step))
    return draw_batch(run.train, run.cfg.batch_size, run.cfg.classes, run.cfg.samples, rng)


def train_step(params, opt, batch, mcfg, clip, xp, lead=()):
    """One optimizer step of `params` (on `xp`) on a host batch (x, y, instance index), each
    (*lead, B, T, ...): to the device, loss and gradients, clipping to `clip` per model, the
    update in place. -> (loss, gradient norm, logits, y, instance index) on the device, each
    with the leading `lead`."""
    x, y, inst = batch
    y, inst = asarray(y, xp, "int64"), asarray(inst, xp, "int64")
    loss, logits, grads = loss_and_grads(params, asarray(x, xp, DTYPE), y, mcfg)
    grads, gnorm = clip_by_global_norm(grads, clip, lead)
    opt.step(params, grads)
    return loss, gnorm, logits, y, inst
