"""Setting up a training run: the class split, the episode sources, the record written to
config.json (what was trained, on which data), and the parameters and optimizer, fresh from
--seed or restored from the checkpoint. `setup` returns the `Run` the loop (training.py) reads.
"""
import dataclasses
import datetime
import os
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple, Protocol

import numpy as np

from .. import __version__
from ..core import levels
from ..core.backend import asarray, backend_name, cupy_status, get_xp
from ..core.cpu_level import start_level
from ..core.models import ModelConfig, init_params
from ..core.optim import make_optimizer
from ..data.augment import rotated_class_ids
from ..data.episodes import EpisodeSource
from ..data.files import KNOWN_FILES, file_hashes, resolve_data_dir
from ..data.omniglot import omniglot_files
from ..data.sources import omniglot_data
from ..data.splits import make_split
from .checkpoint import CHECKPOINT_NAME, CheckpointError, check_shapes, load_checkpoint
from .config import DTYPE, ConfigError, TrainConfig, check_episode_sizes, model_config
from .datafolder import run_data_dir
from .rundir import CONFIG_NAME, remove_stale_temporary_files, write_json
from .validation import BestTracker, split_validation


class Optimizer(Protocol):
    """What the loop reads of a run's optimizer: its state, to checkpoint (core/optim.py's Adam
    or RMSProp; a member of a stack: stack.MemberOptimizer, its model's part of the stack's)."""

    def state_dict(self) -> dict[str, Any]: ...


class Run(NamedTuple):
    """Everything a training loop needs, built once by `setup`."""
    cfg: TrainConfig
    dir: Path
    xp: ModuleType        # the array namespace (core/backend.py: numpy, cupy, array_api_strict)
    mcfg: ModelConfig
    params: Mapping[str, Any]     # name -> array on xp (a member of a stack: stack.MemberParams)
    opt: Optimizer
    start_step: int
    train: EpisodeSource
    test: EpisodeSource
    val: EpisodeSource | None     # validation classes (--val-classes), else None
    best: BestTracker | None


LEVEL_WORDS = {"xp": "the plain code", "elementwise": "elementwise kernels",
               "step": "one kernel per memory step"}


def choose_backend(name, mcfg=None):
    """get_xp and the level for this process (cpu_level.start_level), printing which backend
    and level run and, for 'auto' without CuPy, why."""
    xp = get_xp(name)
    note = ""
    if name == "auto" and backend_name(xp) == "numpy":
        note = f" ({cupy_status()[1]})"
    level = start_level(xp, mcfg)
    print(f"backend: {backend_name(xp)}{note}, level {level} ({LEVEL_WORDS[level]})")
    return xp


def class_split(cfg):
    """(train_ids, test_ids, val_ids): the run's split, with --val-classes of the training
    classes moved to val_ids (empty without it)."""
    train_ids, test_ids = make_split(cfg.split, cfg.split_seed)
    val_ids = np.zeros(0, dtype=np.int64)
    if cfg.val_classes:
        try:
            train_ids, val_ids = split_validation(train_ids, cfg.val_classes, cfg.split_seed)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    return train_ids, test_ids, val_ids


