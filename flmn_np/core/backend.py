"""The one place that chooses the array module: NumPy, CuPy or array_api_strict.

Every other module gets `xp` from its arrays (`array_namespace(x)`) or from its caller,
and uses only array-API standard functions, so the same code runs on all three.
array_api_strict is the CPU stand-in for CuPy in tests: it rejects NumPy-only calls.
"""
import numpy as np

BACKENDS = ("auto", "numpy", "cupy", "array_api_strict")


class BackendError(RuntimeError):
    """A backend was asked for that cannot be used here (the message says why)."""


def cupy_status():
    """(usable, reason): whether CuPy imports and sees a GPU."""
    try:
        import cupy
    except ImportError as e:
        return False, f"CuPy is not installed ({e}); see README, section 'GPU'"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CUDA driver missing or broken
        return False, f"CuPy cannot reach a GPU ({type(e).__name__}: {e})"
    if n == 0:
        return False, "CuPy found no GPU"
    return True, f"CuPy {cupy.__version__} on {n} GPU(s)"


def get_xp(name="numpy"):
    """Return the array module for `name` (one of BACKENDS); 'auto' picks CuPy if a GPU is usable."""
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


def dtype_of(xp, name):
    """xp.float32 / xp.float64 from 'float32' / 'float64'."""
    return getattr(xp, name)
