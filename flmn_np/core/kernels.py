"""The CuPy kernels of the elementwise work: the 'elementwise' level's, and the 'step' level's
LSTM cells and Adam.

At B = 16 a GPU step is bound by kernel launches, not arithmetic: the LSTM cell is ~10
elementwise ops forward and ~15 backward, the memory step ~30 forward and ~40 backward, each a
launch. Here each run of elementwise work between two products or reductions is one elementwise
kernel, with the same names and formulas as the `xp` code it replaces (lstm.py, ops.py,
memory.py, addressing.py) and the same cache layout, so forward and backward can be mixed. The
products and reductions around them (matmul, vecdot, sum, argmin) stay `xp` calls. Each wrapper
below has the signature and results of the op it stands for; the op names it at the end of its
module (levels.elementwise_form). The 'step' level (fused_episode.py) calls the LSTM_*_SUM
kernels and ADAM; which level an array runs at is held in levels.py.

A kernel is a `KernelSpec` (CuPy's `ElementwiseKernel` arguments: parameters and a C++ body run
once per element `i`). The wrappers below slice and allocate with `xp` and hand the spec with its
input and output arrays to a launcher: the level's (levels.Level.launch), by default
`launch_cupy`. tests/test_kernels.py passes a CPU launcher instead (the same body compiled with
g++), so the bodies, gate slicing, cache layout and transposes are checked against the `xp` code
on machines without a GPU, and compiles each body with NVRTC for sm_80 and sm_90 the way CuPy
would; the CPU build of the step level (cpu_kernels.py) runs LSTM_*_SUM and ADAM on NumPy.

CuPy names its loop index `i` and rejects a parameter of that name, so the input gate is `i_`
here (as in Chainer's LSTM kernel); every other name matches lstm.py and docs/derivations.md.
The sigmoid is declared once, in PREAMBLE, and every kernel (these and step_kernels.py) calls it.
"""
import functools
from typing import NamedTuple

import numpy as np
from array_api_compat import array_namespace

from . import levels


class KernelSpec(NamedTuple):
    """The arguments of `cupy.ElementwiseKernel(in_params, out_params, body, name)`."""
    name: str
    in_params: str
    out_params: str
    body: str


# Declared before every kernel body (ElementwiseKernel's preamble; step_kernels.SOURCE's head).
PREAMBLE = """
// sigma(z) = 1 / (1 + exp(-z)), written as 0.5 tanh(z/2) + 0.5 so it never overflows (ops.sigmoid)
template <typename F> __device__ F sigma(F z) { return (F)0.5 * tanh((F)0.5 * z) + (F)0.5; }
"""

