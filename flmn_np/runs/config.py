"""The training command line, parsed into one frozen `TrainConfig` that is written beside every run.

Defaults live in one place, the dataclass fields below; argparse only names, types and checks the
flags (every option has `type=` or `choices=`), and leaves options the user did not give as None.
That lets `--resume` start from the run's recorded config and apply only the flags given again.

The fields split into two groups:
- IDENTITY_FIELDS fix what is trained (model shape, data, optimizer, seed). A checkpoint can only
  be resumed under the same identity, which makes the resumed run equal to an uninterrupted one.
- the rest control how the run is driven (length, evaluation cadence, backend, paths) and may
  change when a run is resumed, e.g. `--steps` to train longer.
"""
import argparse
import collections
import dataclasses
import json
import typing
from dataclasses import dataclass
from pathlib import Path

from ..cli import float_in, int_at_least
from ..core.backend import BACKENDS
from ..core.models import ModelConfig
from ..core.optim import OPTIMIZERS
from ..errors import FlmnError

IDENTITY_FIELDS = (
    "model", "experiment", "batch_size", "classes", "samples", "hidden", "slots", "width", "reads",
    "gamma", "mann_add", "optimizer", "lr", "clip", "split", "split_seed", "seed", "rotations90",
    "val_classes", "cosine_eps", "init_from",
)


# The most seeds one train.py --seeds trains: each member holds its run directory's lock (an open
# file) for the life of the process, and a stack of more is a slip (0-99999 for 0-9).
MAX_SEEDS = 1000

# Values of fields added after runs were recorded without them: such a run was made this way.
LEGACY_DEFAULTS = {"cosine_eps": "inside"}

# The dtype every run trains and is scored in: parameters, optimizer state, episodes (float64
# only in the gradient checks); config.json records it.
DTYPE = "float32"


