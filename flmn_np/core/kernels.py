"""Fused CuPy kernels for the elementwise work of the time loop.

At B = 16 a GPU step is bound by kernel launches, not arithmetic: the LSTM cell is ~10
elementwise ops forward and ~15 backward, the erase-and-add write 3-4, each a launch. Here each
is one `cupy.ElementwiseKernel`, with the same names and formulas as the `xp` code it replaces
(lstm.py, memory.py) and the same cache layout, so forward and backward can be mixed. They are
used automatically for CuPy arrays; set FLMN_FUSED=0 to run the plain `xp` code instead.
tests/test_kernels.py checks them against the `xp` code (on a GPU; skipped without one).
"""
import functools
import os


def fused(x):
    """Whether to take the fused path for array x: CuPy, and not switched off."""
    return type(x).__module__.startswith("cupy") and os.environ.get("FLMN_FUSED", "1") != "0"


@functools.cache
def _lstm_forward_kernel():
    import cupy
    return cupy.ElementwiseKernel(
        "T z_i, T z_f, T z_o, T z_g, T c_prev",
        "T i, T f, T o, T g, T c, T tanh_c, T h",
        """
        i = (T)0.5 * tanh((T)0.5 * z_i) + (T)0.5;      // sigmoid, as ops.sigmoid
        f = (T)0.5 * tanh((T)0.5 * z_f) + (T)0.5;
        o = (T)0.5 * tanh((T)0.5 * z_o) + (T)0.5;
        g = tanh(z_g);
        c = f * c_prev + i * g;
        tanh_c = tanh(c);
        h = o * tanh_c;
        """,
        "flmn_lstm_cell_forward")


@functools.cache
def _lstm_backward_kernel():
    import cupy
    return cupy.ElementwiseKernel(
        "T dh, T dc, T i, T f, T o, T g, T c_prev, T tanh_c",
        "T dz_i, T dz_f, T dz_o, T dz_g, T dc_prev",
        """
        T dc_total = dc + dh * o * ((T)1 - tanh_c * tanh_c);
        dz_i = dc_total * g * i * ((T)1 - i);
        dz_f = dc_total * c_prev * f * ((T)1 - f);
        dz_o = dh * tanh_c * o * ((T)1 - o);
        dz_g = dc_total * i * ((T)1 - g * g);
        dc_prev = dc_total * f;
        """,
        "flmn_lstm_cell_backward")


@functools.cache
def _write_kernel():
    import cupy
    return cupy.ElementwiseKernel(
        "T M_prev, T keep, T w, T a", "T M",
        "M = M_prev * keep + w * a;",                    # broadcast over (B, N, W)
        "flmn_write_forward")


def lstm_cell_forward(z, c_prev):
    """lstm.lstm_cell_forward in one kernel; returns the same (h, c, cache)."""
    import cupy
    B, H = c_prev.shape
    ifo = cupy.empty((B, 3 * H), dtype=z.dtype)
    g, c, tanh_c, h = (cupy.empty((B, H), dtype=z.dtype) for _ in range(4))
    _lstm_forward_kernel()(z[:, :H], z[:, H:2 * H], z[:, 2 * H:3 * H], z[:, 3 * H:], c_prev,
                           ifo[:, :H], ifo[:, H:2 * H], ifo[:, 2 * H:], g, c, tanh_c, h)
    return h, c, (ifo, g, c_prev, tanh_c)


def lstm_cell_backward(dh, dc, cache):
    """lstm.lstm_cell_backward in one kernel; returns the same (dz, dc_prev)."""
    import cupy
    ifo, g, c_prev, tanh_c = cache
    B, H = dh.shape
    dz = cupy.empty((B, 4 * H), dtype=dh.dtype)
    dc_prev = cupy.empty((B, H), dtype=dh.dtype)
    _lstm_backward_kernel()(dh, dc, ifo[:, :H], ifo[:, H:2 * H], ifo[:, 2 * H:], g, c_prev, tanh_c,
                            dz[:, :H], dz[:, H:2 * H], dz[:, 2 * H:3 * H], dz[:, 3 * H:], dc_prev)
    return dz, dc_prev


def write_forward(M_prev, w, a, keep):
    """memory.write_forward for one head with an erase: M = M_prev keep + w^T a in one kernel.
    w (B, 1, N), a (B, 1, W), keep (B, N, 1)."""
    return _write_kernel()(M_prev, keep, w.mT, a)
