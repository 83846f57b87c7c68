"""Per-instance accuracy, the accuracy table, and the metrics.csv log of a run.

Per-instance accuracy [FLMN §5; docs/model.md#the-one-shot-task]: for the k-th presentation of a
class inside an episode (k = 1..S), the fraction of those predictions that were correct. The
counts are computed with array-API calls on whatever backend the logits live on (no host sync);
convert the result with `backend.to_numpy` when it is needed on the host.
"""
import math

import numpy as np

from ..core.backend import array_namespace, to_numpy
from ..data.episodes import instance_index
from .rundir import append_row, keep_rows_until, read_rows

TABLE_INSTANCES = (1, 2, 3, 4, 5, 10)   # the columns of the paper's tables


def ordinal(k):
    """1 -> '1st', 2 -> '2nd', 4 -> '4th', 11 -> '11th', 22 -> '22nd'."""
    suffix = "th" if 10 <= k % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
    return f"{k}{suffix}"


def per_instance_counts(logits_or_preds, y, instance, samples_per_class):
    """(correct (S,), total (S,)) counts of predictions at the k-th presentation, k = 1..S.

    logits_or_preds (B, T, C) logits or (B, T) integer predictions; y (B, T) labels;
    instance (B, T) 0-based presentation index of y[b, t]'s class (episodes.instance_index).
    All arrays of one backend; the counts stay on it, in the logits' float dtype (float32 for
    integer predictions), exact up to 2**24 predictions.
    """
    xp = array_namespace(logits_or_preds)
    if logits_or_preds.ndim == 3:
        dtype = logits_or_preds.dtype
        preds = xp.argmax(logits_or_preds, axis=-1)
    else:
        dtype, preds = xp.float32, logits_or_preds
    correct = xp.astype(preds == y, dtype)                                     # (B, T)
    ks = xp.arange(samples_per_class, dtype=instance.dtype)
    at_k = xp.astype(instance[..., None] == ks, dtype)                       # (B, T, S)
    return (xp.sum(at_k * correct[..., None], axis=(0, 1)), xp.sum(at_k, axis=(0, 1)))


def per_instance_accuracy(logits_or_preds, y, samples_per_class, instance=None):
    """Fraction correct at the k-th presentation (S,), k = 1..S, on the backend of the input.

    `instance` as in per_instance_counts; if omitted it is computed from y with
    episodes.instance_index (on the host, so pass it when y lives on a GPU).
    A k that never occurs gives nan.
    """
    if instance is None:
        instance = _instance_index_like(y)
    correct, total = per_instance_counts(logits_or_preds, y, instance, samples_per_class)
    xp = array_namespace(correct)
    seen = total > 0
    return xp.where(seen, correct / xp.where(seen, total, xp.ones_like(total)),
                    xp.full_like(total, xp.nan))


def accuracy_on_host(correct, total):
    """per_instance_counts sums (of any backend) -> accuracy (S,) as host float64, the division
    done on the host so that e.g. 4/25 prints as 0.16 (one sync)."""
    return to_numpy(correct).astype(np.float64) / to_numpy(total).astype(np.float64)


def _instance_index_like(y):
    """episodes.instance_index(y), computed on the host and returned on y's backend."""
    xp = array_namespace(y)
    return xp.asarray(np.asarray(instance_index(to_numpy(y)), dtype=np.int64))


def format_accuracy_table(acc, episodes, title=None, instances=TABLE_INSTANCES):
    """The paper's table row for per-instance accuracies `acc` (S,) on the host, in percent:

        instance (% correct, 1000 episodes)   1st   2nd   3rd   4th   5th  10th
        FLMN exp 1 step 6250                 31.6  85.0  89.7  91.7  92.6  94.7

    Instances beyond S are left out.
    """
    acc = np.asarray(acc, dtype=np.float64)
    ks = [k for k in instances if k <= acc.shape[0]]
    head = f"instance (% correct, {episodes} episodes)"
    label = title or ""
    width = max(len(head), len(label))
    lines = [head.ljust(width) + "".join(f"{ordinal(k):>7}" for k in ks),
             label.ljust(width) + "".join(f"{100 * acc[k - 1]:7.1f}" for k in ks)]
    return "\n".join(lines)


# ---------------------------------------------------------------- metrics.csv

def csv_columns(samples_per_class):
    """step, episodes, loss, grad_norm, train_acc_1..S, test_acc_1..S, wall_time."""
    ks = range(1, samples_per_class + 1)
    return (["step", "episodes", "loss", "grad_norm"] + [f"train_acc_{k}" for k in ks]
            + [f"test_acc_{k}" for k in ks] + ["wall_time"])


def make_row(step, episodes, loss, grad_norm, train_acc, test_acc, wall_time):
    """One metrics.csv row as a dict; test_acc None (no evaluation at this step) leaves blanks."""
    row = {"step": step, "episodes": episodes, "loss": f"{loss:.6g}",
           "grad_norm": f"{grad_norm:.6g}", "wall_time": f"{wall_time:.2f}"}
    for k, a in enumerate(train_acc, start=1):
        row[f"train_acc_{k}"] = f"{a:.4f}"
    for k in range(1, len(train_acc) + 1):
        row[f"test_acc_{k}"] = "" if test_acc is None else f"{test_acc[k - 1]:.4f}"
    return row


def read_metrics(path):
    """metrics.csv -> list of row dicts (strings, '' where blank); a last row cut short by a
    crash is left out with a warning (rundir.read_rows)."""
    return read_rows(path)


def column(rows, name):
    """One column of read_metrics rows as float64, nan where blank."""
    return np.array([float(r[name]) if r.get(name) else math.nan for r in rows])


def start_metrics(path, samples_per_class, keep_until_step=None):
    """Prepare metrics.csv for appending: a fresh file with the header, or (when resuming at step
    `keep_until_step`) the existing file without rows past that step, so that a run killed after
    its checkpoint and resumed has no duplicate rows. Returns the wall_time of the last kept row
    (0.0 if none), so that wall time keeps counting across resumes."""
    rows = keep_rows_until(path, csv_columns(samples_per_class), keep_until_step)
    return float(rows[-1]["wall_time"]) if rows else 0.0


def append_metrics(path, row, samples_per_class):
    """Append one make_row dict to metrics.csv (flushed, so a killed run keeps its rows)."""
    append_row(path, csv_columns(samples_per_class), row)