class ConfigError(FlmnError, ValueError):
    """A command line or run directory that cannot be used (the message says what to do)."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on. None means 'the default for this model/optimizer'
    until `resolve` fills it in, so a written config.json never holds None for those."""
    # what is trained
    model: str = ModelConfig.model
    experiment: int = 1               # 1: no augmentation, 2: rotation + shift   [FLMN §5.2-5.3]
    batch_size: int = 16
    samples: int = 10
    # the model's shape: ModelConfig's defaults (models.py), named as the flags are
    classes: int = ModelConfig.n_classes
    hidden: int = ModelConfig.hidden
    slots: int | None = ModelConfig.slots      # None: 64 for FLMN, 128 for MANN
    width: int = ModelConfig.width
    reads: int = ModelConfig.reads
    gamma: float = ModelConfig.gamma
    mann_add: str = ModelConfig.mann_add
    cosine_eps: str = ModelConfig.cosine_eps   # the cosine's epsilon: 'product' |k||M| + eps, or
                                               # 'inside' each norm sqrt(x.x + eps)
    optimizer: str = "adam"
    lr: float | None = None           # None: the optimizer's default (adam 1e-3, rmsprop 1e-4)
    clip: float = 10.0                # global-norm clipping of gradients; 0 turns it off
    split: str = "paper"
    split_seed: int = 0
    seed: int = 0
    rotations90: bool = False
    val_classes: int = 0              # training classes held out for early stopping (validation.py)
    init_from: str | None = None      # start from this checkpoint's parameters (setup.py)
    # how the run is driven
    steps: int = 100_000
    eval_every: int = 250             # steps; 0 turns periodic evaluation off
    eval_episodes: int = 160          # per periodic evaluation
    final_eval_episodes: int = 1000   # at the end of the run
    eval_seed: int = 1234             # fixed, so that periodic evaluations are comparable
    val_episodes: int = 500           # validation episodes per evaluation point (--val-classes)
    patience: int = 0                 # stop after this many evaluations without a better
                                      # validation score; 0 = never stop early
    log_every: int = 50               # steps between metrics.csv rows (and host syncs)
    backend: str = "auto"
    data_dir: str | None = None       # None: $FLMN_DATA_DIR, else ./data
    out: str | None = None            # None: runs/<model>-exp<k>-seed<s>
    resume: bool = False

    def identity(self):
        """The fields that must match for a checkpoint to be resumed."""
        return {name: getattr(self, name) for name in IDENTITY_FIELDS}

    def to_dict(self):
        """The config as recorded (config.json, checkpoints). data_dir is kept only when it is a
        relative path: a path of one machine says nothing about the run (config.json's "data"
        says where the data came from and what it was)."""
        d = dataclasses.asdict(self)
        if d["data_dir"] is not None and Path(d["data_dir"]).is_absolute():
            d["data_dir"] = None
        return d

    @classmethod
    def from_dict(cls, d):
        """Inverse of `to_dict`; ignores keys this version does not know. ConfigError for a value
        of the wrong type, or one the command line would refuse."""
        if not isinstance(d, dict):
            raise ConfigError(f"a run's config must be a JSON object, got {type(d).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        d = {k: v for k, v in {**LEGACY_DEFAULTS, **d}.items() if k in fields}
        checks = {a.dest: a for a in build_parser()._actions}
        for k, v in d.items():
            if not _has_type(v, fields[k].type):
                raise ConfigError(f"{k} is {v!r}, not a {fields[k].type}")
            action = checks.get(k)
            if v is None or action is None or isinstance(v, bool):
                continue
            if action.choices is not None and v not in action.choices:
                raise ConfigError(f"{k} is {v!r}, not one of {', '.join(map(str, action.choices))}")
            if action.type is not None:
                try:
                    action.type(str(v))
                except (argparse.ArgumentTypeError, ValueError) as e:
                    raise ConfigError(f"{k}: {e}") from None
        return cls(**d)


def _has_type(value, annotation):
    """True when a JSON value fits a field's annotation (int, float, str, bool, X | None)."""
    for t in typing.get_args(annotation) or (annotation,):
        if value is None and t is type(None):
            return True
        if isinstance(value, bool) != (t is bool):
            continue
        if t is float and isinstance(value, (int, float)) or isinstance(value, t):
            return True
    return False


def build_parser(prog="train.py"):
    """The train.py argument parser (`prog`: its name in --help and usage lines). Options default
    to None (= not given); the real defaults are TrainConfig's and are shown in --help."""
    d = TrainConfig()
    p = argparse.ArgumentParser(
        prog=prog, allow_abbrev=False,
        description="Train FLMN or MANN on one-shot Omniglot episodes (the paper's settings).")

    def opt(flag, help, **kw):
        p.add_argument(flag, default=None, help=help, **kw)

    pos = int_at_least(1)
    nonneg = int_at_least(0)
    opt("--model", f"model to train (default {d.model})", choices=("flmn", "mann"))
    opt("--experiment", f"1: plain images, 2: rotated and shifted (default {d.experiment})",
        type=int, choices=(1, 2))
    opt("--steps", f"optimizer steps to train for in total (default {d.steps})", type=pos)
    opt("--batch-size", f"episodes per step (default {d.batch_size})", type=pos)
    opt("--classes", f"classes per episode (default {d.classes})", type=pos)
    opt("--samples", f"samples per class per episode (default {d.samples})", type=pos)
    opt("--hidden", f"LSTM units (default {d.hidden})", type=pos)
    opt("--slots", "memory slots (default 64 for flmn, 128 for mann)", type=pos)
    opt("--width", f"memory slot width (default {d.width})", type=pos)
    opt("--reads", f"MANN read/write heads (default {d.reads})", type=pos)
    opt("--gamma", f"usage decay (default {d.gamma})", type=float_in(0.0, 1.0))
    opt("--mann-add", f"MANN add vector: separate output or the key (default {d.mann_add})",
        choices=("separate", "key"))
    opt("--cosine-eps", f"where the cosine's 1e-8 goes: 'product' k.M / (|k||M| + eps), the true "
        f"cosine, or 'inside' each norm sqrt(x.x + eps) (default {d.cosine_eps})",
        choices=("product", "inside"))
    opt("--optimizer", f"optimizer (default {d.optimizer})", choices=tuple(OPTIMIZERS))
    opt("--lr", "learning rate (default: adam 1e-3, rmsprop 1e-4)",
        type=float_in(0.0, float("inf"), low_open=True))
    opt("--clip", f"max global gradient norm, 0 = no clipping (default {d.clip})",
        type=float_in(0.0, float("inf")))
    opt("--split", f"class split: paper 1209/414 or background 964/659 (default {d.split})",
        choices=("paper", "background"))
    opt("--split-seed", f"seed of the class split permutation (default {d.split_seed})",
        type=nonneg)
    opt("--seed", f"seed of the initial parameters and of every batch (default {d.seed})",
        type=nonneg)
    opt("--rotations90", "add Santoro's extra classes (characters rotated by 90/180/270 degrees)",
        action="store_true")
    opt("--init-from", "start from the parameters of this checkpoint (another run's checkpoint.npz "
        "or best.npz of the same model and class split) with a fresh optimizer, e.g. to train "
        "on at a lower --lr (default: fresh parameters from --seed)", type=str)
    opt("--eval-every", f"steps between evaluations and checkpoints, 0 = only at the end "
        f"(default {d.eval_every})", type=nonneg)
    opt("--eval-episodes", f"held-out episodes per periodic evaluation (default {d.eval_episodes})",
        type=nonneg)
    opt("--final-eval-episodes", f"held-out episodes for the evaluation at the end "
        f"(default {d.final_eval_episodes})", type=nonneg)
    opt("--eval-seed", f"seed of the evaluation episodes (default {d.eval_seed})", type=nonneg)
    opt("--val-classes", f"hold this many training classes out as validation classes, score "
        f"every evaluation point on them and keep the best checkpoint as best.npz "
        f"(default {d.val_classes}: none)", type=nonneg)
    opt("--val-episodes", f"validation episodes per evaluation point (default {d.val_episodes})",
        type=pos)
    opt("--patience", f"with --val-classes: stop after this many evaluation points without a "
        f"better validation score, 0 = never (default {d.patience})", type=nonneg)
    opt("--log-every", f"steps between metrics.csv rows (default {d.log_every})", type=pos)
    opt("--backend", f"array backend; auto = CuPy if a GPU is usable (default {d.backend})",
        choices=BACKENDS)
    opt("--data-dir", "dataset folder (default: $FLMN_DATA_DIR, else ./data)", type=str)
    opt("--seeds", "train these seeds' models side by side in one process, as one stack: "
        f"'1,2,3', '1-5' or both ('1-3,7'), at most {MAX_SEEDS}; each is a complete run in "
        "OUT/seed-N (default: one model, --seed)", type=str)
    opt("--out", "run directory (default: runs/<model>-exp<k>-seed<s>; with --seeds the folder "
        "of their runs, default runs/<model>-exp<k>)", type=str)
    opt("--resume", "continue the run in --out from its checkpoint.npz; other flags default to "
        "the recorded run's, and only run-length, evaluation, backend and path flags may differ",
        action="store_true")
    return p


def parse_args(argv=None):
    """argv -> (config with defaults filled in, dict of the options given explicitly)."""
    cfg, given, _ = parse_command_line(argv)
    return cfg, given


def parse_command_line(argv=None, prog="train.py"):
    """argv -> (config, options given explicitly, the --seeds to train as one stack or None).
    With --seeds, --out names the folder of their runs (default runs/<model>-exp<k>)."""
    ns = build_parser(prog).parse_args(argv)
    given = {k: v for k, v in vars(ns).items() if v is not None}
    seeds = given.pop("seeds", None)
    if seeds is not None:
        if "seed" in given:
            raise ConfigError("--seeds and --seed together: give one of them")
        seeds = parse_seeds(seeds)
        given.setdefault("out", str(Path("runs") / f"{given.get('model', TrainConfig.model)}-exp"
                                    f"{given.get('experiment', TrainConfig.experiment)}"))
    return resolve(TrainConfig(**given)), given, seeds


def parse_seeds(text):
    """'1,2,3', '1-5' or '1-3,7' -> (1, 2, 3, ...); ConfigError for an empty list, a value that
    is not a non-negative integer or a range A-B with A <= B, for more than MAX_SEEDS seeds
    (counted before a range is expanded, so a slip like 0-99999 is answered at once) and for a
    seed given twice."""
    ranges = [_seed_range(text, item) for item in text.split(",")]
    count = sum(len(r) for r in ranges)
    if count > MAX_SEEDS:
        raise ConfigError(f"--seeds {text!r} names {count} seeds; one process trains at most "
                          f"{MAX_SEEDS} (each holds its run directory open): give fewer")
    seeds = [s for r in ranges for s in r]
    twice = sorted(s for s, n in collections.Counter(seeds).items() if n > 1)
    if twice:
        raise ConfigError(f"--seeds {text!r} names seed {', '.join(map(str, twice))} twice")
    return tuple(seeds)


def _seed_range(text, item):
    """One item of --seeds, 'N' or 'A-B', as a range; ConfigError (naming all of `text`) for
    anything else."""
    first, dash, last = item.strip().partition("-")
    try:
        a, b = int(first), int(last) if dash else int(first)
    except ValueError:
        a = b = -1
    if a < 0 or b < a or not first.strip().isdigit():
        raise ConfigError(f"--seeds {text!r}: each item must be a seed N or a range A-B "
                          f"(non-negative integers, A <= B), as in 1,2,3 or 1-5")
    return range(a, b + 1)


def resolve(cfg):
    """Fill the None defaults that depend on other fields (lr, slots, out)."""
    changes = {}
    if cfg.lr is None:
        changes["lr"] = OPTIMIZERS[cfg.optimizer][1]
    if cfg.slots is None:
        changes["slots"] = ModelConfig(model=cfg.model).n_slots
    if cfg.out is None:
        changes["out"] = str(Path("runs") / f"{cfg.model}-exp{cfg.experiment}-seed{cfg.seed}")
    return dataclasses.replace(cfg, **changes)


def merge_for_resume(recorded, given):
    """The config of a resumed run: the recorded one with the explicitly given flags applied.
    Raises ConfigError naming each identity flag that differs from the recorded run."""
    merged = dataclasses.replace(recorded, **{"resume": False, **given})
    diffs = identity_diff(recorded, merged)
    if diffs:
        raise ConfigError(
            f"{merged.out} holds a run made with {diffs}; resume it without those flags, "
            f"or choose another --out for a new run")
    return merged


def identity_diff(a, b):
    """'--flag A (asked: B), ...' for every identity field where a and b differ; '' if none."""
    parts = [f"--{k.replace('_', '-')} {va} (asked: {b.identity()[k]})"
             for k, va in a.identity().items() if va != b.identity()[k]]
    return ", ".join(parts)


def check_episode_sizes(cfg, classes_available, drawers):
    """ConfigError unless every episode the run draws fits its data: `classes_available` maps
    each class set ('training', 'held-out test', 'validation') to its size, `drawers` is the
    number of samples per class. Called before the first step, so nothing is lost."""
    if cfg.samples > drawers:
        raise ConfigError(f"--samples {cfg.samples}: a class has only {drawers} samples")
    for name, n in classes_available.items():
        if cfg.classes > n:
            hint = (f"; use --val-classes of at least {cfg.classes}" if name == "validation"
                    else "")
            raise ConfigError(f"--classes {cfg.classes} is more than the {n} {name} classes of "
                              f"this split{hint}")


def model_config(cfg):
    """The engine's ModelConfig for a TrainConfig; ConfigError for a combination it rejects."""
    try:
        return ModelConfig(model=cfg.model, n_classes=cfg.classes, hidden=cfg.hidden,
                           slots=cfg.slots, width=cfg.width, reads=cfg.reads, gamma=cfg.gamma,
                           mann_add=cfg.mann_add, cosine_eps=cfg.cosine_eps)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def to_json(obj):
    """Stable, readable JSON text (sorted keys) for config.json and the checkpoint."""
    return json.dumps(obj, indent=2, sort_keys=True)
