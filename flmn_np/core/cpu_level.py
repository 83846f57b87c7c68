"""NumPy's level, chosen at start-up: the step kernels built for the CPU, or the plain code.

The 'step' level (levels.py) runs on NumPy through the CUDA source of step_kernels.py and the
LSTM and Adam bodies of kernels.py compiled for the CPU (cpu_kernels.py); the matrix products
stay NumPy's (BLAS). start_level, called once by a command (runs/setup.py, evaluate, memviz),
holds it when FLMN_FUSED asks for it or is unset, the kernels build and load, their start-up
check passes and the model has a kernel; otherwise one line says why and the plain code runs.
"""
import os

import numpy as np

from . import cpu_kernels, levels, models, optim, step_kernels
from .backend import BackendError, backend_name


# NumPy's level when FLMN_FUSED is unset: the CPU build of the step kernels, which trains
# 1.5-1.8x faster than the plain code at B = 16 (docs/performance.md, "The CPU step level")
CPU_DEFAULT = "step"


def cpu_step_level():
    """The 'step' level on NumPy: the step kernels built for the CPU (cpu_kernels.py). Raises
    cpu_kernels.CpuKernelError, one line, when they cannot be built or loaded."""
    cpu_kernels.library()
    return levels.Level("step", launch=cpu_kernels.launch_cpu_elementwise,
                        launch_raw=cpu_kernels.launch_cpu)


def _check_cpu_level(level):
    """The start-up check of the CPU step level: every memory-step kernel launched, and a tiny
    FLMN and MANN training step (forward, BPTT, Adam) at it equal to the plain code in float64.
    -> None, or why it fails."""
    step_kernels.build_all(np, launch=level.launch_raw)
    tiny = dict(input_size=6, n_classes=3, hidden=5, slots=4, width=3)
    for cfg in (models.ModelConfig(model="flmn", **tiny),
                models.ModelConfig(model="mann", reads=2, **tiny)):
        rng = np.random.default_rng(0)
        x, y = rng.random((3, 6, 6)), rng.integers(0, 3, (3, 6))
        out = []
        for held in (levels.PLAIN, level):
            with levels.use_level("numpy", held):
                params = models.init_params(cfg, 0, np, "float64")
                opt = optim.Adam(params)
                loss, _, grads = models.loss_and_grads(params, x, y, cfg)
                opt.step(params, grads)
                out.append((float(loss), params["W_lstm"].copy()))
        (l_plain, p_plain), (l_step, p_step) = out
        if abs(l_plain - l_step) > 1e-12 or np.max(np.abs(p_plain - p_step)) > 1e-12:
            return f"its {cfg.model} step differs from the plain code's by {abs(l_plain - l_step):.1e}"
    return None


def start_level(xp, cfg=None, announce=print):
    """Choose the level of xp's arrays for this process and hold it (levels.set_level); return
    its name. CuPy: the level get_xp chose from FLMN_FUSED. NumPy: FLMN_FUSED=0 the plain code,
    'step' or unset (CPU_DEFAULT) the CPU build of the step kernels, when it builds, passes its
    start-up check and has a kernel for cfg (a ModelConfig, or None); else `announce` says in one
    line why and the run goes on in plain NumPy. Raises BackendError, one line, for a value of
    FLMN_FUSED that is not a level of the backend."""
    name = backend_name(xp)
    if name == "cupy":
        return levels.of(xp.zeros(1)).name
    if name != "numpy":
        return "xp"
    try:
        want = levels.parse_env(os.environ.get("FLMN_FUSED"), allowed=("xp", "step"))
    except ValueError as e:
        raise BackendError(f"{e}; on NumPy the levels are 'step' and 0") from None
    want = want or CPU_DEFAULT
    why = None
    if want == "step" and cfg is not None and not step_kernels.supported(cfg):
        why = f"no step kernel for MANN with {cfg.reads} heads (at most {step_kernels.MAX_HEADS})"
    elif want == "step":
        try:
            level = cpu_step_level()
            why = _check_cpu_level(level)
        except cpu_kernels.CpuKernelError as e:
            why = str(e)
    if want == "xp" or why is not None:
        if why is not None:
            announce(f"the CPU step level is not used ({why}); training in plain NumPy "
                     f"(FLMN_FUSED=0 says so without trying)")
        levels.set_level("numpy", levels.PLAIN)
        return "xp"
    levels.set_level("numpy", level)
    return "step"


