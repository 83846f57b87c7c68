"""checkpoint.npz: parameters, optimizer state, step and config of a run, with nothing pickled.

Layout of the npz (every entry a plain array, loaded with allow_pickle=False):
    param/<name>   one array per parameter, in host NumPy, the training dtype
    opt/<key>      the optimizer's state_dict, one entry per key (ints stored as 0-d int64)
    step           0-d int64, the number of optimizer steps taken
    config         0-d unicode string: the run's config JSON, to refuse a checkpoint of another run

No RNG state is stored: every training batch is drawn from np.random.default_rng((seed, step))
and evaluation episodes from their own fixed seed, so step and seed determine all randomness.

Writes are atomic (data.files.atomic_write), so a run killed while saving keeps its previous
checkpoint, and nothing non-finite is ever saved: a diverged run keeps its last good checkpoint.
Loading checks everything a reader relies on (a zip of plain arrays, a step >= 0, the run's config,
finite values) and reports anything else as one CheckpointError.
"""
import argparse
import json
import os
import sys
import zipfile
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..cli import run_command
from ..core.backend import to_numpy
from ..data.files import atomic_write
from ..errors import FlmnError
from .config import to_json
from .datafolder import drop_folder

CHECKPOINT_NAME = "checkpoint.npz"
ZIP_MAGIC = b"PK\x03\x04"


class CheckpointError(FlmnError, RuntimeError):
    """A checkpoint that is missing, unreadable, not finite or belongs to another run."""


class Checkpoint(NamedTuple):
    params: dict      # name -> host np.ndarray
    opt_state: dict   # key -> host np.ndarray (0-d for scalars)
    step: int
    config: dict      # the run's config, as recorded when it was saved


def save_checkpoint(path, params, opt_state, step, config):
    """Write params / optimizer state (arrays of any backend) atomically to `path` (a sync).
    Raises CheckpointError, writing nothing, when a value is not finite."""
    arrays = {f"param/{k}": to_numpy(v) for k, v in params.items()}
    arrays.update({f"opt/{k}": _host(v) for k, v in opt_state.items()})
    bad = _not_finite(arrays)
    if bad:
        raise CheckpointError(f"refusing to save non-finite values ({bad}) as {path}")
    arrays["step"] = np.asarray(step, dtype=np.int64)
    arrays["config"] = np.asarray(json.dumps(config, sort_keys=True))
    atomic_write(path, lambda f: np.savez(f, **arrays))


def _host(v):
    """A state entry (Python number or array of any backend) as a host array."""
    return np.asarray(v) if isinstance(v, (int, float)) else to_numpy(v)


def _not_finite(arrays):
    """The names of float entries holding nan or inf, as one string ('' if none)."""
    bad = [k for k, v in arrays.items() if v.dtype.kind == "f" and not np.all(np.isfinite(v))]
    return ", ".join(bad[:3]) + (", ..." if len(bad) > 3 else "")


def load_checkpoint(path):
    """Read a checkpoint written by `save_checkpoint` into host arrays; CheckpointError (one
    line) for a missing, damaged, non-finite or foreign file."""
    path = Path(path)
    if not path.is_file():
        what = "is not a file (a folder or a broken link)" if os.path.lexists(path) else ""
        raise CheckpointError(f"{path} {what}" if what else f"no checkpoint at {path}")
    with open(path, "rb") as f:
        if f.read(4) != ZIP_MAGIC:
            raise CheckpointError(f"{path} is damaged: not an npz file (empty, cut short or "
                                  f"overwritten)")
    try:
        with np.load(path, allow_pickle=False) as z:
            entries = {k: z[k] for k in z.files}
        step, config = entries.pop("step"), json.loads(str(entries.pop("config")))
    except KeyError as e:
        raise CheckpointError(f"{path} is damaged: it has no {e} entry") from None
    except (OSError, ValueError, EOFError, TypeError, zipfile.BadZipFile, zlib.error) as e:
        raise CheckpointError(f"{path} is damaged ({type(e).__name__}: {e})") from None
    if step.shape != () or step.dtype.kind not in "iu" or int(step) < 0:
        raise CheckpointError(f"{path} is damaged: its step {step} is not a count of steps")
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} is damaged: its config is not a run's config")
    if isinstance(config.get("steps"), int) and int(step) > config["steps"]:
        raise CheckpointError(f"{path} is damaged: its step {int(step)} is past the "
                              f"{config['steps']} steps of its run")
    params = {k.removeprefix("param/"): v for k, v in entries.items() if k.startswith("param/")}
    opt_state = {k.removeprefix("opt/"): v for k, v in entries.items() if k.startswith("opt/")}
    if not params:
        raise CheckpointError(f"{path} is damaged: it holds no parameters")
    not_float = sorted(k for k, v in params.items() if v.dtype.kind != "f")
    if not_float:
        raise CheckpointError(f"{path} is damaged: parameter {not_float[0]} is not floating point")
    bad = _not_finite(entries)
    if bad:
        raise CheckpointError(f"{path} holds non-finite values ({bad}): the run diverged before "
                              f"it was saved; it cannot be used")
    return Checkpoint(params, opt_state, int(step), config)


