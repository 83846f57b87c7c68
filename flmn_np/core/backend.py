"""The one place that chooses the array module: NumPy, CuPy or array_api_strict.

Every other module gets `xp` from its arrays (`array_namespace(x)`) or from its caller,
and uses only array-API standard functions, so the same code runs on all three.
array_api_strict is the CPU stand-in for CuPy in tests: it rejects NumPy-only calls.
"""
import functools
import os

import numpy as np

from ..errors import FlmnError
from . import kernels, levels, step_kernels

BACKENDS = ("auto", "numpy", "cupy", "array_api_strict")


class BackendError(FlmnError, RuntimeError):
    """A backend was asked for that cannot be used here (the message says why, in one line)."""


# What CuPy 14 needs on a GPU machine: its wheel ships neither NVRTC nor the CUDA headers, which
# it uses to compile every elementwise kernel at run time; the [ctk] extra installs both.
CUPY_INSTALL = 'python -m pip install "cupy-cuda12x[ctk]>=14" (or a CUDA 12 toolkit with CUDA_PATH set)'


def _one_line(e):
    """'TypeName: first line of the message' of an exception."""
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def cupy_status():
    """(usable, reason): whether CuPy imports and sees a GPU. Starts nothing on the device."""
    try:
        import cupy
    except ImportError:
        return False, f"CuPy is not installed; install it with {CUPY_INSTALL}"
    except Exception as e:  # a broken install can raise more than ImportError
        return False, f"CuPy does not import ({_one_line(e)}); reinstall it with {CUPY_INSTALL}"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CUDA driver missing or broken
        return False, (f"CuPy cannot reach a GPU ({_one_line(e)}): it needs an NVIDIA GPU and a "
                       f"driver for CUDA 12; without one use --backend numpy")
    if n == 0:
        return False, "CuPy found no GPU; use --backend numpy"
    return True, f"CuPy {cupy.__version__} on {n} GPU(s)"


def cupy_startup_error(e):
    """The one-line reason, with what to install or set, for an exception raised while CuPy
    compiles and runs its first kernels (see `_start_cupy`)."""
    text = f"{type(e).__name__} {e}".lower()
    if "nvrtc" in text and ("load" in text or "not found" in text or "no such file" in text):
        return f"CuPy cannot load NVRTC, its run-time compiler ({_one_line(e)}); install {CUPY_INSTALL}"
    if ("cannot open source file" in text or "could not open" in text or ".h: no such file" in text
            or "cuda headers" in text):
        return f"CuPy cannot find the CUDA headers ({_one_line(e)}); install {CUPY_INSTALL}"
    if type(e).__name__ == "CompileException":
        return (f"a fused kernel does not compile ({_one_line(e)}); set FLMN_FUSED=0 to run the "
                f"plain xp code")
    if "cuda" in text and "driver" in text:
        return f"the CUDA driver refused CuPy ({_one_line(e)}); update the NVIDIA driver for CUDA 12"
    return f"CuPy fails at its first kernel ({_one_line(e)}); check the install: {CUPY_INSTALL}"


def cupy_level_from_env():
    """CuPy's level as FLMN_FUSED asks for it (unset: 'step'), read once, at start-up. Raises
    BackendError, in one line, for a value that is not a level."""
    try:
        name = levels.parse_env(os.environ.get("FLMN_FUSED")) or "step"
    except ValueError as e:
        raise BackendError(str(e)) from None
    return levels.cupy_level(name)


@functools.cache
def _start_cupy():
    """Choose CuPy's level (FLMN_FUSED, once) and hold it (levels.set_level); compile and run
    CuPy's first kernels and every kernel of that level now, so that a missing NVRTC, missing
    CUDA headers or a kernel that does not build or launch is reported here, once, rather than
    at the first step."""
    import cupy

    x = cupy.linspace(-1.0, 1.0, 8)
    float(cupy.sum(cupy.tanh(x) * 2.0))            # a CuPy ufunc and reduction: NVRTC + headers
    level = cupy_level_from_env()
    levels.set_level("cupy", level)
    if level.name != "xp":
        kernels.build_all(_cupy_namespace())
    if level.name == "step":
        step_kernels.build_all(_cupy_namespace())
    cupy.cuda.Device().synchronize()              # a failed launch raises here, not at step 1


def get_xp(name="numpy"):
    """Return the array module for `name` (one of BACKENDS); 'auto' picks CuPy if a GPU is usable.
    Raises BackendError with a one-line reason when the backend cannot run here."""
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if name == "auto":
        usable, _ = cupy_status()
        name = "cupy" if usable else "numpy"
    if name == "numpy":
        return np
    if name == "cupy":
        usable, reason = cupy_status()
        if not usable:
            raise BackendError(f"--backend cupy was requested but {reason}")
        try:
            _start_cupy()
        except Exception as e:  # whatever CuPy raises on its first compile or launch
            raise BackendError(f"--backend cupy was requested but {cupy_startup_error(e)}") from None
        return _cupy_namespace()
    import array_api_strict
    return array_api_strict


def backend_name(xp):
    """'numpy', 'cupy' or 'array_api_strict' for an array module."""
    return xp.__name__.split(".")[-1]


def array_namespace(*arrays):
    """The array-API namespace of the first array: NumPy >= 2 and array_api_strict implement
    `__array_namespace__`; CuPy arrays get array-api-compat's CuPy namespace."""
    x = arrays[0]
    if type(x).__module__.startswith("cupy"):
        return _cupy_namespace()
    return x.__array_namespace__()


def _cupy_namespace():
    """CuPy through array-api-compat's wrapper, which supplies the standard's names
    (concat, permute_dims, vecdot, astype, ...) whatever CuPy's own namespace lacks."""
    import array_api_compat.cupy
    return array_api_compat.cupy


def to_numpy(x):
    """Copy an array of any backend to a host NumPy array (a sync: never inside the time loop)."""
    if isinstance(x, (np.ndarray, np.generic)):
        return np.asarray(x)
    if hasattr(x, "get"):  # cupy
        return x.get()
    return np.from_dlpack(x)


def asarray(x, xp, dtype=None):
    """Move a host NumPy array to `xp` (one transfer), optionally casting to the named dtype."""
    x = np.asarray(x)
    if dtype is not None:
        x = x.astype(dtype, copy=False)
    return xp.asarray(x)

