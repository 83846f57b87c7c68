"""Early stopping on validation classes: choosing a checkpoint without looking at the test classes.

Long runs overfit the training characters: held-out accuracy peaks and then drifts down while the
training loss keeps falling (results/README.md, "Longer training"). Picking the best checkpoint by
its test-class accuracy would report a number selected on the test set, so `--val-classes K` holds
K of the training characters out of training (a seeded choice, recorded in config.json) and
scores every evaluation point on episodes of those characters instead:

    validation.csv  step, val_loss, val_acc_1..S: one row per evaluation point
    best.npz        the checkpoint (checkpoint.py format) with the highest validation score
    best.json       its step and score

The score is the validation 2nd-instance accuracy, the one-shot number the paper's tables lead
with. `--patience P` ends the run after P evaluation points without a better score. The test
classes and checkpoint.npz (the latest state, for --resume) are untouched by any of this.
"""
from pathlib import Path

import numpy as np

from .checkpoint import save_checkpoint
from .rundir import append_row, keep_rows_until, read_rows, write_json

BEST_NAME = "best.npz"
VALIDATION_SEED_TAG = 0x5A1   # keeps the validation draw apart from the split's own permutation


def split_validation(train_ids, n_val, seed):
    """(train_ids without the validation classes, validation class ids), both sorted int64:
    n_val training classes chosen by a generator seeded from (seed, tag)."""
    train_ids = np.asarray(train_ids, dtype=np.int64)
    if not 0 < n_val < train_ids.size:
        raise ValueError(f"--val-classes {n_val} must be between 1 and {train_ids.size - 1} "
                         f"(the split has {train_ids.size} training classes)")
    rng = np.random.default_rng((seed, VALIDATION_SEED_TAG))
    val = np.sort(rng.choice(train_ids, size=n_val, replace=False))
    return np.setdiff1d(train_ids, val), val


def score(acc):
    """The selection score of per-instance accuracies (S,): the 2nd instance (1st if S = 1)."""
    return float(acc[min(1, len(acc) - 1)])


def _columns(samples):
    return ["step", "val_loss"] + [f"val_acc_{k}" for k in range(1, samples + 1)]


def _row_score(row, samples):
    """The score of a validation.csv row, from its written (rounded) values, so that a resumed
    run compares scores exactly as the uninterrupted run did."""
    return score([float(row[f"val_acc_{k}"]) for k in range(1, samples + 1)])


def _best_of(rows, samples):
    """(best step or None, its score, evaluation points since it) of validation.csv rows."""
    best_step, best_score = None, -np.inf
    for r in rows:
        s = _row_score(r, samples)
        if s > best_score:
            best_step, best_score = int(r["step"]), s
    return best_step, best_score, sum(1 for r in rows if int(r["step"]) > (best_step or 0))


def ended_early(run_dir, cfg, step):
    """True when the run in `run_dir` stopped early (--patience) at `step`: its validation.csv
    rows up to `step` end there, after --patience points without a better score. Such a run is
    finished, and --resume from its checkpoint only writes what its end left out."""
    path = Path(run_dir) / "validation.csv"
    if not (cfg.patience and cfg.val_classes and path.is_file()):
        return False
    rows = [r for r in read_rows(path) if int(r["step"]) <= step]
    if not rows or int(rows[-1]["step"]) != step:
        return False
    return _best_of(rows, cfg.samples)[2] >= cfg.patience


class BestTracker:
    """Keeps validation.csv, best.npz and best.json of a run directory up to date."""

    def __init__(self, run_dir, samples, resume_step=None):
        """A fresh tracker, or (resume_step given) the state of a run resumed at that step:
        validation.csv rows past it are dropped, as metrics.csv's are."""
        self.dir, self.samples = Path(run_dir), samples
        self.csv = self.dir / "validation.csv"
        rows = keep_rows_until(self.csv, _columns(samples), resume_step)
        # the best so far is whatever the kept rows say (best.npz matches it)
        self.best_step, self.best_score, self.since_best = _best_of(rows, samples)

    def update(self, step, acc, loss, params, opt_state, config):
        """Record the validation result at `step`; save best.npz when the score improves.
        Returns True when it did."""
        row = {"step": step, "val_loss": f"{loss:.6g}"}
        row.update({f"val_acc_{k}": f"{a:.4f}" for k, a in enumerate(acc, start=1)})
        append_row(self.csv, _columns(self.samples), row)
        s = _row_score(row, self.samples)
        if s <= self.best_score:
            self.since_best += 1
            return False
        save_checkpoint(self.dir / BEST_NAME, params, opt_state, step, config)
        self.best_step, self.best_score, self.since_best = step, s, 0
        write_json(self.dir / "best.json",
                   {"step": step, "score": s, "score_name": "validation 2nd-instance accuracy"})
        return True

    def exhausted(self, patience):
        """True when `patience` > 0 evaluation points in a row brought no improvement."""
        return patience > 0 and self.since_best >= patience