def check_shapes(loaded, expected, what="parameters"):
    """Raise CheckpointError unless two name -> array dicts have the same keys and shapes."""
    if set(loaded) != set(expected):
        missing, extra = sorted(set(expected) - set(loaded)), sorted(set(loaded) - set(expected))
        raise CheckpointError(f"checkpoint {what} do not match this model "
                              f"(missing: {missing}, unexpected: {extra})")
    for k, v in loaded.items():
        if np.shape(v) != np.shape(expected[k]):
            raise CheckpointError(f"checkpoint {what} {k!r} has shape {np.shape(v)}, "
                                  f"this model needs {np.shape(expected[k])}")


def strip(path):
    """Publish the finished run of checkpoint `path`: the checkpoint rewritten with its
    parameters, step and config only (a third of the size; `evaluate` reads it, `--resume`
    refuses it), and no path of one machine left in its run directory (public_files). Every file
    is read and checked first: a damaged one is one CheckpointError and changes nothing."""
    path = Path(path)
    ckpt = load_checkpoint(path)
    rewrites = public_files(path.parent, but=path.name)
    save_checkpoint(path, ckpt.params, {}, ckpt.step, public_config(ckpt.config))
    for rewrite in rewrites:
        rewrite()


# the checkpoints a run directory may hold (validation.BEST_NAME: the best on the validation
# classes), whose recorded config must stay the one of config.json
RUN_CHECKPOINTS = (CHECKPOINT_NAME, "best.npz")
# the fields of a recorded config that hold a path (data_dir is recorded only when relative)
PATH_FIELDS = ("out", "init_from")


def public_path(text):
    """A path as a published run records it: a relative one as it is, an absolute one relative
    to the working directory when it lies below it, else its last part (a folder's or file's
    name). None stays None."""
    if text is None or not Path(text).is_absolute():
        return text
    try:
        return str(Path(text).relative_to(Path.cwd()))
    except ValueError:
        return Path(text).name


def public_config(config):
    """A recorded config with every path of one machine made public (PATH_FIELDS)."""
    return {**config, **{k: public_path(config[k]) for k in PATH_FIELDS if k in config}}


def public_files(run_dir, but=None):
    """The rewrites (functions, none called yet) that leave no path of one machine in RUN_DIR:
    config.json without the data folder (datafolder.py) and with its config's paths public,
    the same config in its checkpoints (but `but`, rewritten by the caller; their state kept),
    and the run_dir of its eval_*.json. Reads and checks every file: CheckpointError if one is
    damaged."""
    run_dir, rewrites = Path(run_dir), []
    for path in [run_dir / "config.json", *sorted(run_dir.glob("eval_*.json"))]:
        if not path.is_file():
            continue
        record = _read_json(path)
        public = _public_record(record)
        if public != record:
            rewrites.append(lambda path=path, text=to_json(public) + "\n":
                            atomic_write(path, lambda f: f.write(text.encode())))
    for name in RUN_CHECKPOINTS:
        if name != but and os.path.lexists(run_dir / name):
            ckpt = load_checkpoint(run_dir / name)
            if public_config(ckpt.config) != ckpt.config:
                rewrites.append(lambda path=run_dir / name, c=ckpt: save_checkpoint(
                    path, c.params, c.opt_state, c.step, public_config(c.config)))
    return rewrites


def _public_record(record):
    """config.json's or an eval_*.json's content without a path of one machine."""
    if not isinstance(record, dict):
        return record
    if isinstance(record.get("config"), dict):          # config.json
        record = {**drop_folder(record), "config": public_config(record["config"])}
    if isinstance(record.get("run_dir"), str):          # eval_*.json
        record = {**record, "run_dir": public_path(record["run_dir"])}
    return record


def _read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is damaged ({e})") from None


def main(argv=None):
    """python -m flmn_np.runs.checkpoint strip FILE [FILE ...]: each checkpoint to its
    parameters, and no path of one machine left in the run directory beside it (public_files)."""
    parser = argparse.ArgumentParser(
        prog="python -m flmn_np.runs.checkpoint",
        description="Strip the optimizer state from finished runs' checkpoints (they can then be "
                    "evaluated, not resumed).")
    parser.add_argument("command", choices=("strip",))
    parser.add_argument("files", nargs="+")
    args = parser.parse_args(argv)
    return run_command("checkpoint", strip_all, args.files)


def strip_all(files):
    for f in files:
        strip(f)
        print(f"{f}: parameters only; no path of this machine left in {Path(f).parent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
