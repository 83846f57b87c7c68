"""The kernel level each array backend runs at: chosen once, held here.

    'xp'           the plain xp code of lstm.py, memory.py, addressing.py, ops.py: the reading
                   path, and the reference every other level is tested against
    'elementwise'  (CuPy) each run of elementwise work between two products or reductions one
                   kernel (kernels.py), called in place of the op it implements
    'step'         each memory step one kernel forward and one backward (step_kernels.py), the
                   LSTM cell with the sums around it and Adam one kernel each (kernels.py), the
                   time loop in fused_episode.py: a time step is two products and two kernels.
                   On CuPy through CUDA; on NumPy through the same source built for the CPU
                   (cpu_kernels.py)

A command chooses the level at start-up (backend.start_level, from FLMN_FUSED and what the
machine can build) and it holds for the process; gpucheck, bench and the tests set one for a
block (use_level). Nothing reads the environment after start-up. A backend with no level set
runs 'xp', except CuPy, whose default is 'step' (its launchers: kernels.launch_cupy and
step_kernels.launch_cupy).

Each op of the reading path that has an elementwise kernel names it at the end of its module
(`elementwise_form`), so the module shows its formulas first and the kernel after them.
"""
import contextlib
import dataclasses
import functools
from typing import Any

NAMES = ("xp", "elementwise", "step")
# FLMN_FUSED -> level name; unset: the backend's default
ENV_VALUES = {"0": "xp", "elementwise": "elementwise", "step": "step"}


@dataclasses.dataclass(frozen=True)
class Level:
    """A level and how its kernels run."""
    name: str = "xp"
    elementwise_ops: bool = False   # the ops outside the fused episode take kernels.py's kernels
    launch: Any = None              # runs a kernels.KernelSpec: launch(spec, inputs, outputs);
                                    # None: kernels.launch_cupy
    launch_raw: Any = None          # runs a step_kernels.RawSpec: launch_raw(spec, n_threads,
                                    # args); None: step_kernels.launch_cupy

    def __post_init__(self):
        if self.name not in NAMES:
            raise ValueError(f"level must be one of {NAMES}, got {self.name!r}")


def cupy_level(name):
    """CuPy's level `name`: its launchers (None: kernels.launch_cupy, step_kernels.launch_cupy),
    the ops on the elementwise kernels at both fused levels."""
    return Level(name, elementwise_ops=name != "xp")


PLAIN = Level("xp")
DEFAULTS = {"cupy": cupy_level("step")}
_held = {}                          # backend ('numpy', 'cupy', 'array_api_strict') -> Level


def backend_of(x):
    """'numpy', 'cupy' or 'array_api_strict': the package of array x's type."""
    return type(x).__module__.partition(".")[0]


def of(x):
    """The Level array x runs at."""
    backend = backend_of(x)
    return _held.get(backend) or DEFAULTS.get(backend, PLAIN)


def name(x):
    """'xp', 'elementwise' or 'step' for array x."""
    return of(x).name


def elementwise(x):
    """Whether the ops on x take the elementwise kernels (CuPy's two fused levels)."""
    return of(x).elementwise_ops


def step(x):
    """Whether x takes the 'step' level: the fused episode and one-kernel Adam."""
    return of(x).name == "step"


def set_level(backend, level):
    """Hold `level` (a Level) for arrays of `backend` from now on."""
    _held[backend] = level


def reset():
    """Every backend back to its default (tests)."""
    _held.clear()


@contextlib.contextmanager
def use_level(backend, level):
    """`level` (a Level, or a name with CuPy's launchers) for arrays of `backend` inside the
    block, the level before restored after it."""
    if isinstance(level, str):
        level = cupy_level(level)
    saved = _held.get(backend)
    _held[backend] = level
    try:
        yield level
    finally:
        if saved is None:
            _held.pop(backend, None)
        else:
            _held[backend] = saved


def parse_env(value, allowed=NAMES):
    """The level name FLMN_FUSED=value asks for (None: unset). Raises ValueError, in one line,
    for any other value."""
    if value is None:
        return None
    choices = {k: v for k, v in ENV_VALUES.items() if v in allowed}
    if value not in choices:
        raise ValueError(f"FLMN_FUSED={value!r} is not one of {', '.join(map(repr, choices))} "
                         f"(unset: the default)")
    return choices[value]


def elementwise_form(plain, fused, when=None):
    """The op `plain`, which runs `fused` (the same signature and results, from kernels.py)
    instead for arrays at an elementwise level, when `when(*args)` (default: always)."""
    @functools.wraps(plain)
    def op(x, *args, **kwargs):
        if elementwise(x) and (when is None or when(x, *args, **kwargs)):
            return fused(x, *args, **kwargs)
        return plain(x, *args, **kwargs)
    op.plain, op.fused = plain, fused
    return op
