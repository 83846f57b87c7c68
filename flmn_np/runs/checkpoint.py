"""checkpoint.npz: parameters, optimizer state, step and config of a run, with nothing pickled.

Layout of the npz (every entry a plain array, loaded with allow_pickle=False):
    param/<name>   one array per parameter, in host NumPy, the training dtype
    opt/<key>      the optimizer's state_dict, one entry per key (ints stored as 0-d int64)
    step           0-d int64, the number of optimizer steps taken
    config         0-d unicode string: the run's config JSON, to refuse a checkpoint of another run

No RNG state is stored: every training batch is drawn from np.random.default_rng((seed, step))
and evaluation episodes from their own fixed seed, so step and seed determine all randomness.

Writes are atomic: the file is written under a temporary name in the same directory and then
renamed over checkpoint.npz, so a run killed while saving keeps its previous checkpoint.
"""
import json
import os
import tempfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..core.backend import to_numpy

CHECKPOINT_NAME = "checkpoint.npz"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable or belongs to another run."""


class Checkpoint(NamedTuple):
    params: dict      # name -> host np.ndarray
    opt_state: dict   # key -> host np.ndarray (0-d for scalars)
    step: int
    config: dict      # the run's config, as recorded when it was saved


def save_checkpoint(path, params, opt_state, step, config):
    """Write params / optimizer state (arrays of any backend) atomically to `path` (a sync)."""
    path = Path(path)
    arrays = {f"param/{k}": to_numpy(v) for k, v in params.items()}
    arrays.update({f"opt/{k}": _host(v) for k, v in opt_state.items()})
    arrays["step"] = np.asarray(step, dtype=np.int64)
    arrays["config"] = np.asarray(json.dumps(config, sort_keys=True))
    fd, tmp = tempfile.mkstemp(prefix=".checkpoint-", suffix=".npz.tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _host(v):
    """A state entry (Python number or array of any backend) as a host array."""
    return np.asarray(v) if isinstance(v, (int, float)) else to_numpy(v)


def load_checkpoint(path):
    """Read a checkpoint written by `save_checkpoint` into host arrays."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            entries = {k: z[k] for k in z.files}
        step = int(entries.pop("step"))
        config = json.loads(str(entries.pop("config")))
    except (OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from None
    params = {k.removeprefix("param/"): v for k, v in entries.items() if k.startswith("param/")}
    opt_state = {k.removeprefix("opt/"): v for k, v in entries.items() if k.startswith("opt/")}
    return Checkpoint(params, opt_state, step, config)


def check_shapes(loaded, expected, what="parameters"):
    """Raise CheckpointError unless two name -> array dicts have the same keys and shapes."""
    if set(loaded) != set(expected):
        missing, extra = sorted(set(expected) - set(loaded)), sorted(set(loaded) - set(expected))
        raise CheckpointError(f"checkpoint {what} do not match this model "
                              f"(missing: {missing}, unexpected: {extra})")
    for k, v in loaded.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise CheckpointError(f"checkpoint {what} {k!r} has shape {tuple(v.shape)}, "
                                  f"this model needs {tuple(expected[k].shape)}")