# docs/derivations.md#lstm-cell.
LSTM_FORWARD = KernelSpec(
    "flmn_lstm_cell_forward",
    "T z_i, T z_f, T z_o, T z_g, T c_prev",
    "T i_, T f, T o, T g, T c, T tanh_c, T h",
    """
    i_ = sigma(z_i);
    f = sigma(z_f);
    o = sigma(z_o);
    g = tanh(z_g);
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

# The two cells of the 'step' level's time loop (fused_episode.py): the same bodies, with the
# sums around them taken inside. Forward: z = z_in + z_rec (the input part, bias included, and
# [r; h][t-1] W_rec), and h also written into the next recurrent row (h_rh, a strided view).
LSTM_FORWARD_SUM = KernelSpec(
    "flmn_lstm_cell_forward_sum",
    "T z_in_i, T z_in_f, T z_in_o, T z_in_g, T z_rec_i, T z_rec_f, T z_rec_o, T z_rec_g, T c_prev",
    "T i_, T f, T o, T g, T c, T tanh_c, T h, T h_rh",
    """
    const T z_i = z_in_i + z_rec_i, z_f = z_in_f + z_rec_f;
    const T z_o = z_in_o + z_rec_o, z_g = z_in_g + z_rec_g;""" + LSTM_FORWARD.body
    + "h_rh = h;\n")

# Backward: dh = dh_head + dh_next + dh_out (through the interface, from step t+1's controller,
# from the output layer at t).
LSTM_BACKWARD_SUM = KernelSpec(
    "flmn_lstm_cell_backward_sum",
    "T dh_head, T dh_next, T dh_out, T dc, T i_, T f, T o, T g, T c_prev, T tanh_c",
    LSTM_BACKWARD.out_params,
    """
    const T dh = dh_head + dh_next + dh_out;""" + LSTM_BACKWARD.body)

# [FLMN eq 7-8]: M[t](i) = M[t-1](i) (1 - erase(i)) + w(i) a, broadcast over (B, N, W).
WRITE = KernelSpec(
    "flmn_write_forward",
    "T M_prev, T keep, T w, T a",
    "T M",
    "M = M_prev * keep + w * a;")

# [FLMN eq 10]: the label write, no erase: M[t](i) = M[t-1](i) + w(i) a, broadcast over (B, N, W).
WRITE_ADD = KernelSpec(
    "flmn_write_add",
    "T M_prev, T w, T a",
    "T M",
    "M = M_prev + w * a;")

# ops.interface_forward: tanh on key and add-vector columns, sigma on write-gate columns (gate = 1).
INTERFACE_FORWARD = KernelSpec(
    "flmn_interface_forward",
    "T heads, T gate",
    "T act",
    "act = gate != (T)0 ? sigma(heads) : tanh(heads);")

# ops.interface_backward, one kernel per column kind: tanh' = 1 - y^2, sigma' = y (1 - y).
TANH_BACKWARD = KernelSpec(
    "flmn_tanh_backward",
    "T dy, T y",
    "T dx",
    "dx = dy * ((T)1 - y * y);")
SIGMOID_BACKWARD = KernelSpec(
    "flmn_sigmoid_backward",
    "T dy, T y",
    "T dx",
    "dx = dy * y * ((T)1 - y);")

# [FLMN eq 6]: w_w = w_lu_prev + g_w (w_r_prev - w_lu_prev); diff is kept for the backward.
WRITE_WEIGHTS = KernelSpec(
    "flmn_write_weights",
    "T g_w, T w_r_prev, T w_lu_prev",
    "T w_w, T diff",
    """
    diff = w_r_prev - w_lu_prev;
    w_w = w_lu_prev + g_w * diff;
    """)

# [FLMN eq 4], the read and write weights summed over heads: w_u = gamma w_u_prev + w_a + w_b.
USAGE = KernelSpec(
    "flmn_usage",
    "T w_u_prev, T gamma, T w_a, T w_b",
    "T w_u",
    "w_u = gamma * w_u_prev + w_a + w_b;")

# [FLMN eq 1-2], addressing.cosine_forward after its products, and the softmax's exp:
# P = |k| |M| = sqrt(kk MM), denom = P + eps (eps = 0 for 'inside'), K = k.M / denom, e = exp(K).
ADDRESS_FORWARD = KernelSpec(
    "flmn_address_forward",
    "T dot, T kk, T MM, T eps",
    "T P, T denom, T K, T e",
    """
    P = sqrt(kk * MM);
    denom = P + eps;
    K = dot / denom;
    e = exp(K);
    """)

# addressing.address_backward up to its products: the softmax backward dK = w (dw - s),
# s = sum_i dw w, then dK_scaled = dK / denom and E = dK_scaled K P (cosine_backward).
ADDRESS_BACKWARD = KernelSpec(
    "flmn_address_backward",
    "T dw, T w, T s, T denom, T K, T P",
    "T dK_scaled, T E",
    """
    dK_scaled = w * (dw - s) / denom;
    E = dK_scaled * K * P;
    """)

# addressing.cosine_backward's two results after their products and sums:
# dk = A - (sum_i E) / (kk + tiny) k  and  dM = A - (sum_j E) / (MM + tiny) M.
COSINE_CORRECTION = KernelSpec(
    "flmn_cosine_correction",
    "T A, T sum_E, T sq_norm, T x, T tiny",
    "T dx",
    "dx = A - sum_E / (sq_norm + tiny) * x;")

# core/optim.Adam over its flat buffers, in place: m, v and the params (optim.py has the formulas).
# one_minus_b1 = 1 - b1 and one_minus_b2 = 1 - b2 come from the host, as the xp code's Python
# numbers do; lr_t broadcasts (a number, or one per row of stacked buffers).
ADAM = KernelSpec(
    "flmn_adam",
    "T g, T lr_t, T one_minus_b1, T one_minus_b2, T eps",
    "T p, T m, T v",
    """
    m += one_minus_b1 * (g - m);                 // m = b1 m + (1 - b1) g
    v += one_minus_b2 * (g * g - v);             // v = b2 v + (1 - b2) g^2
    p -= lr_t * m / (sqrt(v) + eps);
    """)

SPECS = (LSTM_FORWARD, LSTM_BACKWARD, WRITE, WRITE_ADD, INTERFACE_FORWARD, TANH_BACKWARD,
         SIGMOID_BACKWARD, WRITE_WEIGHTS, USAGE, ADDRESS_FORWARD, ADDRESS_BACKWARD,
         COSINE_CORRECTION, LSTM_FORWARD_SUM, LSTM_BACKWARD_SUM, ADAM)

@functools.cache
def cupy_kernel(spec):
    """The `cupy.ElementwiseKernel` of a spec (built once; compiled by CuPy at its first call,
    per dtype and number of dimensions)."""
    import cupy
    return cupy.ElementwiseKernel(spec.in_params, spec.out_params, spec.body, spec.name,
                                  preamble=PREAMBLE)


def launch_cupy(spec, inputs, outputs):
    """Run a spec on CuPy arrays: outputs are written in place."""
    cupy_kernel(spec)(*inputs, *outputs)


def launcher(x, launch=None):
    """`launch` if given, else the launcher of array x's level (levels.Level.launch), else
    launch_cupy."""
    return launch or levels.of(x).launch or launch_cupy


def gate_slices(x, H):
    """The H-wide column blocks of x (B, k H): [z_i | z_f | z_o | z_g] for z, [i | f | o] for ifo."""
    return tuple(x[:, j * H:(j + 1) * H] for j in range(x.shape[-1] // H))


def lstm_cell_forward(z, c_prev, launch=None):
    """lstm.lstm_cell_forward in one kernel; returns the same (h, c, cache)."""
    launch = launcher(z, launch)
    xp = array_namespace(z)
    B, H = c_prev.shape
    ifo = xp.empty((B, 3 * H), dtype=z.dtype)
    g, c, tanh_c, h = (xp.empty((B, H), dtype=z.dtype) for _ in range(4))
    launch(LSTM_FORWARD, (*gate_slices(z, H), c_prev), (*gate_slices(ifo, H), g, c, tanh_c, h))
    return h, c, (ifo, g, c_prev, tanh_c)


def lstm_cell_backward(dh, dc, cache, launch=None):
    """lstm.lstm_cell_backward in one kernel; returns the same (dz, dc_prev)."""
    launch = launcher(dh, launch)
    ifo, g, c_prev, tanh_c = cache
    xp = array_namespace(dh)
    B, H = dh.shape
    dz = xp.empty((B, 4 * H), dtype=dh.dtype)
    dc_prev = xp.empty((B, H), dtype=dh.dtype)
    launch(LSTM_BACKWARD, (dh, dc, *gate_slices(ifo, H), g, c_prev, tanh_c),
           (*gate_slices(dz, H), dc_prev))
    return dz, dc_prev


def lstm_cell_forward_sum(z_in, z_rec, c_prev, h_rh, launch=None):
    """lstm.lstm_cell_forward of z = z_in + z_rec in one kernel, h also written into h_rh
    (B, H), a view of the next recurrent row; returns the same (h, c, cache)."""
    launch = launcher(z_in, launch)
    xp = array_namespace(z_in)
    B, H = c_prev.shape
    ifo = xp.empty((B, 3 * H), dtype=z_in.dtype)
    g, c, tanh_c, h = (xp.empty((B, H), dtype=z_in.dtype) for _ in range(4))
    launch(LSTM_FORWARD_SUM, (*gate_slices(z_in, H), *gate_slices(z_rec, H), c_prev),
           (*gate_slices(ifo, H), g, c, tanh_c, h, h_rh))
    return h, c, (ifo, g, c_prev, tanh_c)


def lstm_cell_backward_sum(dh_head, dh_next, dh_out, dc, cache, dz, launch=None):
    """lstm.lstm_cell_backward of dh = dh_head + dh_next + dh_out in one kernel, dz (B, 4H)
    written into the buffer given; returns (dz, dc_prev)."""
    launch = launcher(dh_head, launch)
    ifo, g, c_prev, tanh_c = cache
    xp = array_namespace(dh_head)
    B, H = dh_head.shape
    dc_prev = xp.empty((B, H), dtype=dh_head.dtype)
    launch(LSTM_BACKWARD_SUM, (dh_head, dh_next, dh_out, dc, *gate_slices(ifo, H), g, c_prev,
                               tanh_c), (*gate_slices(dz, H), dc_prev))
    return dz, dc_prev


@functools.cache
def constant(xp, dtype, values):
    """An array of `values` (a float, or a tuple of floats), made once per namespace and dtype."""
    return xp.asarray(values, dtype=dtype)


def write_forward(M_prev, w, a, keep, launch=None):
    """memory.write_forward for one head: M = M_prev keep + w^T a, or with keep None (the label
    write) M = M_prev + w^T a, in one kernel. M_prev (B, N, W), w (B, 1, N), a (B, 1, W),
    keep (B, N, 1) or None."""
    launch = launcher(M_prev, launch)
    xp = array_namespace(M_prev)
    M = xp.empty(M_prev.shape, dtype=M_prev.dtype)
    if keep is None:
        launch(WRITE_ADD, (M_prev, w.mT, a), (M,))
    else:
        launch(WRITE, (M_prev, keep, w.mT, a), (M,))
    return M


def interface_forward(heads, n_tanh, launch=None):
    """ops.interface_forward in one kernel; returns the same (tanh part, gates, cache)."""
    launch = launcher(heads, launch)
    xp = array_namespace(heads)
    n = heads.shape[-1]
    act = xp.empty(heads.shape, dtype=heads.dtype)
    gate = constant(xp, heads.dtype, (0.0,) * n_tanh + (1.0,) * (n - n_tanh))
    launch(INTERFACE_FORWARD, (heads, gate), (act,))
    tanh_part, gates = act[:, :n_tanh], act[:, n_tanh:]
    return tanh_part, gates, (tanh_part, gates)


def interface_backward(d_tanh, d_gates, cache, launch=None):
    """ops.interface_backward in two kernels, written into the two column blocks of dheads."""
    launch = launcher(d_tanh, launch)
    tanh_part, gates = cache
    xp = array_namespace(d_tanh)
    n_tanh = tanh_part.shape[-1]
    dheads = xp.empty((d_tanh.shape[0], n_tanh + gates.shape[-1]), dtype=d_tanh.dtype)
    launch(TANH_BACKWARD, (d_tanh, tanh_part), (dheads[:, :n_tanh],))
    launch(SIGMOID_BACKWARD, (d_gates, gates), (dheads[:, n_tanh:],))
    return dheads


def write_weights_forward(g_w, w_r_prev, w_lu_prev, launch=None):
    """memory.write_weights_forward in one kernel; returns the same (w_w, (g_w, diff))."""
    launch = launcher(w_r_prev, launch)
    xp = array_namespace(w_r_prev)
    w_w, diff = (xp.empty(w_r_prev.shape, dtype=w_r_prev.dtype) for _ in range(2))
    launch(WRITE_WEIGHTS, (g_w[:, :, None], w_r_prev, w_lu_prev), (w_w, diff))
    return w_w, (g_w, diff)


def usage_forward(w_u_prev, gamma, w_a, w_b, launch=None):
    """memory.usage_forward after its sums over heads, in one kernel: w_a, w_b (B, N)."""
    launch = launcher(w_u_prev, launch)
    xp = array_namespace(w_u_prev)
    w_u = xp.empty(w_u_prev.shape, dtype=w_u_prev.dtype)
    launch(USAGE, (w_u_prev, constant(xp, w_u_prev.dtype, gamma), w_a, w_b), (w_u,))
    return w_u


def address_forward(k, M, eps_placement, eps, launch=None):
    """addressing.address_forward: the products and norms with xp, the elementwise rest of the
    cosine and the softmax's exp in one kernel; returns the same (w, cache)."""
    launch = launcher(k, launch)
    xp = array_namespace(k, M)
    kk, MM = xp.vecdot(k, k)[:, :, None], xp.vecdot(M, M)[:, None, :]
    if eps_placement == "inside":
        kk, MM = kk + eps, MM + eps
    dot = xp.matmul(k, M.mT)
    P, denom, K, e = (xp.empty(dot.shape, dtype=dot.dtype) for _ in range(4))
    eps_product = eps if eps_placement == "product" else 0.0
    launch(ADDRESS_FORWARD, (dot, kk, MM, constant(xp, dot.dtype, eps_product)), (P, denom, K, e))
    w = e / xp.sum(e, axis=-1, keepdims=True)
    return w, ((k, M, K, kk, MM, P, denom), w)


def address_backward(dw, cache, launch=None):
    """addressing.address_backward in three kernels around its products and sums; returns the
    same (dk, dM)."""
    launch = launcher(dw, launch)
    (k, M, K, kk, MM, P, denom), w = cache
    xp = array_namespace(dw)
    s = xp.sum(dw * w, axis=-1, keepdims=True)
    dK_scaled, E = (xp.empty(dw.shape, dtype=dw.dtype) for _ in range(2))
    launch(ADDRESS_BACKWARD, (dw, w, s, denom, K, P), (dK_scaled, E))
    tiny = constant(xp, dw.dtype, float(xp.finfo(dw.dtype).smallest_normal))
    dk = xp.empty(k.shape, dtype=k.dtype)
    launch(COSINE_CORRECTION, (xp.matmul(dK_scaled, M), xp.sum(E, axis=-1, keepdims=True), kk, k, tiny),
           (dk,))
    dM = xp.empty(M.shape, dtype=M.dtype)
    # dK_scaled^T k as one matmul whatever R: ops.transpose_matmul's broadcast for R = 1 is a
    # NumPy speed-up; on CuPy either is one launch, and the products are the same numbers.
    launch(COSINE_CORRECTION, (xp.matmul(dK_scaled.mT, k), xp.sum(E, axis=1, keepdims=True).mT,
                               MM.mT, M, tiny), (dM,))
    return dk, dM


def adam_update(p, m, v, g, lr_t, beta1, beta2, eps, launch=None):
    """optim.Adam's update of flat buffers p, m, v (..., n) by the gradient g, in place, in one
    kernel. lr_t: a number, or an array that broadcasts against them ((G, 1) for G stacked
    models)."""
    launch = launcher(p, launch)
    def scalar(value):    # a host number of p's dtype (CuPy types a kernel's T by it)
        return np.dtype(str(p.dtype).rpartition(".")[2]).type(value)
    launch(ADAM, (g, lr_t if hasattr(lr_t, "shape") else scalar(lr_t), scalar(1.0 - beta1),
                  scalar(1.0 - beta2), scalar(eps)), (p, m, v))


def build_all(xp, launch=None):
    """Run each kernel once through its wrapper on tiny float32 and float64 arrays of `xp`. CuPy
    compiles a kernel at its first call, so this surfaces a missing NVRTC, missing CUDA headers
    or a body that does not build at startup (backend.get_xp) instead of at the first step."""
    for dtype in (xp.float32, xp.float64):
        B, H, N, W = 2, 3, 4, 5
        h, c, cache = lstm_cell_forward(xp.zeros((B, 4 * H), dtype=dtype),
                                        xp.zeros((B, H), dtype=dtype), launch)
        lstm_cell_backward(h, c, cache, launch)
        M, w = xp.ones((B, N, W), dtype=dtype), xp.full((B, 1, N), 1.0 / N, dtype=dtype)
        a = xp.ones((B, 1, W), dtype=dtype)
        write_forward(M, w, a, xp.ones((B, N, 1), dtype=dtype), launch)
        write_forward(M, w, a, None, launch)
        tanh_part, gates, cache = interface_forward(xp.zeros((B, W + 1), dtype=dtype), W, launch)
        interface_backward(tanh_part, gates, cache, launch)
        write_weights_forward(gates, w, w, launch)
        usage_forward(w[:, 0, :], 0.95, w[:, 0, :], w[:, 0, :], launch)
        w_r, cache = address_forward(a, M, "product", 1e-8, launch)
        address_backward(w_r, cache, launch)
        z, c0 = xp.zeros((B, 4 * H), dtype=dtype), xp.zeros((B, H), dtype=dtype)
        h, c, cache = lstm_cell_forward_sum(z, z, c0, xp.empty((B, H), dtype=dtype), launch)
        lstm_cell_backward_sum(h, h, h, c, cache, xp.empty((B, 4 * H), dtype=dtype), launch)
        adam_update(z, xp.zeros_like(z), xp.zeros_like(z), z, 1e-3, 0.9, 0.999, 1e-8, launch)