def load_sources(cfg, data_dir):
    """(data_dir, EpisodeSource for training, held-out test and validation (None without
    --val-classes), (train_ids, test_ids, val_ids)). With --rotations90 the training classes
    include their rotations; held-out and validation ones do not. ConfigError when an episode
    size does not fit a class set (checked here, before the first step)."""
    train_ids, test_ids, val_ids = class_split(cfg)
    sizes = {"held-out test": test_ids.size, "validation": val_ids.size or None}
    check_episode_sizes(cfg, {"training": train_ids.size * (4 if cfg.rotations90 else 1),
                              **{k: v for k, v in sizes.items() if v}}, drawers=cfg.samples)
    images, augment = omniglot_data(cfg, data_dir)
    check_episode_sizes(cfg, {}, drawers=images.shape[1])
    train_classes = train_ids
    if cfg.rotations90:   # images holds 4 blocks: the plain classes, then 3 rotations of them
        train_classes = rotated_class_ids(train_ids, images.shape[0] // 4)
    val = EpisodeSource(images, val_ids, augment) if val_ids.size else None
    return (data_dir, EpisodeSource(images, np.asarray(train_classes), augment),
            EpisodeSource(images, np.asarray(test_ids), augment), val,
            (train_ids, test_ids, val_ids))


def run_record(cfg, mcfg, xp, split_ids, data_dir):
    """The content of config.json for a fresh run."""
    train_ids, test_ids, val_ids = split_ids
    split = {"name": cfg.split, "seed": cfg.split_seed,
             "train_ids": [int(i) for i in train_ids], "test_ids": [int(i) for i in test_ids]}
    if val_ids.size:
        split["val_ids"] = [int(i) for i in val_ids]
    return {
        "config": cfg.to_dict(),
        "model_config": {**dataclasses.asdict(mcfg), "n_slots": mcfg.n_slots},
        "seed": cfg.seed,
        "split": split,
        "data": data_record(cfg, data_dir),
        "version": __version__,
        "backend": backend_name(xp),
        "level": levels.name(xp.zeros(1)),
        "dtype": DTYPE,
        "start_time": now(),
        "resumes": [],
    }


def recorded_level(record):
    """The level the run trained at last: its last resume's, else its start's (a run recorded
    before levels were: the plain code on NumPy, 'step' on CuPy)."""
    entries = [record, *record.get("resumes", [])]
    last = next((e for e in reversed(entries) if "level" in e), None)
    if last is not None:
        return last["level"]
    backend = (record.get("resumes") or [record])[-1].get("backend", record.get("backend"))
    return "step" if backend == "cupy" else "xp"


def data_record(cfg, data_dir):
    """Where the run's data came from, without a path of this machine: how the folder was chosen,
    the folder only when it was given as a relative path, and the sha256 of the Omniglot files;
    "folder", the absolute path, is for the commands that read the run later (datafolder.py)
    and is removed before a run is published."""
    chosen_by = ("--data-dir" if cfg.data_dir is not None else
                 "FLMN_DATA_DIR" if os.environ.get("FLMN_DATA_DIR") else "default")
    data_dir = Path(data_dir)
    sha256 = {}
    for name in omniglot_files():
        relpath = KNOWN_FILES[name].relpath
        sha256[relpath] = file_hashes(data_dir / relpath)[0]
    return {"chosen_by": chosen_by, "dir": None if data_dir.is_absolute() else str(data_dir),
            "folder": str(data_dir.resolve()), "sha256": sha256}


def now():
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


class Loaded:
    """What the runs set up in one process share: the backend and the episode sources, loaded
    once per data folder and class split (the members of train.py --seeds)."""

    def __init__(self):
        self.xp, self.sources = None, {}

    def backend(self, name, mcfg=None):
        if self.xp is None:
            self.xp = choose_backend(name, mcfg)
        return self.xp

    def load_sources(self, cfg, data_dir):
        key = (str(Path(data_dir).resolve()), cfg.split, cfg.split_seed, cfg.val_classes,
               cfg.rotations90, cfg.experiment, cfg.classes, cfg.samples)
        if key not in self.sources:
            self.sources[key] = load_sources(cfg, data_dir)
        return self.sources[key]


def setup(rd, loaded=None):
    """Load data (or take it from `loaded`), build params and optimizer or restore them from the
    checkpoint, and write config.json last: a start that fails before it leaves nothing
    (rundir.RunDir.abandon), and only then removes the temporary files a killed write left."""
    cfg, ckpt = rd.cfg, rd.ckpt
    loaded = Loaded() if loaded is None else loaded
    mcfg = model_config(cfg)
    if cfg.patience and not cfg.val_classes:
        raise ConfigError("--patience needs --val-classes (the classes that decide when to stop)")
    xp = loaded.backend(cfg.backend, mcfg)
    if rd.record is None:
        data_dir = resolve_data_dir(cfg.data_dir)
    else:   # --data-dir given now, else the folder the run recorded (datafolder.py)
        given = cfg.data_dir if cfg.data_dir != rd.record["config"].get("data_dir") else None
        data_dir = run_data_dir(rd.record, given)
    data_dir, train, test, val, split_ids = loaded.load_sources(cfg, data_dir)
    params = init_params(mcfg, cfg.seed, xp, DTYPE)
    init = None
    if cfg.init_from and ckpt is None:
        params, init = params_from_init(cfg, params, xp)
    opt = make_optimizer(cfg.optimizer, params, lr=cfg.lr)
    start_step = 0 if ckpt is None else ckpt.step
    if rd.record is None:
        record = run_record(cfg, mcfg, xp, split_ids, data_dir)
        if init is not None:
            record["init_from"] = init
    else:
        record = rd.record
        if record["split"]["test_ids"] != [int(i) for i in split_ids[1]]:
            raise CheckpointError(f"the class split made now differs from the one recorded in "
                                  f"{rd.path / CONFIG_NAME}; cannot resume")
        if ckpt is not None:
            params = restore(ckpt, params, opt, xp, rd.path / CHECKPOINT_NAME)
        record["config"] = cfg.to_dict()
        level, before = levels.name(xp.zeros(1)), recorded_level(record)
        if level != before:
            print(f"{rd.path} trained at level {before} until step {start_step} and goes on at "
                  f"level {level}: its steps are the same math, equal to rounding, not bit for "
                  f"bit (FLMN_FUSED chooses the level)")
        record.setdefault("resumes", []).append(
            {"time": now(), "step": start_step, "backend": backend_name(xp), "level": level})
        print(f"resuming {rd.path} at step {start_step}"
              + ("" if ckpt else " (it stopped before its first checkpoint)"))
    remove_stale_temporary_files(rd.path)
    write_json(rd.path / CONFIG_NAME, record)
    best = None
    if val is not None:
        best = BestTracker(rd.path, cfg.samples,
                           resume_step=None if rd.record is None else start_step)
    return Run(cfg, rd.path, xp, mcfg, params, opt, start_step, train, test, val, best)


# the fields a checkpoint given to --init-from must share with the run: the same model, and the
# same class split, so that it was never trained on the run's validation or test classes
INIT_FIELDS = ("model", "split", "split_seed", "val_classes")


def params_from_init(cfg, params, xp):
    """--init-from: the parameters of another run's checkpoint on `xp` (not its optimizer state:
    the run starts a fresh one), after checking its config (INIT_FIELDS) and shapes.
    -> (params, what config.json records of it: its step and sha256)."""
    init = load_checkpoint(cfg.init_from)
    theirs = TrainConfig.from_dict(init.config)
    diff = [f"--{k.replace('_', '-')} {getattr(theirs, k)} (this run: {getattr(cfg, k)})"
            for k in INIT_FIELDS if getattr(theirs, k) != getattr(cfg, k)]
    if diff:
        raise ConfigError(f"--init-from {cfg.init_from} was trained with {', '.join(diff)}: "
                          f"start from a checkpoint of the same model and class split")
    check_shapes(init.params, params)
    return ({k: asarray(v, xp, DTYPE) for k, v in init.params.items()},
            {"step": init.step, "sha256": file_hashes(Path(cfg.init_from))[0]})


def restore(ckpt, params, opt, xp, path):
    """The checkpoint's parameters on `xp`, and its state loaded into `opt`, after checking both
    against the model's shapes. An array saved in another floating dtype than the one the run
    trains in (a checkpoint rewritten as float64, say) is cast to it, as --init-from does, and
    one line names it: every step then computes what the run computes (bit for bit when the
    values came from the training dtype)."""
    check_shapes(ckpt.params, params)
    if not ckpt.opt_state:
        raise CheckpointError("the checkpoint holds parameters only (optimizer state stripped for "
                              "publishing): it can be evaluated, not resumed")
    check_shapes(ckpt.opt_state, opt.state_dict(), "optimizer state")
    cast = [(k, v.dtype) for k, v in (*ckpt.params.items(), *ckpt.opt_state.items())
            if v.dtype.kind == "f" and v.dtype != np.dtype(DTYPE)]
    if cast:
        shown = ", ".join(f"{k} ({dtype})" for k, dtype in cast[:3])
        print(f"{path}: {shown}{', ...' if len(cast) > 3 else ''} cast to {DTYPE}, the dtype "
              f"this run trains in")
    opt.load_state_dict({k: v if v.dtype.kind in "iu" else asarray(v, xp, DTYPE)
                         for k, v in ckpt.opt_state.items()})
    return {k: asarray(v, xp, DTYPE) for k, v in ckpt.params.items()}
