"""Fused CuPy kernels for the elementwise work of the time loop.

At B = 16 a GPU step is bound by kernel launches, not arithmetic: the LSTM cell is ~10
elementwise ops forward and ~15 backward, the erase-and-add write 3-4, each a launch. Here each
is one elementwise kernel, with the same names and formulas as the `xp` code it replaces
(lstm.py, memory.py) and the same cache layout, so forward and backward can be mixed. They are
used automatically for CuPy arrays; set FLMN_FUSED=0 to run the plain `xp` code instead.

A kernel is a `KernelSpec` (CuPy's `ElementwiseKernel` arguments: parameters and a C++ body run
once per element `i`). The wrappers below slice and allocate with `xp` and hand the spec with its
input and output arrays to a launcher: `launch_cupy` on a GPU. tests/test_kernels.py passes a
CPU launcher instead (the same body compiled with g++), so the bodies, gate slicing, cache
layout and transposes are checked against the `xp` code on machines without a GPU, and compiles
each body with NVRTC for sm_80 and sm_90 the way CuPy would.

CuPy names its loop index `i` and rejects a parameter of that name, so the input gate is `i_`
here (as in Chainer's LSTM kernel); every other name matches lstm.py and docs/derivations.md.
"""
import functools
import os
from typing import NamedTuple

from array_api_compat import array_namespace


class KernelSpec(NamedTuple):
    """The arguments of `cupy.ElementwiseKernel(in_params, out_params, body, name)`."""
    name: str
    in_params: str
    out_params: str
    body: str


# docs/derivations.md#lstm-cell.  sigma(z) = 0.5 tanh(z/2) + 0.5, as ops.sigmoid.
LSTM_FORWARD = KernelSpec(
    "flmn_lstm_cell_forward",
    "T z_i, T z_f, T z_o, T z_g, T c_prev",
    "T i_, T f, T o, T g, T c, T tanh_c, T h",
    """
    i_ = (T)0.5 * tanh((T)0.5 * z_i) + (T)0.5;   // i = sigma(z_i)
    f = (T)0.5 * tanh((T)0.5 * z_f) + (T)0.5;    // f = sigma(z_f)
    o = (T)0.5 * tanh((T)0.5 * z_o) + (T)0.5;    // o = sigma(z_o)
    g = tanh(z_g);                               // g = tanh(z_g)
    c = f * c_prev + i_ * g;                     // c[t] = f * c[t-1] + i * g
    tanh_c = tanh(c);
    h = o * tanh_c;                              // h[t] = o * tanh(c[t])
    """)

# docs/derivations.md#lstm-cell, backward.
LSTM_BACKWARD = KernelSpec(
    "flmn_lstm_cell_backward",
    "T dh, T dc, T i_, T f, T o, T g, T c_prev, T tanh_c",
    "T dz_i, T dz_f, T dz_o, T dz_g, T dc_prev",
    """
    T dc_total = dc + dh * o * ((T)1 - tanh_c * tanh_c);   // dc + dh * o * (1 - tanh(c)^2)
    dz_i = dc_total * g * i_ * ((T)1 - i_);                // di * i(1-i),  di = dc_total * g
    dz_f = dc_total * c_prev * f * ((T)1 - f);             // df * f(1-f),  df = dc_total * c[t-1]
    dz_o = dh * tanh_c * o * ((T)1 - o);                   // do * o(1-o),  do = dh * tanh(c)
    dz_g = dc_total * i_ * ((T)1 - g * g);                 // dg * (1-g^2), dg = dc_total * i
    dc_prev = dc_total * f;
    """)

# [FLMN eq 7-8]: M[t](i) = M[t-1](i) (1 - erase(i)) + w(i) a, broadcast over (B, N, W).
WRITE = KernelSpec(
    "flmn_write_forward",
    "T M_prev, T keep, T w, T a",
    "T M",
    "M = M_prev * keep + w * a;")

SPECS = (LSTM_FORWARD, LSTM_BACKWARD, WRITE)


def fused(x):
    """Whether to take the fused path for array x: CuPy, and not switched off."""
    return type(x).__module__.startswith("cupy") and os.environ.get("FLMN_FUSED", "1") != "0"


@functools.cache
def cupy_kernel(spec):
    """The `cupy.ElementwiseKernel` of a spec (built once; compiled by CuPy at its first call,
    per dtype and number of dimensions)."""
    import cupy
    return cupy.ElementwiseKernel(spec.in_params, spec.out_params, spec.body, spec.name)


def launch_cupy(spec, inputs, outputs):
    """Run a spec on CuPy arrays: outputs are written in place."""
    cupy_kernel(spec)(*inputs, *outputs)


def gate_slices(x, H):
    """The H-wide column blocks of x (B, k H): [z_i | z_f | z_o | z_g] for z, [i | f | o] for ifo."""
    return tuple(x[:, j * H:(j + 1) * H] for j in range(x.shape[-1] // H))


def lstm_cell_forward(z, c_prev, launch=launch_cupy):
    """lstm.lstm_cell_forward in one kernel; returns the same (h, c, cache)."""
    xp = array_namespace(z)
    B, H = c_prev.shape
    ifo = xp.empty((B, 3 * H), dtype=z.dtype)
    g, c, tanh_c, h = (xp.empty((B, H), dtype=z.dtype) for _ in range(4))
    launch(LSTM_FORWARD, (*gate_slices(z, H), c_prev), (*gate_slices(ifo, H), g, c, tanh_c, h))
    return h, c, (ifo, g, c_prev, tanh_c)


def lstm_cell_backward(dh, dc, cache, launch=launch_cupy):
    """lstm.lstm_cell_backward in one kernel; returns the same (dz, dc_prev)."""
    ifo, g, c_prev, tanh_c = cache
    xp = array_namespace(dh)
    B, H = dh.shape
    dz = xp.empty((B, 4 * H), dtype=dh.dtype)
    dc_prev = xp.empty((B, H), dtype=dh.dtype)
    launch(LSTM_BACKWARD, (dh, dc, *gate_slices(ifo, H), g, c_prev, tanh_c),
           (*gate_slices(dz, H), dc_prev))
    return dz, dc_prev


def write_forward(M_prev, w, a, keep, launch=launch_cupy):
    """memory.write_forward for one head with an erase: M = M_prev keep + w^T a in one kernel.
    M_prev (B, N, W), w (B, 1, N), a (B, 1, W), keep (B, N, 1)."""
    xp = array_namespace(M_prev)
    M = xp.empty(M_prev.shape, dtype=M_prev.dtype)
    launch(WRITE, (M_prev, keep, w.mT, a), (M,))
    return M


def build_all(xp, launch=launch_cupy):
    """Run each kernel once through its wrapper on tiny float32 and float64 arrays of `xp`. CuPy
    compiles a kernel at its first call, so this surfaces a missing NVRTC, missing CUDA headers
    or a body that does not build at startup (backend.get_xp) instead of at the first step."""
    for dtype in (xp.float32, xp.float64):
        B, H, N, W = 2, 3, 4, 5
        h, c, cache = lstm_cell_forward(xp.zeros((B, 4 * H), dtype=dtype),
                                        xp.zeros((B, H), dtype=dtype), launch)
        lstm_cell_backward(h, c, cache, launch)
        write_forward(xp.zeros((B, N, W), dtype=dtype), xp.zeros((B, 1, N), dtype=dtype),
                      xp.zeros((B, 1, W), dtype=dtype), xp.ones((B, N, 1), dtype=dtype), launch)
